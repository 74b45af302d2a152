"""A simulated automat's alarms reach a webhook receiver as the spec's device-alarm events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer.clock import SystemClock
from keyautomat.simulator import SimulatedAutomat
from tests.conftest import Tenant
from tests.devices import BIND_SECONDS, FAST_DEVICE_SETTINGS, Simulators, admin_client, install
from tests.integration.webhook_support import drain, live, subscribe
from tests.webhook_receiver import Receiver, running_receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={**FAST_DEVICE_SETTINGS, "webhooks_allow_private": True})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def _bound(sims: Simulators, automat: dict[str, Any], **kwargs: Any) -> SimulatedAutomat:
    sim = sims.start(
        hw_id=f"SIM-{automat['id']}",
        product="key20",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
        **kwargs,
    )
    sims.call(sim.wait_bound, BIND_SECONDS)
    return sim


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_an_alarm_is_delivered_on_activation_acknowledgement_and_deactivation(
    acme: Tenant,
    http: TestClient,
    container: Container,
    sims: Simulators,
    receiver: Receiver,
) -> None:
    admin = admin_client(acme, http)
    subscribe(admin, receiver, acme.unit_id, ["device-alarm"])
    automat = install(acme)
    sim = _bound(sims, automat)
    worker = OutboxWorker(container.db, container.dispatcher, SystemClock(), worker_id="w")

    sims.call(sim.raise_alarm, "DEVICE_MOVED")
    sims.call(sim.wait_flushed, BIND_SECONDS)
    [alarm] = [
        a
        for a in admin.get(f"/admin/automats/{automat['id']}/alarms")["data"]
        if a["alarmType"] == "DEVICE_MOVED"
    ]
    admin.post(f"/admin/automats/{automat['id']}/alarms/{alarm['id']}/acknowledge")
    sims.call(sim.clear_alarm, "DEVICE_MOVED")
    sims.call(sim.wait_flushed, BIND_SECONDS)
    drain(worker)

    events = [e for e in live(receiver) if e["data"]["alarmType"] == "DEVICE_MOVED"]
    assert [e["type"] for e in events] == ["device-alarm"] * 3
    assert all(r.verified for r in receiver.received)
    assert [e["organizationUnitId"] for e in events] == [acme.unit_id] * 3
    activated, acknowledged, deactivated = (e["data"] for e in events)
    assert set(activated) == {"alarmType", "state", "deviceId", "start", "end", "acknowledged"}
    assert activated == {
        "alarmType": "DEVICE_MOVED",
        "state": "activated",
        "deviceId": automat["id"],
        "start": activated["start"],
        "end": None,
        "acknowledged": False,
    }
    assert acknowledged == {**activated, "acknowledged": True}
    assert deactivated["state"] == "deactivated"
    assert deactivated["acknowledged"] is True
    assert parse(deactivated["end"]) >= parse(activated["start"])
    assert parse(activated["start"]) <= datetime.now(UTC)
    assert activated["start"].endswith("Z")
    assert len(activated["start"]) == len("2025-06-01T12:03:10.412Z")


def test_alarms_of_another_organization_are_not_delivered(
    acme: Tenant,
    operator: Tenant,
    http: TestClient,
    container: Container,
    sims: Simulators,
    receiver: Receiver,
) -> None:
    subscribe(admin_client(acme, http), receiver, acme.unit_id, ["device-alarm"])
    automat = install(operator)
    sim = _bound(sims, automat)
    sims.call(sim.raise_alarm, "DEVICE_ERROR")
    sims.call(sim.wait_flushed, BIND_SECONDS)
    drain(OutboxWorker(container.db, container.dispatcher, SystemClock(), worker_id="w"))
    assert live(receiver) == []


def test_a_bind_and_a_keypad_lockout_are_delivered_as_momentary_device_alarms(
    acme: Tenant,
    http: TestClient,
    container: Container,
    sims: Simulators,
    receiver: Receiver,
) -> None:
    subscribe(admin_client(acme, http), receiver, acme.unit_id, ["device-alarm"])
    automat = install(acme)
    sim = _bound(sims, automat, max_failures=2)
    for _ in range(2):
        assert sims.call(sim.enter_code, "0000") is False
    sims.call(sim.wait_flushed, BIND_SECONDS)
    drain(OutboxWorker(container.db, container.dispatcher, SystemClock(), worker_id="w"))

    ours = [
        e
        for e in live(receiver)
        if e["data"]["alarmType"] in {"DEVICE_BOUND", "DEVICE_KEYPAD_LOCKED"}
    ]
    seen = [(e["data"]["alarmType"], e["data"]["state"]) for e in ours]
    assert seen == [
        ("DEVICE_BOUND", "activated"),
        ("DEVICE_BOUND", "deactivated"),
        ("DEVICE_KEYPAD_LOCKED", "activated"),
        ("DEVICE_KEYPAD_LOCKED", "deactivated"),
    ]
    for event in ours:
        assert event["data"]["deviceId"] == automat["id"]
        assert set(event["data"]) == {
            "alarmType",
            "state",
            "deviceId",
            "start",
            "end",
            "acknowledged",
        }
