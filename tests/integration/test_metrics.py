"""``GET /metrics`` (docs/operations.md, "Metrics"): every family after a whole handover,
facts read from the database, and who may scrape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container, bootstrap
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import outbox
from keyautomat.service_layer.clock import SystemClock
from keyautomat.service_layer.metric_facts import read_facts
from tests.conftest import Tenant
from tests.contract_helpers import iso
from tests.devices import FAST_DEVICE_SETTINGS, Simulators, admin_client, eventually
from tests.iloq_helpers import CONTRACTS_PATH, bound_automat, first_key, seed_system, synced
from tests.integration.webhook_support import subscribe
from tests.webhook_receiver import Receiver, running_receiver

LOOPBACK = ("127.0.0.1", 50000)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            **FAST_DEVICE_SETTINGS,
            "webhooks_allow_private": True,
            "notify_sink_dir": tmp_path / "sink",
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def scrape(
    http: TestClient, *, client: tuple[str, int] = LOOPBACK, headers: dict[str, str] | None = None
) -> httpx2.Response:
    """``GET /metrics`` to the app under test as sent from ``client``."""
    scraper = TestClient(http.app, base_url="http://testserver", client=client)
    return scraper.get("/metrics", headers=headers)


def parsed(text: str) -> tuple[set[str], Samples]:
    """The family names and every sample (name and labels -> value) of an exposition."""
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


FAMILIES = {
    "keyautomat_http_request_duration_seconds",
    "keyautomat_signature_failures",
    "keyautomat_rate_limited_requests",
    "keyautomat_overload_refused_requests",
    "keyautomat_http_requests_in_flight",
    "keyautomat_contracts_created",
    "keyautomat_handovers",
    "keyautomat_devices_bound",
    "keyautomat_devices_online",
    "keyautomat_device_command_duration_seconds",
    "keyautomat_devices_unsynced",
    "keyautomat_device_sync_versions_behind_max",
    "keyautomat_outbox_depth",
    "keyautomat_outbox_oldest_due_age_seconds",
    "keyautomat_webhook_deliveries",
    "keyautomat_webhook_delivery_duration_seconds",
    "keyautomat_notification_deliveries",
    "keyautomat_iloq_call_duration_seconds",
    "keyautomat_iloq_call_errors",
}


def test_after_a_handover_metrics_expose_every_family(
    container: Container,
    acme: Tenant,
    http: TestClient,
    sims: Simulators,
    receiver: Receiver,
) -> None:
    subscribe(admin_client(acme, http), receiver, acme.unit_id)
    assert http.get("/v2/automats").status_code == 401  # unsigned: a signature failure
    system = seed_system(container, acme.unit_id)
    automat_id, sim, _ = bound_automat(acme, sims)
    now = datetime.now(UTC)
    created = acme.api.post(
        CONTRACTS_PATH,
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [system.front_door],
                "numberOfKeys": 1,
                "keyAutomatId": automat_id,
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=2)),
                "contact": {
                    "name": "Jane Guest",
                    "email": "jane@example.com",
                    "notifications": {"contractCreated": {"email": True}},
                },
            }
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code))
    assert sims.call(sim.enter_code, code)
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-fetched")
    assert sims.call(sim.enter_code, code)
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-returned")
    sims.call(OutboxWorker(container.db, container.dispatcher, container.clock).drain)
    assert receiver.accepted  # delivered to the loopback receiver
    assert (container.settings.notify_sink_dir / "notifications.jsonl").exists()

    answer = scrape(http)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    names, samples = parsed(answer.text)
    assert names >= FAMILIES, FAMILIES - names

    created_route = {"method": "POST", "route": "/v2/iloq/keycontracts", "status": "201"}
    requests = "keyautomat_http_request_duration_seconds_count"
    assert value(samples, requests, **created_route) >= 1
    one_contract = {"method": "GET", "route": "/v2/iloq/keycontracts/{id}", "status": "200"}
    assert value(samples, requests, **one_contract) >= 1
    assert created["id"] not in answer.text  # route templates, never raw paths
    assert value(samples, "keyautomat_signature_failures_total", reason="missing_headers") >= 1
    assert value(samples, "keyautomat_rate_limited_requests_total", surface="api") >= 0
    assert value(samples, "keyautomat_contracts_created_total", kind="iloq") >= 1
    assert value(samples, "keyautomat_handovers_total", event="fetched") >= 1
    assert value(samples, "keyautomat_handovers_total", event="returned") >= 1
    assert value(samples, "keyautomat_handovers_total", event="not_returned") >= 0
    assert value(samples, "keyautomat_devices_bound") == 1
    assert value(samples, "keyautomat_devices_online") == 1
    assert value(samples, "keyautomat_devices_unsynced", connection="online") == 0
    assert value(samples, "keyautomat_device_sync_versions_behind_max") == 0
    synced_ok = {"command": "sync", "outcome": "ok"}
    assert value(samples, "keyautomat_device_command_duration_seconds_count", **synced_ok) >= 1
    for kind in container.dispatcher.kinds:
        assert value(samples, "keyautomat_outbox_depth", kind=kind, state="due") == 0
        assert value(samples, "keyautomat_outbox_oldest_due_age_seconds", kind=kind) == 0
    assert value(samples, "keyautomat_webhook_deliveries_total", outcome="delivered") >= 1
    assert (
        value(samples, "keyautomat_webhook_delivery_duration_seconds_count", outcome="delivered")
        >= 1
    )
    email_sent = {"channel": "email", "outcome": "sent"}
    assert value(samples, "keyautomat_notification_deliveries_total", **email_sent) >= 1
    programmed = {"system": "emulator", "operation": "program_key"}
    assert value(samples, "keyautomat_iloq_call_duration_seconds_count", **programmed) >= 1


def test_the_outbox_and_device_gauges_are_read_from_the_database(container: Container) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def seed(session: Session) -> None:
        for minutes in (10, 3):
            outbox.enqueue(session, "webhook", {}, now=now, due_at=now - timedelta(minutes=minutes))
        outbox.enqueue(session, "webhook", {}, now=now, due_at=now + timedelta(hours=1))
        outbox.enqueue(session, "notification", {}, now=now, held=True)

    container.db.transaction(seed)
    facts = container.db.transaction(lambda s: read_facts(s, now, 90.0))
    assert facts.outbox.depth == {
        ("webhook", "due"): 2,
        ("webhook", "scheduled"): 1,
        ("notification", "held"): 1,
    }
    assert facts.outbox_age_seconds("webhook") == 600
    assert facts.outbox_age_seconds("notification") == 0
    assert facts.devices.bound == 0
    assert facts.devices.online == 0


def test_a_signature_link_is_counted_by_its_template_never_its_token(http: TestClient) -> None:
    token = "Zq3xTOKENthatMustNotLeak0123456789"
    http.get(f"/sign/{token}")
    http.get(f"/v2/automats/{token}")  # refused before routing: no template at all
    text = scrape(http).text
    assert token not in text
    _, samples = parsed(text)
    routes = {dict(labels)["route"] for name, labels in samples if "route" in dict(labels)}
    assert "/sign/{token}" in routes
    assert all(route == "-" or route.startswith("/") for route in routes)


def test_a_client_outside_the_allowed_networks_is_refused(http: TestClient) -> None:
    for client in (("192.0.2.7", 40000), ("testclient", 50000)):
        refused = scrape(http, client=client)
        assert refused.status_code == 403
        assert refused.json() == {
            "statusCode": 403,
            "message": "Metrics are not available to this client",
            "error": "Forbidden",
        }
        assert "keyautomat_" not in refused.text


def test_a_request_through_a_proxy_is_refused_even_from_loopback(http: TestClient) -> None:
    refused = scrape(http, headers={"X-Forwarded-For": "127.0.0.1"})
    assert refused.status_code == 403


def test_with_a_token_set_a_scrape_needs_it_as_a_bearer_token(settings: Settings) -> None:
    container = bootstrap(
        settings.model_copy(update={"metrics_token": "s3cret-scrape-token"}), clock=SystemClock()
    )
    try:
        app = create_app(container)
        scraper = TestClient(app, base_url="http://testserver", client=LOOPBACK)
        assert scraper.get("/metrics").status_code == 403
        wrong = {"Authorization": "Bearer guess"}
        assert scraper.get("/metrics", headers=wrong).status_code == 403
        right = {"Authorization": "Bearer s3cret-scrape-token", "X-Forwarded-For": "192.0.2.7"}
        assert scraper.get("/metrics", headers=right).status_code == 200
    finally:
        container.close()
