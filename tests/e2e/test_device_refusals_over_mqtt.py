"""Refusals over a real Mosquitto: a malformed event is answered naming its field and the
device drops it; a replaced device wipes its codes and its token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from keyautomat.adapters.device_protocol import LockerEvent, RejectReason
from keyautomat.adapters.orm_devices import device_inbox
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from tests.conftest import Tenant
from tests.devices import BIND_SECONDS, Simulators, eventually, install
from tests.e2e.mqtt_support import over_mqtt, simulators_on_the_broker
from tests.integration.test_device_gateway import _add_pincode, _count

pytestmark = pytest.mark.mqtt


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return over_mqtt(settings)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    yield from simulators_on_the_broker(http, container)


def test_a_malformed_event_over_the_broker_is_refused_naming_its_field_and_never_resent(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat = install(acme)
    sim = sims.start(
        hw_id=f"BUGGY-{uuid.uuid4().hex[:8]}",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
    )
    sims.call(sim.wait_bound, BIND_SECONDS)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    bad = sims.call(sim.queue_event, "locker-closed", LockerEvent.model_construct(locker_index=-1))
    sims.call(sim.raise_alarm, "DEVICE_MOVED")

    sims.call(sim.wait_flushed, BIND_SECONDS)
    [refusal] = [r for r in sim.refusals if r.ref == bad]
    assert (refusal.reason, refusal.pointer) == (RejectReason.MALFORMED, "/data/lockerIndex")
    assert _count(container, device_inbox, automat["id"], type="alarm-raised") == 1
    assert _count(container, device_inbox, automat["id"], message_id=bad) == 0


def test_a_replaced_device_over_the_broker_wipes_its_codes_and_stops_sending_events(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat = install(acme)
    sim = sims.start(
        hw_id=f"OLD-{uuid.uuid4().hex[:8]}",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
    )
    sims.call(sim.wait_bound, BIND_SECONDS)
    _add_pincode(container, automat["id"], "737373", 0, "default")
    eventually(lambda: sim.pincodes, timeout=10.0)

    acme.api.post(f"/automats/{automat['id']}/replace")
    sims.call(sim.raise_alarm, "DEVICE_MOVED")
    eventually(lambda: sim.last_rejection == RejectReason.REPLACED, timeout=10.0)
    assert (sim.token, sim.pincodes, dict(sim.outbox)) == (None, {}, {})
    assert sims.call(sim.enter_code, "737373") is False
    assert not sim.welcomed.is_set()  # no heartbeats, no events: it waits for a code
