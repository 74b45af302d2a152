"""The HTTP edge on both engines: one body limit for every route, enforced while the body
streams; no NUL in any URL part; numbers from URLs bounded before SQL; database data
errors answered 400; a 405 that names every method of the path."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from starlette.testclient import TestClient
from starlette.types import Message

from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.entrypoints.api import sign
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.api.edge import MAX_BODY_BYTES
from keyautomat.entrypoints.api.errors import error_body, is_invalid_data
from tests.conftest import Tenant
from tests.devices import admin_client

CHUNK = b"x" * 65536
NUL = "must not contain NUL characters"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Webhook subscriptions to a local address, so one can exist without a receiver.
    return settings.model_copy(update={"webhooks_allow_private": True})


class Stream:
    """An ASGI request whose body is ``total`` bytes in 64 KiB chunks, sent only on demand."""

    def __init__(self, total: int) -> None:
        self.chunks = total // len(CHUNK)
        self.pulled = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.pulled >= self.chunks:
            return {"type": "http.disconnect"}
        self.pulled += 1
        return {"type": "http.request", "body": CHUNK, "more_body": self.pulled < self.chunks}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])


def _post(app: FastAPI, path: str, stream: Stream, headers: list[tuple[bytes, bytes]]) -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, stream.receive, stream.send))


@pytest.fixture
def no_signing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every call that would sign a contract: none may happen for a refused form."""
    calls: list[str] = []
    # By path: the sign route's module does not re-export the service it calls.
    monkeypatch.setattr(
        "keyautomat.entrypoints.api.sign.service.sign", lambda *a, **k: calls.append("sign")
    )
    return calls


def test_a_chunked_sign_form_over_its_limit_is_refused_while_it_streams_and_never_buffered(
    container: Container, no_signing: list[str]
) -> None:
    app = create_app(container)
    stream = Stream(64 << 20)  # 64 MiB, no Content-Length
    tracemalloc.start()
    try:
        _post(app, "/sign/any-token", stream, [(b"transfer-encoding", b"chunked")])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stream.status == 413
    assert stream.headers[b"connection"] == b"close"
    assert stream.pulled <= sign.MAX_FORM // len(CHUNK) + 1
    assert peak < 4 << 20
    assert no_signing == []


def test_a_body_that_lies_about_its_length_is_counted_and_refused_on_every_route(
    container: Container, acme: Tenant
) -> None:
    app = create_app(container)
    # Signed routes read a body only once its headers pass (a known account, a fresh
    # timestamp); the signature itself cannot be checked before the body is read.
    now_ms = str(int(container.clock.now().timestamp() * 1000)).encode()
    signed = [
        (b"x-service-account-id", acme.account_id.encode()),
        (b"x-timestamp", now_ms),
        (b"x-signature", b"AAAA"),
    ]
    for path, headers in (
        ("/v2/groups", signed),
        ("/admin/webhooks", signed),
        ("/sign/any-token", []),
    ):
        stream = Stream(16 << 20)
        _post(app, path, stream, [(b"content-length", b"10"), *headers])
        assert stream.status == 413, path
        assert stream.pulled <= MAX_BODY_BYTES // len(CHUNK) + 1, path
    # Routes that take no body never read it: the server drops the rest.
    for path in ("/healthz", "/not-a-route"):
        stream = Stream(16 << 20)
        _post(app, path, stream, [(b"content-length", b"10")])
        assert stream.status in {404, 405}, path
        assert stream.pulled <= 1, path


def test_a_declared_length_over_the_limit_is_refused_before_anything_is_read(
    container: Container,
) -> None:
    app = create_app(container)
    stream = Stream(16 << 20)
    _post(app, "/v2/groups", stream, [(b"content-length", str(10**12).encode())])
    assert stream.status == 413
    assert stream.pulled == 0
    assert json.loads(stream.sent[1]["body"]) == error_body(413, "Request body is too large")


def test_the_sign_form_keeps_its_smaller_limit_under_the_app_wide_one(
    acme: Tenant, http: TestClient, no_signing: list[str]
) -> None:
    form = b"name=" + b"x" * (sign.MAX_FORM + 1)
    refused = http.post("/sign/any", content=form)
    assert refused.status_code == 413
    assert refused.json()["message"] == "Request body is too large"
    # The same size is fine where only the app-wide limit applies.
    accepted = acme.api.request("POST", "/groups", raw_body=b'{"name":"' + b"x" * 600_000 + b'"}')
    assert accepted.status_code != 413


