"""Admission control through the whole app, on both engines (docs/api.md, "Overload"): with
every slot busy a request is refused at once with 429 and Retry-After in the one error
shape, before its signature is checked and with nothing changed; the probes and the metrics
still answer; and a slot comes back after every way a request can end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.types import Message

from keyautomat import metrics
from keyautomat.admission import Slots
from keyautomat.bootstrap import bootstrap
from keyautomat.client import compact_json, signature_headers
from keyautomat.config import Settings
from keyautomat.entrypoints.api.admission import BUSY
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.api.errors import error_body
from keyautomat.service_layer.clock import SystemClock
from tests.conftest import TEST_BASE, Tenant

LOOPBACK = ("127.0.0.1", 50000)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # One request at a time and no wait: the test holds the slot to make the process busy.
    return settings.model_copy(update={"max_requests_in_flight": 1, "admission_wait_ms": 0})


def slots_of(http: TestClient) -> Slots:
    slots = http.app.state.admission  # type: ignore[attr-defined]
    assert isinstance(slots, Slots)
    return slots


@contextlib.contextmanager
def busy(http: TestClient) -> Iterator[Slots]:
    """Holds the one slot, on the app's own loop, as a request being handled would."""
    assert http.portal is not None
    slots = slots_of(http)
    assert http.portal.call(slots.try_acquire)
    try:
        yield slots
    finally:
        http.portal.call(slots.release)


def signed(tenant: Tenant, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """The parts of one signed request, to send as is (twice, if the test wants)."""
    url = f"{TEST_BASE}{path}"
    content = compact_json(body).encode() if body is not None else b""
    headers = signature_headers(
        method=method,
        url=url,
        body=content,
        service_account_id=tenant.account_id,
        private_key_pem=tenant.private_key,
    )
    return {
        "method": method,
        "url": url,
        "content": content,
        "headers": {"content-type": "application/json", **headers},
    }


def refused_count() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "keyautomat_overload_refused_requests_total", {"reason": "queue_full"}
    )
    assert value is not None
    return value


def test_a_busy_process_refuses_a_create_at_once_with_429_and_creates_nothing(
    http: TestClient, acme: Tenant
) -> None:
    request = signed(acme, "POST", "/groups", {"name": "Door A", "customerId": "a", "type": 1})
    before = refused_count()
    with busy(http):
        refused = http.request(**request)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/json"
    assert refused.json() == error_body(429, BUSY)
    assert refused.headers["x-request-id"]
    assert refused_count() == before + 1
    assert acme.api.get("/groups")["data"] == []
    # Refused before the signature was checked: it was never remembered as used, so the
    # very same request is accepted once the process has room.
    assert http.request(**request).status_code == 201
    assert [g["name"] for g in acme.api.get("/groups")["data"]] == ["Door A"]


def test_probes_and_metrics_answer_while_every_slot_is_busy(http: TestClient) -> None:
    scraper = TestClient(http.app, base_url="http://testserver", client=LOOPBACK)
    with busy(http):
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        scraped = scraper.get("/metrics")
        assert http.get("/console/").status_code == 429
    assert scraped.status_code == 200
    assert "keyautomat_http_requests_in_flight 1.0" in scraped.text
    assert 'keyautomat_overload_refused_requests_total{reason="queue_full"}' in scraped.text


def test_the_slot_comes_back_after_every_kind_of_failed_request(
    http: TestClient, acme: Tenant
) -> None:
    app = http.app
    assert isinstance(app, FastAPI)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/v2/boom", boom)
    slots = slots_of(http)
    assert acme.api.request("POST", "/groups", raw_body="{").status_code == 400
    assert http.post("/v2/groups", headers={"x-signature": "x"}).status_code == 401
    assert acme.api.request("GET", "/groups/0123456789abcdef01234567").status_code == 404
    assert acme.api.request("GET", "/boom").status_code == 500
    assert slots.held == 0
    after = acme.api.request("POST", "/groups", {"name": "After", "customerId": "a", "type": 1})
    assert after.status_code == 201


def _scope(request: dict[str, Any]) -> dict[str, Any]:
    path = request["url"].removeprefix("http://testserver")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            *((k.lower().encode(), v.encode()) for k, v in request["headers"].items()),
        ],
        "client": LOOPBACK,
        "server": ("testserver", 80),
    }


def test_the_slot_comes_back_when_the_client_goes_away_before_its_body(
    http: TestClient, acme: Tenant
) -> None:
    slots = slots_of(http)
    sent: list[Message] = []

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    request = signed(acme, "POST", "/groups", {"name": "Never", "customerId": "n", "type": 1})

    async def call() -> None:
        await http.app(_scope(request), gone, send)

    asyncio.run(call())
    assert slots.held == 0
    assert acme.api.get("/groups")["data"] == []


def test_the_slot_comes_back_when_the_request_is_cancelled_mid_way(
    http: TestClient, acme: Tenant
) -> None:
    slots = slots_of(http)
    request = signed(acme, "POST", "/groups", {"name": "Never", "customerId": "n", "type": 1})

    async def scenario() -> int:
        reading = asyncio.Event()

        async def stalled() -> Message:
            reading.set()
            await asyncio.Event().wait()  # the body never comes
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            raise AssertionError(f"nothing is sent: {message}")

        async def call() -> None:
            await http.app(_scope(request), stalled, send)

        handling = asyncio.create_task(call())
        await reading.wait()
        held_while_reading = slots.held
        handling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handling
        return held_while_reading

    assert asyncio.run(scenario()) == 1
    assert slots.held == 0


@pytest.mark.parametrize(("target_ms", "adapts"), [(50, True), (0, False)])
def test_the_limit_follows_holding_times_unless_the_target_is_zero(
    settings: Settings, target_ms: int, adapts: bool
) -> None:
    tuned = settings.model_copy(
        update={"max_requests_in_flight": 8, "admission_target_ms": target_ms}
    )
    container = bootstrap(tuned, clock=SystemClock())
    try:
        slots = create_app(container).state.admission
        assert isinstance(slots, Slots)
        assert slots.limit == 8
        assert metrics.REGISTRY.get_sample_value("keyautomat_http_requests_in_flight_limit") == 8
        if adapts:
            assert slots.adapt is not None
            assert (slots.adapt.ceiling, slots.adapt.floor, slots.adapt.target) == (8, 2, 0.05)
        else:
            assert slots.adapt is None
    finally:
        container.close()
