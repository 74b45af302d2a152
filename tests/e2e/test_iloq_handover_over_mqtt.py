"""A default iLOQ contract end to end over a real Mosquitto broker: created through the
signed API, the pincode sent to the automat (sendPincode), the key programmed at that
moment (the emulator's log), taken, returned with the same code, and wiped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.adapters.device_links import MqttLink
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.simulator import SimulatedAutomat, blank_iloq_keys
from tests.conftest import Tenant
from tests.contract_helpers import iso
from tests.devices import FAST_DEVICE_SETTINGS, Simulators, eventually, install
from tests.iloq_helpers import on_system, seed_system
from tests.services import MQTT_HOST, MQTT_PORT, need

pytestmark = pytest.mark.mqtt
BROKER = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"
PATH = "/iloq/keycontracts"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    need("MQTT", MQTT_HOST, MQTT_PORT)
    run = uuid.uuid4().hex[:10]
    return settings.model_copy(
        update={
            **FAST_DEVICE_SETTINGS,
            "device_ack_timeout_seconds": 2.0,
            "mqtt_url": BROKER,
            "mqtt_topic_prefix": f"test-{run}/keyautomat/v1",
            "mqtt_client_id": f"gw-{run}",
        }
    )


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container, link=MqttLink(BROKER))
    yield simulators
    simulators.stop_all()


def _key(acme: Tenant, contract_id: str) -> dict[str, Any]:
    key: dict[str, Any] = acme.api.get(f"{PATH}/{contract_id}")["keys"][0]
    return key


def _synced(sims: Simulators, sim: SimulatedAutomat, code: str) -> bool:
    return any(p.code == code for p in sims.call(lambda: list(sim.pincodes.values())))


def test_a_default_contract_over_mqtt_programs_the_key_when_the_pincode_is_sent(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    system = seed_system(container, acme.unit_id)
    automat = install(acme)
    sim = sims.start(
        hw_id=f"SIM-{automat['id']}",
        product="key20",
        locker_count=3,
        installation_pincode=automat["installationPincode"],
    )
    stock = blank_iloq_keys(1)
    sim.stock(stock)
    sims.call(sim.wait_bound, 10.0)
    eventually(
        lambda: any(
            locker["isKeyInside"]
            for locker in acme.api.get(f"/automats/{automat['id']}")["lockers"]
        )
    )
    now = datetime.now(UTC)
    created = acme.api.post(
        PATH,
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [system.front_door],
                "numberOfKeys": 1,
                "keyAutomatId": automat["id"],
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=1)),
            }
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    key_id = created["keys"][0]["id"]
    assert key_id == stock[0].id
    eventually(lambda: _synced(sims, sim, code))
    assert on_system(container, acme.unit_id, lambda s: s.log(key_id)) == []  # no rights yet

    sent_at = datetime.now(UTC)
    result = acme.api.post(f"/automats/{automat['id']}/sendPincode", {"pincode": code})
    assert result == {"success": True, "reason": None}
    eventually(lambda: _key(acme, created["id"])["status"] == "key-fetched")
    log = on_system(container, acme.unit_id, lambda s: s.log(key_id))
    assert [entry.action for entry in log] == ["program"]
    assert list(log[0].access_right_ids) == [system.front_door]
    assert sent_at - timedelta(seconds=1) <= log[0].at <= datetime.now(UTC)
    key = _key(acme, created["id"])
    assert key["inHistory"] is False
    assert key["storageInfo"]["pincode"] == code

    assert sims.call(sim.enter_code, code)  # the guest brings it back
    eventually(lambda: _key(acme, created["id"])["status"] == "key-returned")
    sims.call(OutboxWorker(container.db, container.dispatcher, container.clock).drain)
    log = on_system(container, acme.unit_id, lambda s: s.log(key_id))
    assert [entry.action for entry in log] == ["program", "wipe"]
    assert on_system(container, acme.unit_id, lambda s: s.key(key_id)).is_blank