def test_nul_in_any_url_part_is_refused_before_routing_even_unauthenticated(
    acme: Tenant, http: TestClient
) -> None:
    for path in ("/sign/a%00b", "/v2/groups/a%00b", "/admin/automats/a%00b/device", "/x%00"):
        response = http.get(path)
        assert response.status_code == 400, path
        assert response.json() == {
            "statusCode": 400,
            "message": [f"path: {NUL}"],
            "error": "Bad Request",
        }
    refused = acme.api.request("GET", "/groups?customerId=a%00b")
    assert (refused.status_code, refused.json()["message"]) == (400, [f"customerId: {NUL}"])
    refused = acme.api.request("GET", "/automats?after=1&limit=2&%00=1")
    assert (refused.status_code, refused.json()["message"]) == (400, [f"query: {NUL}"])


def test_nul_in_the_account_header_is_refused_without_a_lookup(http: TestClient) -> None:
    headers = {"x-service-account-id": "a\x00b", "x-timestamp": "1", "x-signature": "x"}
    response = http.get("/v2/groups", headers=headers)
    assert response.status_code == 400
    assert response.json()["message"] == f"x-service-account-id: {NUL}"


@pytest.fixture
def subscription(acme: Tenant, http: TestClient) -> str:
    created = admin_client(acme, http).post(
        "/admin/webhooks",
        {
            "name": "PMS",
            "url": "http://127.0.0.1:9/hook",
            "organizationUnitId": acme.unit_id,
            "eventTypes": ["key-status"],
        },
    )
    return str(created["id"])


HUGE = "1" + "0" * 30


def test_admin_list_numbers_must_be_bounded_ascii_integers(
    acme: Tenant, http: TestClient, subscription: str
) -> None:
    api = admin_client(acme, http)
    lists = (
        "/admin/notifications",
        f"/admin/webhooks/{subscription}/deliveries",
        f"/admin/webhooks/{subscription}/attempts",
    )
    for path in lists:
        for name, value in (("after", "²"), ("after", HUGE), ("limit", "²"), ("limit", HUGE)):
            response = api.request("GET", f"{path}?{name}={value}")
            assert response.status_code == 400, (path, name, value)
            assert response.json()["message"][0].startswith(f"{name}: "), (path, name, value)
        assert api.request("GET", f"{path}?after=5&limit=500").status_code == 200


def test_a_path_number_too_large_for_the_database_is_not_found(
    acme: Tenant, http: TestClient, subscription: str
) -> None:
    api = admin_client(acme, http)
    deliveries = f"/admin/webhooks/{subscription}/deliveries"
    for number in (HUGE, "²", "1" * 16):
        assert api.request("GET", f"{deliveries}/{number}").status_code == 404
        assert api.request("POST", f"{deliveries}/{number}/redeliver").status_code == 404


@pytest.fixture
def failing_app(container: Container) -> Iterator[TestClient]:
    """The app with one test-only route whose statement the database refuses for its data."""
    app = create_app(container)

    @app.get("/v2/test-only/unstorable")
    async def unstorable() -> None:
        await container.db.run(lambda s: s.execute(text("SELECT :v"), {"v": "a\x00b"}))

    with TestClient(app) as client:
        yield client


# PostgreSQL only: SQLite stores NUL in text, so it has no such refusal to map.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_value_the_database_refuses_is_a_400_never_a_500(
    failing_app: TestClient, acme: Tenant
) -> None:
    api = acme.api.__class__(
        "http://testserver/v2", acme.account_id, acme.private_key, http=failing_app
    )
    response = api.request("GET", "/test-only/unstorable")
    assert response.status_code == 400
    assert response.json()["message"] == ["Request contains a value the database cannot store"]


@pytest.mark.parametrize(
    ("error", "invalid"),
    [
        (DataError("SELECT 1", {}, psycopg.DataError("bigint out of range")), True),
        (
            StatementError(
                "bind", "SELECT 1", {}, UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate")
            ),
            True,
        ),
        (StatementError("bind", "SELECT 1", {}, OverflowError("too large")), True),
        (StatementError("bind", "SELECT 1", {}, TypeError("a bug of ours")), False),
        # A naive datetime given to a UTC column is the server's bug, not bad input.
        (StatementError("bind", "SELECT 1", {}, ValueError("naive datetime")), False),
        (IntegrityError("SELECT 1", {}, psycopg.IntegrityError("duplicate")), False),
        (DBAPIError("SELECT 1", {}, psycopg.OperationalError("server gone")), False),
    ],
)
def test_only_errors_about_the_data_count_as_bad_input(
    error: StatementError, invalid: bool
) -> None:
    assert is_invalid_data(error) is invalid


def test_a_405_names_every_method_the_path_answers(acme: Tenant, http: TestClient) -> None:
    response = acme.api.request("OPTIONS", "/groups")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["statusCode"] == 405
    # The method is refused before the id is looked up.
    response = acme.api.request("PUT", "/groups/0123456789abcdef01234567")
    assert (response.status_code, response.headers["allow"]) == (405, "DELETE, GET, PATCH")
