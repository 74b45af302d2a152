"""The demo organization's key30 holds registered mechanical keys with stable ids."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.entrypoints.demo import (
    DEMO_MECHANICAL_KEYS,
    DemoAccess,
    DemoAutomat,
    demo_automats,
    seed_demo,
)
from keyautomat.simulator import SimKey
from tests.conftest import TEST_BASE
from tests.devices import BIND_SECONDS, FAST_DEVICE_SETTINGS, Simulators, eventually


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST_DEVICE_SETTINGS)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def seed(container: Container) -> DemoAccess:
    return container.db.transaction(
        lambda s: seed_demo(
            s, secrets=container.secrets, now=container.clock.now(), known_fingerprint=None
        )
    )


def key30_of(container: Container, access: DemoAccess) -> DemoAutomat:
    automats = container.db.transaction(lambda s: demo_automats(s, access.organization_unit_id))
    [key30] = [a for a in automats if a.product == "key30"]
    assert all(not a.mechanical_keys for a in automats if a.product != "key30")
    return key30


def test_the_demo_registers_its_mechanical_keys_once_in_the_key30(container: Container) -> None:
    access = seed(container)
    key30 = key30_of(container, access)
    assert [k.id for k in key30.mechanical_keys] == [k.id for k in DEMO_MECHANICAL_KEYS]
    assert key30.mechanical_keys[0].name == "Room 101"
    seed(container)
    assert key30_of(container, access).mechanical_keys == key30.mechanical_keys


def test_the_demo_key30_simulator_makes_the_demo_keys_available(
    container: Container, http: TestClient, sims: Simulators
) -> None:
    access = seed(container)
    assert access.private_key_pem is not None
    api = Client(TEST_BASE, access.service_account_id, access.private_key_pem, http=http)
    key30 = key30_of(container, access)
    keys = api.get("/mechanical/keys?limit=100&selectedStorage=1")["data"]
    assert [k["id"] for k in keys] == [k.id for k in DEMO_MECHANICAL_KEYS]
    assert all(k["storage"] is None for k in keys)  # until the automat reports them
    sim = sims.start(
        hw_id=f"DEMO-{key30.id}",
        product="key30",
        locker_count=30,
        installation_pincode=key30.installation_pincode,
    )
    sims.call(sim.stock, [SimKey(k.id, k.name, rfid=k.rfid_hex) for k in key30.mechanical_keys])
    sims.call(sim.wait_bound, BIND_SECONDS)

    def all_available() -> bool:
        data = api.get("/mechanical/keys?limit=100&selectedStorage=1")["data"]
        return all(k["storage"] == {"automatId": key30.id} for k in data)

    eventually(all_available)
    lockers = api.get(f"/automats/{key30.id}")["lockers"]
    assert lockers[0]["key"] == {"id": "room-101-key", "name": "Room 101"}
