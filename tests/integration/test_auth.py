"""Signed-request authentication over HTTP: every rejection of spec/auth.md §3 and §5."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container, bootstrap
from keyautomat.client import signature_headers
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.api.auth import MemoryLedger
from keyautomat.service_layer.clock import ManualClock
from tests.conftest import TEST_BASE, Tenant, make_tenant

JSON = {"content-type": "application/json"}


def _signed(tenant: Tenant, method: str, url: str, body: str = "", **kw: int) -> dict[str, str]:
    return signature_headers(
        method=method,
        url=url,
        body=body,
        service_account_id=tenant.account_id,
        private_key_pem=tenant.private_key,
        **kw,
    )


def test_a_correctly_signed_smoke_test_names_the_caller(acme: Tenant) -> None:
    assert acme.api.get("/") == {
        "ok": True,
        "serviceAccountId": acme.account_id,
        "organizationUnitId": acme.unit_id,
    }


def test_a_request_signed_like_the_official_clients_is_accepted(
    acme: Tenant, http: TestClient
) -> None:
    # Full URL with its query string, compact JSON, content-type on a GET too.
    url = f"{TEST_BASE}/automats?limit=100&after=0"
    headers = {"content-type": "application/json", **_signed(acme, "GET", url)}
    response = http.get(url, headers=headers)
    assert response.status_code == 200, response.text
    body = json.dumps({"name": "Keys", "customerId": "c-1", "type": 1}, separators=(",", ":"))
    url = f"{TEST_BASE}/groups"
    response = http.post(url, content=body, headers=_signed(acme, "POST", url, body))
    assert response.status_code == 201, response.text


def test_each_missing_header_is_refused(acme: Tenant, http: TestClient) -> None:
    url = f"{TEST_BASE}/"
    full = _signed(acme, "GET", url)
    for missing in full:
        headers = {k: v for k, v in full.items() if k != missing}
        response = http.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json() == {
            "statusCode": 401,
            "message": "Missing authentication headers",
            "error": "Unauthorized",
        }


def test_a_timestamp_outside_the_window_is_refused(acme: Tenant, http: TestClient) -> None:
    url = f"{TEST_BASE}/"
    now = time.time_ns() // 1_000_000
    for stamp in (now - 301_000, now + 301_000):
        response = http.get(url, headers=_signed(acme, "GET", url, timestamp_ms=stamp))
        assert response.status_code == 401
        assert response.json()["message"] == "Request timestamp is invalid or expired"


def test_a_non_numeric_timestamp_is_refused(acme: Tenant, http: TestClient) -> None:
    url = f"{TEST_BASE}/"
    headers = {**_signed(acme, "GET", url), "x-timestamp": "12e3"}
    response = http.get(url, headers=headers)
    assert response.status_code == 401
    assert response.json()["message"] == "Request timestamp is invalid or expired"


def test_a_timestamp_inside_the_window_is_accepted(acme: Tenant, http: TestClient) -> None:
    ledger = http.app.state.verifier.ledger  # type: ignore[attr-defined]
    if isinstance(ledger, MemoryLedger):
        # As if the process had been up for longer than the window (a shared table
        # vouches for any time already).
        ledger.replays.covers_from_ms -= 600_000
    url = f"{TEST_BASE}/"
    stamp = time.time_ns() // 1_000_000 - 290_000
    response = http.get(url, headers=_signed(acme, "GET", url, timestamp_ms=stamp))
    assert response.status_code == 200


def test_an_unknown_service_account_is_refused(acme: Tenant, http: TestClient) -> None:
    url = f"{TEST_BASE}/"
    headers = {**_signed(acme, "GET", url), "x-service-account-id": "ffffffffffffffffffffffff"}
    response = http.get(url, headers=headers)
    assert response.status_code == 401
    assert response.json()["message"] == "Unknown service account"


def test_a_signature_over_another_url_method_or_body_is_refused(
    acme: Tenant, http: TestClient
) -> None:
    url = f"{TEST_BASE}/groups"
    body = '{"name":"Keys","customerId":"c-1","type":1}'
    variants = [
        _signed(acme, "POST", f"{TEST_BASE}/automats", body),
        _signed(acme, "PATCH", url, body),
        _signed(acme, "POST", url, body.replace("Keys", "Kays")),
        _signed(acme, "POST", "https://evil.example.com/v2/groups", body),
    ]
    for headers in variants:
        response = http.post(url, content=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["message"] == "Invalid signature"


def test_a_signature_by_another_key_or_garbage_is_refused(
    acme: Tenant, operator: Tenant, http: TestClient
) -> None:
    url = f"{TEST_BASE}/"
    foreign = {**_signed(operator, "GET", url), "x-service-account-id": acme.account_id}
    garbage = {**_signed(acme, "GET", url), "x-signature": "%%%not-base64%%%"}
    short = {**_signed(acme, "GET", url), "x-signature": base64.b64encode(b"x").decode()}
    for headers in (foreign, garbage, short):
        response = http.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json()["message"] == "Invalid signature"


def test_a_replayed_signature_is_refused(acme: Tenant, http: TestClient) -> None:
    url = f"{TEST_BASE}/"
    headers = _signed(acme, "GET", url)
    assert http.get(url, headers=headers).status_code == 200
    again = http.get(url, headers=headers)
    assert again.status_code == 401
    assert again.json()["message"] == "Replayed request"


def test_a_delete_body_is_read_and_signed(acme: Tenant, http: TestClient) -> None:
    group = acme.api.post("/groups", {"name": "G", "customerId": "c", "type": 1})
    url = f"{TEST_BASE}/groups/{group['id']}"
    body = '{"deleteActiveContracts":true}'
    unsigned_body = _signed(acme, "DELETE", url, "")
    response = http.request("DELETE", url, content=body, headers=unsigned_body)
    assert response.status_code == 401
    response = http.request("DELETE", url, content=body, headers=_signed(acme, "DELETE", url, body))
    assert response.status_code == 204


def test_a_percent_encoded_query_verifies_against_the_unencoded_signed_url(
    acme: Tenant, http: TestClient
) -> None:
    # Node's HTTP stack encodes the space the caller left in the URL it signed.
    signed_url = f"{TEST_BASE}/groups?search=main street"
    headers = _signed(acme, "GET", signed_url)
    response = http.get(f"{TEST_BASE}/groups?search=main%20street", headers=headers)
    assert response.status_code == 200, response.text


def test_a_deleted_service_account_is_refused_at_once(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    other = make_tenant(container, http, name="Sub", parent_id=acme.unit_id)
    assert other.api.get("/")["ok"] is True
    acme.api.delete(f"/serviceAccounts/{other.account_id}")
    response = other.api.request("GET", "/")
    assert response.status_code == 401
    assert response.json()["message"] == "Unknown service account"


def test_the_public_url_setting_decides_which_url_is_verified(
    acme: Tenant, container: Container, settings: Settings
) -> None:
    # Behind a TLS-terminating proxy the server sees http://internal:8000 while
    # clients sign the public https URL.
    container.settings = Settings(
        **{**settings.model_dump(), "public_url": "https://keys.example.com/v2"}
    )
    with TestClient(create_app(container), base_url="http://internal:8000") as behind_proxy:
        public = _signed(acme, "GET", "https://keys.example.com/v2/automats?limit=5")
        ok = behind_proxy.get("http://internal:8000/v2/automats?limit=5", headers=public)
        assert ok.status_code == 200, ok.text
        internal = _signed(acme, "GET", "http://internal:8000/v2/automats?limit=5")
        refused = behind_proxy.get("http://internal:8000/v2/automats?limit=5", headers=internal)
        assert refused.status_code == 401


def test_documentation_routes_need_no_signature(http: TestClient) -> None:
    assert http.get("/v2/openapi.json").status_code == 200
    assert http.get("/v2/docs").status_code == 200


def test_an_unsigned_request_with_a_broken_body_is_refused_before_validation(
    http: TestClient,
) -> None:
    response = http.post(f"{TEST_BASE}/groups", content=b"{not json")
    assert response.status_code == 401


def test_another_base64_spelling_of_a_used_signature_is_not_a_fresh_request(
    acme: Tenant, http: TestClient
) -> None:
    url = f"{TEST_BASE}/"
    headers = _signed(acme, "GET", url)
    assert http.get(url, headers=headers).status_code == 200
    signature = headers["x-signature"]
    # The low bits of the last character before "==" are ignored by Base64
    # decoders: flipping one spells the same signature bytes differently.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    char = signature[-3]
    twin = alphabet[alphabet.index(char) ^ 1]
    respelled = {**headers, "x-signature": signature[:-3] + twin + "=="}
    response = http.get(url, headers=respelled)
    assert response.status_code == 401


def test_an_absurdly_long_timestamp_is_refused_not_a_crash(acme: Tenant, http: TestClient) -> None:
    url = f"{TEST_BASE}/"
    for stamp in ("1" * 5000, "12e3", "-1700000000000"):
        headers = {**_signed(acme, "GET", url), "x-timestamp": stamp}
        response = http.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json()["message"] == "Request timestamp is invalid or expired"


def test_a_request_accepted_before_a_restart_is_refused_after_it(settings: Settings) -> None:
    """On SQLite the replay cache is process memory: a new process refuses what was signed
    before it started. On PostgreSQL the shared table still holds the signature."""
    clock = ManualClock(datetime.now(UTC))
    container = bootstrap(settings, clock=clock)

    def now_ms() -> int:
        return int(clock.now().timestamp() * 1000)

    url = f"{TEST_BASE}/groups"
    body = '{"name":"Once","customerId":"once","type":1}'
    try:
        with TestClient(create_app(container), base_url="http://testserver") as first:
            acme = make_tenant(container, first)
            stamp = now_ms() + 1_000
            signed = {**_signed(acme, "POST", url, body, timestamp_ms=stamp), **JSON}
            clock.advance(timedelta(seconds=2))
            assert first.post(url, content=body, headers=signed).status_code == 201
            again = first.post(url, content=body, headers=signed)
            assert again.json()["message"] == "Replayed request"
        clock.advance(timedelta(minutes=1))  # the process restarts
        with TestClient(create_app(container), base_url="http://testserver") as restarted:
            replayed = restarted.post(url, content=body, headers=signed)
            assert replayed.status_code == 401
            assert replayed.json()["message"] == (
                "Request timestamp is invalid or expired"
                if container.db.is_sqlite
                else "Replayed request"
            )
            fresh = {**_signed(acme, "POST", url, body, timestamp_ms=now_ms()), **JSON}
            assert restarted.post(url, content=body, headers=fresh).status_code == 201
        names = container.db.transaction(
            lambda s: list(s.execute(text("SELECT name FROM groups")).scalars())
        )
        assert names.count("Once") == 2
    finally:
        container.close()
