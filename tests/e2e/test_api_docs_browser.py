"""The interactive API docs in a real browser (Chromium, fixtures in tests/e2e/conftest.py)
against a real ``keyautomat serve``: a pasted key signs "Try it out", in the page, and
nothing is asked of another host (docs/api.md, "Interactive docs")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Locator, Page, Request, expect

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from tests.conftest import Tenant, make_tenant
from tests.processes import KeyautomatProcess, Processes

# One engine is enough: the signature check runs on both in tests/integration/test_auth.py.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def server(processes: Processes) -> KeyautomatProcess:
    return processes.serve()


@pytest.fixture
def tenant(container: Container, server: KeyautomatProcess) -> Iterator[Tenant]:
    """A unit with an admin service account whose key is PKCS#1 PEM, as the demo's is."""
    made = make_tenant(container, None)  # type: ignore[arg-type]
    made.api = Client(server.api_url, made.account_id, made.private_key)
    yield made
    made.api.close()


class Seen:
    """Every request a page makes, and every error it logs to its console."""

    def __init__(self, page: Page) -> None:
        self.requests: list[Request] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("console", self._console)

    def _request(self, request: Request) -> None:
        self.requests.append(request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@pytest.fixture
def seen(page: Page) -> Seen:
    return Seen(page)


def _sign_with(page: Page, tenant: Tenant) -> None:
    page.get_by_label("Service account id").fill(tenant.account_id)
    page.get_by_label("Private key (PEM)").fill(tenant.private_key)
    page.get_by_role("button", name="Sign with this key").click()
    expect(page.locator("#ka-status")).to_have_text(
        f"Signing requests as {tenant.account_id}. Reloading the page forgets the key."
    )
    # The key's text is gone from the page at once.
    expect(page.get_by_label("Private key (PEM)")).to_have_value("")


def _try_it_out(page: Page, method: str, path: str, body: str | None = None) -> Locator:
    """Opens the operation, sends it with "Try it out", and returns its live status cell."""
    operation = page.locator(f".opblock.opblock-{method}").filter(
        has=page.locator(f'[data-path="{path}"]')
    )
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    if body is not None:
        operation.locator("textarea.body-param__text").fill(body)
    operation.get_by_role("button", name="Execute").click()
    return operation.locator(".live-responses-table tbody .response-col_status").first


def test_try_it_out_signs_a_request_with_the_pasted_key_and_asks_no_other_host(
    page: Page,
    server: KeyautomatProcess,
    tenant: Tenant,
    seen: Seen,
) -> None:
    requests, errors = seen.requests, seen.errors
    assert tenant.private_key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    page.goto(f"{server.base_url}/v2/docs")
    expect(page.locator(".opblock").first).to_be_visible()

    # Unsigned first: the server refuses it, as it would any client's.
    expect(_try_it_out(page, "get", "/automats")).to_have_text("401")
    _sign_with(page, tenant)
    page.get_by_role("button", name="Execute").click()
    expect(page.locator(".live-responses-table tbody .response-col_status").first).to_have_text(
        "200"
    )

    calls = [r for r in requests if urlsplit(r.url).path == "/v2/automats"]
    assert len(calls) == 2
    assert "x-signature" not in calls[0].headers
    assert calls[1].headers["x-service-account-id"] == tenant.account_id
    assert len(calls[1].headers["x-signature"]) == 344  # Base64 of a 2048-bit signature
    host = urlsplit(server.base_url).netloc
    assert {urlsplit(r.url).netloc for r in requests} == {host}
    key_line = tenant.private_key.splitlines()[1]
    assert not [r.url for r in requests if key_line in (r.post_data or "") + r.url]
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_a_signed_post_carries_its_body_as_signed(
    page: Page,
    server: KeyautomatProcess,
    tenant: Tenant,
    seen: Seen,
) -> None:
    """The body is hashed exactly as sent, non-ASCII text included."""
    requests = seen.requests
    page.goto(f"{server.base_url}/v2/docs")
    _sign_with(page, tenant)
    body = '{"name": "Pöytä group", "customerId": "docs", "type": 1}'
    expect(_try_it_out(page, "post", "/groups", body)).to_have_text("201")
    sent = [r for r in requests if r.method == "POST"]
    assert [r.post_data for r in sent] == [body]
    groups = tenant.api.get("/groups")["data"]
    assert [g["name"] for g in groups] == ["Pöytä group"]


def test_the_admin_docs_sign_too(page: Page, server: KeyautomatProcess, tenant: Tenant) -> None:
    page.goto(f"{server.base_url}/admin/docs")
    _sign_with(page, tenant)
    status = _try_it_out(page, "get", "/notifications")
    expect(status).to_have_text(re.compile(r"^2\d\d$"))
