"""The console in a real browser: Debian's Chromium driven by Playwright against a real
``keyautomat serve`` process (tests/processes.py); the ``browser`` and ``page`` fixtures
are in tests/e2e/conftest.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.domain import webhooks as wh
from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.model import OrgUnitType
from tests.conftest import Tenant, make_tenant
from tests.console_support import PASSWORD, add_user
from tests.contract_helpers import default_contract, stocked_automat
from tests.devices import eventually
from tests.processes import KeyautomatProcess, Processes
from tests.webhook_receiver import running_receiver

# One engine is enough here: the pages' SQL runs on both in tests/integration/test_console.py.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The webhook test's receiver listens on 127.0.0.1 over http (gaps.md G8).
    return settings.model_copy(update={"webhooks_allow_private": True})


@pytest.fixture
def server(processes: Processes) -> KeyautomatProcess:
    return processes.serve()


@pytest.fixture
def tenants(container: Container, server: KeyautomatProcess) -> Iterator[list[Tenant]]:
    """Units with an admin service account each, calling the real server (closed at the end)."""
    made: list[Tenant] = []
    yield made
    for tenant in made:
        tenant.api.close()


def _tenant(
    container: Container, server: KeyautomatProcess, made: list[Tenant], **unit: Any
) -> Tenant:
    tenant = make_tenant(container, None, **unit)  # type: ignore[arg-type]
    tenant.api = Client(server.api_url, tenant.account_id, tenant.private_key)
    made.append(tenant)
    return tenant


@pytest.fixture
def api_tenant(container: Container, server: KeyautomatProcess, tenants: list[Tenant]) -> Tenant:
    return _tenant(container, server, tenants)


def _install(tenant: Tenant, name: str) -> str:
    automat: str = tenant.api.post(
        "/automats/install",
        {
            "name": name,
            "address": "Mannerheimintie 1",
            "postalCode": "00100",
            "postalOffice": "Helsinki",
            "timezone": "Europe/Helsinki",
            "product": "key20",
        },
    )["id"]
    return automat


def _sign_in(page: Page, server: KeyautomatProcess, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_signing_in_a_wrong_password_and_signing_out(
    page: Page, container: Container, server: KeyautomatProcess, api_tenant: Tenant
) -> None:
    add_user(container, api_tenant.unit_id, "anna@acme.fi")
    page.goto(f"{server.base_url}/")
    expect(page).to_have_url(re.compile(r"/console/login"))
    _sign_in(page, server, "anna@acme.fi", "not the password")
    expect(page.get_by_role("alert")).to_have_text("The email or the password is wrong.")
    _sign_in(page, server, "anna@acme.fi")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You have signed out.")
    page.goto(f"{server.base_url}/console/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_state_changing_request_without_the_csrf_token_gets_403(
    page: Page, container: Container, server: KeyautomatProcess, api_tenant: Tenant
) -> None:
    add_user(container, api_tenant.unit_id, "anna@acme.fi")
    automat_id = _install(api_tenant, "Mainstreet 1")
    _sign_in(page, server, "anna@acme.fi")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    # The browser's own cookies go along; only the form's token is missing.
    answer = page.request.post(
        f"{server.base_url}/console/automats/{automat_id}/uninstall", form={"confirm": "yes"}
    )
    assert answer.status == 403
    assert api_tenant.api.get(f"/automats/{automat_id}")["lifecycleState"] == "waitingForInstall"


def test_a_user_of_a_child_unit_does_not_see_the_parents_automats(
    page: Page,
    container: Container,
    server: KeyautomatProcess,
    api_tenant: Tenant,
    tenants: list[Tenant],
) -> None:
    child = _tenant(
        container,
        server,
        tenants,
        name="Acme East",
        parent_id=api_tenant.unit_id,
        unit_type=OrgUnitType.COMPANY,
    )
    parents = _install(api_tenant, "Parent automat")
    childs = _install(child, "Child automat")
    add_user(container, child.unit_id, "east@acme.fi", ConsoleRole.OPERATOR)
    _sign_in(page, server, "east@acme.fi")
    page.get_by_role("link", name="Automats").click()
    expect(page.get_by_role("link", name="Child automat")).to_be_visible()
    expect(page.get_by_text("Parent automat")).to_have_count(0)
    answer = page.goto(f"{server.base_url}/console/automats/{parents}")
    assert answer is not None
    assert answer.status == 404
    expect(page.get_by_text("Parent automat")).to_have_count(0)
    answer = page.goto(f"{server.base_url}/console/automats/{childs}")
    assert answer is not None
    assert answer.status == 200


def test_no_console_page_asks_any_host_but_keyautomat(
    page: Page, container: Container, server: KeyautomatProcess, api_tenant: Tenant
) -> None:
    add_user(container, api_tenant.unit_id, "anna@acme.fi")
    automat_id = _install(api_tenant, "Mainstreet 1")
    origins: list[str] = []
    page.on("request", lambda request: origins.append(request.url))
    _sign_in(page, server, "anna@acme.fi")
    pages = ["/", "/automats", f"/automats/{automat_id}", "/automats/new", "/account"]
    pages += ["/contracts", "/contracts/new/iloq", "/contracts/new/mechanical", "/keys"]
    pages += ["/keys/mechanical/new", "/webhooks", "/webhooks/new", "/organization"]
    pages += ["/notifications", "/groups"]
    for path in pages:
        page.goto(f"{server.base_url}/console{path}")
        page.wait_for_load_state("networkidle")
    # The live regions refresh themselves: one refresh of the automat's page.
    page.goto(f"{server.base_url}/console/automats/{automat_id}")
    with page.expect_response(re.compile(r"/live$")):
        pass
    ours = urlsplit(server.base_url).netloc
    assert origins
    assert {urlsplit(url).netloc for url in origins if not url.startswith("data:")} == {ours}


# --- contracts and webhooks (docs/console.md) --------------------------------------------


def test_an_operator_creates_an_iloq_contract_with_the_form_and_finds_it_and_its_timeline(
    page: Page, container: Container, server: KeyautomatProcess, api_tenant: Tenant
) -> None:
    stocked_automat(container, api_tenant, name="Harbour")
    add_user(container, api_tenant.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    _sign_in(page, server, "op@acme.fi")
    page.get_by_role("link", name="Contracts").click()
    page.get_by_role("link", name="New iLOQ contract").click()
    page.get_by_label("Main door").check()
    now = datetime.now(ZoneInfo("Europe/Helsinki"))
    page.get_by_label("Start").fill((now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("End", exact=True).fill((now + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("radio", name="An automat", exact=True).check()
    page.get_by_label("Automat", exact=True).select_option(label="Harbour")
    page.get_by_label("Name", exact=True).fill("Maija <Meikäläinen>")
    page.get_by_label("Email", exact=True).fill("maija@example.com")
    page.get_by_role("button", name="Create contract").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("The contract is created."))
    expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
    expect(page.get_by_text("Contract created")).to_be_visible()
    expect(page.get_by_text("Maija <Meikäläinen>")).to_be_visible()  # shown as text
    contract_path = urlsplit(page.url).path
    page.get_by_role("link", name="Contracts", exact=True).first.click()
    page.get_by_label("Search contracts").fill("Meikäläinen")
    page.get_by_role("button", name="Apply").click()
    row = page.get_by_role("row", name=re.compile("Meikäläinen"))
    expect(row).to_have_count(1)
    row.get_by_role("link").first.click()
    assert urlsplit(page.url).path == contract_path
    code = api_tenant.api.get("/iloq/keycontracts")["data"][0]["keys"][0]["storageInfo"]["pincode"]
    expect(page.get_by_text(code)).to_be_hidden()  # behind its disclosure until asked
    page.get_by_text("Show", exact=True).click()
    expect(page.get_by_text(code)).to_be_visible()


def test_the_webhook_delivery_log_shows_each_delivery_and_its_attempts(
    page: Page,
    container: Container,
    server: KeyautomatProcess,
    api_tenant: Tenant,
) -> None:
    with running_receiver() as receiver:
        add_user(container, api_tenant.unit_id, "anna@acme.fi")
        _sign_in(page, server, "anna@acme.fi")
        page.goto(f"{server.base_url}/console/webhooks")
        page.get_by_role("link", name="New subscription").click()
        page.get_by_label("Name").fill("PMS")
        page.get_by_label("URL").fill(receiver.url)
        page.get_by_role("button", name="Create subscription").click()
        secret = page.locator("#secret").inner_text()
        assert secret.startswith("whsec_")
        receiver.secrets.append(secret)
        page.get_by_role("button", name="Send a test delivery").click()
        expect(page.get_by_text("Every test delivery got a 2xx answer.")).to_be_visible()
        automat_id, _ = stocked_automat(container, api_tenant)
        created = api_tenant.api.post("/iloq/keycontracts", default_contract(automat_id))
        eventually(lambda: len(receiver.accepted) > len(wh.EVENT_TYPES), timeout=20)
        page.goto(page.url.removesuffix("/test"))
        expect(page.locator("#secret")).to_have_count(0)  # shown once only
        log = page.get_by_role("region", name="Delivery log")
        expect(log.get_by_role("cell", name="contract-update")).to_be_visible()
        expect(log.get_by_text("delivered").first).to_be_visible()
        log.get_by_role("link").first.click()
        expect(page.get_by_role("heading", name="Attempts")).to_be_visible()
        expect(page.get_by_role("cell", name="200")).to_be_visible()
        expect(page.get_by_text(created["id"]).first).to_be_visible()  # the body as sent


def test_a_service_accounts_private_key_is_shown_once_and_downloads(
    page: Page, container: Container, server: KeyautomatProcess, api_tenant: Tenant
) -> None:
    add_user(container, api_tenant.unit_id, "anna@acme.fi")
    _sign_in(page, server, "anna@acme.fi")
    page.get_by_role("link", name="Organization").click()
    page.get_by_text("Add a service account").click()
    page.get_by_label("Name", exact=True).last.fill("Booking system")
    page.get_by_role("button", name="Create service account").click()
    shown = page.locator("#private-key")
    expect(shown).to_contain_text("BEGIN")
    with page.expect_download() as waiting:
        page.get_by_role("link", name="Download the key (.pem)").click()
    download = waiting.value
    assert download.suggested_filename.endswith(".pem")
    saved = Path(download.path()).read_text()
    assert saved.strip() == shown.inner_text().strip()
    account_id = page.locator("section.once code.mono").inner_text()
    # The key signs requests against the real server, and the page never shows it again.
    signing = Client(server.api_url, account_id, saved)
    try:
        assert signing.get("/automats")["data"] == []
    finally:
        signing.close()
    page.goto(f"{server.base_url}/console/organization")
    expect(page.locator("#private-key")).to_have_count(0)
    expect(page.get_by_text("BEGIN")).to_have_count(0)
    expect(page.get_by_role("cell", name="Booking system", exact=True)).to_be_visible()
