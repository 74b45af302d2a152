"""Device keys of mechanical contracts at a simulated key30 automat (in-process link)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.simulator import SimKey, SimulatedAutomat
from tests.conftest import Tenant
from tests.contract_helpers import period
from tests.devices import FAST_DEVICE_SETTINGS, Simulators, eventually, install

PATH = "/mechanical/keycontracts"
ROOM = SimKey("room-101-key", "Room 101", rfid="1a00d1")
CONTACT = {"name": "John Doe", "email": "john.doe@example.com"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST_DEVICE_SETTINGS)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def _automat(acme: Tenant, sims: Simulators) -> tuple[str, SimulatedAutomat]:
    automat = install(acme, product="key30")
    acme.api.post(
        "/mechanical/keys",
        {
            "id": ROOM.id,
            "rfidHex": ROOM.rfid,
            "away": True,
            "selectedStorage": {"automatId": automat["id"]},
        },
    )
    sim = sims.start(
        hw_id=f"SIM-{automat['id']}",
        product="key30",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
    )
    sims.call(sim.stock, [ROOM])
    sims.call(sim.wait_bound, 5.0)
    sims.call(sim.wait_flushed, 5.0)
    eventually(lambda: acme.api.get(f"/mechanical/keys/{ROOM.id}")["storage"] is not None)
    return automat["id"], sim


def _key(acme: Tenant, contract_id: str) -> dict[str, Any]:
    key: dict[str, Any] = acme.api.get(f"{PATH}/{contract_id}")["keys"][0]
    return key


def _synced(sims: Simulators, sim: SimulatedAutomat, code: str) -> bool:
    return any(p.code == code for p in sims.call(lambda: list(sim.pincodes.values())))


@pytest.mark.parametrize("free_locker", [False, True])
def test_fetch_with_pincode_and_return(acme: Tenant, sims: Simulators, free_locker: bool) -> None:
    automat_id, sim = _automat(acme, sims)
    start, end = period()
    created = acme.api.post(
        PATH,
        {
            "start": start,
            "end": end,
            "contact": CONTACT,
            "keys": [{"id": ROOM.id}],
            "freeLockerAfterFetch": free_locker,
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: _synced(sims, sim, code))
    assert sims.call(sim.enter_code, code)
    sims.call(sim.take_key, 0)
    sims.call(sim.wait_flushed, 5.0)
    eventually(lambda: _key(acme, created["id"])["status"] == "key-fetched")
    assert acme.api.get(f"/mechanical/keys/{ROOM.id}")["storage"] is None
    back_into = 2 if free_locker else 0
    sims.call(sim.insert_key, back_into, ROOM)
    sims.call(sim.wait_flushed, 5.0)
    eventually(lambda: _key(acme, created["id"])["status"] == "key-returned")
    key = _key(acme, created["id"])
    assert key["inHistory"] is free_locker
    assert acme.api.get(f"/mechanical/keys/{ROOM.id}")["storage"] == {"automatId": automat_id}
