"""A device with only MQTT 3.1.1 works with the gateway (which speaks MQTT 5) over a real
Mosquitto: the protocol needs topics, payloads and QoS 1, nothing of MQTT 5."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from keyautomat.adapters.device_links import MqttLink
from keyautomat.adapters.orm_devices import device_inbox
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from tests.conftest import Tenant
from tests.devices import BIND_SECONDS, Simulators, eventually, install
from tests.e2e.mqtt_support import BROKER, over_mqtt
from tests.integration.test_device_gateway import _add_pincode, _count

pytestmark = pytest.mark.mqtt


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return over_mqtt(settings)


@pytest.fixture
def sims_on_311(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container, link=MqttLink(BROKER, mqtt_version="3.1.1"))
    yield simulators
    simulators.stop_all()


def test_a_device_speaking_mqtt_311_binds_gets_its_codes_and_answers_a_remote_code(
    acme: Tenant, sims_on_311: Simulators, container: Container
) -> None:
    automat = install(acme)
    sim = sims_on_311.start(
        hw_id=f"V311-{uuid.uuid4().hex[:8]}",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
    )
    sims_on_311.call(sim.wait_bound, BIND_SECONDS)
    sims_on_311.call(sim.wait_flushed, BIND_SECONDS)  # its inventory: acknowledged
    assert len(acme.api.get(f"/automats/{automat['id']}")["lockers"]) == 4

    pincode_id = _add_pincode(container, automat["id"], "515151", 2, "default")
    eventually(lambda: pincode_id in sim.pincodes, timeout=10.0)  # a sync, acknowledged
    result = acme.api.post(f"/automats/{automat['id']}/sendPincode", {"pincode": "515151"})
    assert result == {"success": True, "reason": None}  # a command, acknowledged

    sims_on_311.call(sim.wait_flushed, BIND_SECONDS)
    assert _count(container, device_inbox, automat["id"], type="code-entered") == 1
    assert _count(container, device_inbox, automat["id"], type="locker-opened") == 1
