"""The rules that protect state against a device's mistakes, over a real Mosquitto: a bad
inventory and an event about a locker the automat does not have are refused with their
reason and change nothing (docs/device-protocol.md, "Lockers")."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from keyautomat.adapters.device_links import MqttLink
from keyautomat.adapters.device_protocol import AlarmEvent, KeyEvent, Message, RejectReason
from keyautomat.adapters.orm_devices import automat_events, device_inbox
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.service_layer import devices
from keyautomat.simulator import SimulatedAutomat, blank_iloq_keys
from tests.conftest import Tenant
from tests.devices import (
    BIND_SECONDS,
    Outgoing,
    Simulators,
    admin_client,
    answer_to,
    as_device,
    exchange,
    id_of,
    install,
    inventory_of,
)
from tests.e2e.mqtt_support import BROKER, over_mqtt, simulators_on_the_broker

pytestmark = pytest.mark.mqtt


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return over_mqtt(settings)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    yield from simulators_on_the_broker(http, container)


def _bound(acme: Tenant, sims: Simulators) -> tuple[str, SimulatedAutomat]:
    automat = install(acme)
    sim = sims.start(
        hw_id=f"RULES-{uuid.uuid4().hex[:8]}",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
    )
    sims.call(sim.stock, blank_iloq_keys(2))
    sims.call(sim.wait_bound, BIND_SECONDS)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    return automat["id"], sim


def _send(container: Container, hw_id: str, *messages: Outgoing) -> list[Message]:
    prefix = container.settings.mqtt_topic_prefix
    link = MqttLink(BROKER)
    return asyncio.run(exchange(link, prefix, hw_id, messages, answers=len(messages)))


def _lockers(acme: Tenant, automat_id: str) -> list[dict[str, Any]]:
    lockers: list[dict[str, Any]] = acme.api.get(f"/automats/{automat_id}")["lockers"]
    return lockers


def _inbox_ids(container: Container, automat_id: str) -> set[str]:
    return container.db.transaction(
        lambda s: set(
            s.scalars(
                select(device_inbox.c.message_id).where(device_inbox.c.automat_id == automat_id)
            )
        )
    )


def test_a_bad_inventory_over_the_broker_is_refused_with_an_alarm_and_its_correction_applied(
    acme: Tenant, http: TestClient, container: Container, sims: Simulators
) -> None:
    automat_id, sim = _bound(acme, sims)
    before = _lockers(acme, automat_id)
    counted_from_one = as_device(sim, "locker-inventory", inventory_of([1, 2, 3, 4]))

    answers = _send(container, sim.hw_id, counted_from_one)

    assert answer_to(answers, counted_from_one) == ("rejected", RejectReason.BAD_INVENTORY.value)
    assert _lockers(acme, automat_id) == before
    assert id_of(counted_from_one) not in _inbox_ids(container, automat_id)
    admin = admin_client(acme, http)
    alarms = admin.get(f"/admin/automats/{automat_id}/alarms")["data"]
    [alarm] = [a for a in alarms if a["alarmType"] == devices.BAD_INVENTORY_ALARM]
    assert alarm["state"] == "activated"

    corrected = as_device(sim, "locker-inventory", inventory_of(range(4)))
    assert answer_to(_send(container, sim.hw_id, corrected), corrected) == ("ack", None)
    assert [locker["isKeyInside"] for locker in _lockers(acme, automat_id)] == [False] * 4
    alarms = admin.get(f"/admin/automats/{automat_id}/alarms")["data"]
    [alarm] = [a for a in alarms if a["alarmType"] == devices.BAD_INVENTORY_ALARM]
    assert alarm["state"] == "deactivated"
    assert sim.last_rejection is None  # the refusal of another sender's message left it be


def test_an_event_about_a_locker_the_automat_does_not_have_is_refused_over_the_broker(
    acme: Tenant, container: Container, sims: Simulators
) -> None:
    automat_id, sim = _bound(acme, sims)
    before = _lockers(acme, automat_id)
    beyond = as_device(sim, "key-inserted", KeyEvent(locker_index=4, key_id="stray-key"))
    last = as_device(sim, "key-removed", KeyEvent(locker_index=3))

    answers = _send(container, sim.hw_id, beyond, last)

    assert answer_to(answers, beyond) == ("rejected", RejectReason.UNKNOWN_LOCKER.value)
    assert answer_to(answers, last) == ("ack", None)
    assert _lockers(acme, automat_id) == before
    inbox = _inbox_ids(container, automat_id)
    assert id_of(beyond) not in inbox
    assert id_of(last) in inbox


def test_an_alarm_from_a_device_clock_an_hour_ahead_over_the_broker_starts_at_receipt(
    acme: Tenant, http: TestClient, container: Container, sims: Simulators
) -> None:
    automat_id, sim = _bound(acme, sims)
    ahead = datetime.now(UTC) + timedelta(hours=1)
    raised = as_device(sim, "alarm-raised", AlarmEvent(alarm_type="DEVICE_ERROR"), at=ahead)
    cleared = as_device(sim, "alarm-cleared", AlarmEvent(alarm_type="DEVICE_ERROR"))

    answers = _send(container, sim.hw_id, raised, cleared)

    assert answer_to(answers, raised) == answer_to(answers, cleared) == ("ack", None)
    alarms = admin_client(acme, http).get(f"/admin/automats/{automat_id}/alarms")["data"]
    [alarm] = [a for a in alarms if a["alarmType"] == "DEVICE_ERROR"]
    assert alarm["end"] >= alarm["start"]
    suspect = container.db.transaction(
        lambda s: s.scalar(
            select(automat_events.c.clock_suspect).where(
                automat_events.c.source_message_id == id_of(raised)
            )
        )
    )
    assert suspect is True
