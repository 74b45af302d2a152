"""Device keys of mechanical contracts at a simulated key30 automat (in-process link)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters.orm_contracts import contracts
from keyautomat.bootstrap import Container
from keyautomat.client import ApiError
from keyautomat.config import Settings
from keyautomat.contracts.progress import evaluate_end
from keyautomat.contracts.store import SqlContractStore
from keyautomat.simulator import SimKey, SimulatedAutomat
from tests.conftest import Tenant
from tests.contract_helpers import iso, period
from tests.devices import BIND_SECONDS, FAST_DEVICE_SETTINGS, Simulators, bound_key30, eventually

PATH = "/mechanical/keycontracts"
ROOM = SimKey("room-101-key", "Room 101", rfid="1a00d1")
GARAGE = SimKey("garage-key", "Garage", rfid="1a00d2")
CONTACT = {"name": "John Doe", "email": "john.doe@example.com"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST_DEVICE_SETTINGS)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def _automat(
    acme: Tenant, sims: Simulators, keys: tuple[SimKey, ...] = (ROOM,)
) -> tuple[str, SimulatedAutomat]:
    """A bound key30 with ``keys`` registered and stocked in lockers 0, 1, ..."""
    automat, sim = bound_key30(acme, sims, keys)
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
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(lambda: _key(acme, created["id"])["status"] == "key-fetched")
    assert acme.api.get(f"/mechanical/keys/{ROOM.id}")["storage"] is None
    back_into = 2 if free_locker else 0
    sims.call(sim.insert_key, back_into, ROOM)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(lambda: _key(acme, created["id"])["status"] == "key-returned")
    key = _key(acme, created["id"])
    assert key["inHistory"] is free_locker
    # A spent code is "", not null: the vendor's type is a string (docs/api.md).
    assert key["storageInfo"] == {
        "pincode": "" if free_locker else code,
        "automatId": automat_id,
    }
    assert acme.api.get(f"/mechanical/keys/{ROOM.id}")["storage"] == {"automatId": automat_id}


def test_a_key_still_out_at_the_end_is_not_returned_once_and_its_code_still_returns_it(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    _automat(acme, sims)
    start, end = period()
    created = acme.api.post(
        PATH, {"start": start, "end": end, "contact": CONTACT, "keys": [{"id": ROOM.id}]}
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: _synced(sims, sim_of(sims), code))
    sim = sim_of(sims)
    assert sims.call(sim.enter_code, code)
    sims.call(sim.take_key, 0)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(lambda: _key(acme, created["id"])["status"] == "key-fetched")

    def end_now(session: Session) -> int:
        internal = session.scalar(select(contracts.c.id).where(contracts.c.kind == "mechanical"))
        assert internal is not None
        return evaluate_end(SqlContractStore(session), internal, datetime.now(UTC))

    assert container.db.transaction(end_now) == 1
    assert container.db.transaction(end_now) == 0  # once
    assert _key(acme, created["id"])["status"] == "key-not-returned"
    with pytest.raises(ApiError):
        acme.api.delete(f"{PATH}/{created['id']}")  # a key is out
    sims.call(sim.insert_key, 0, ROOM)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(lambda: _key(acme, created["id"])["status"] == "key-returned")
    assert _key(acme, created["id"])["inHistory"] is True


def sim_of(sims: Simulators) -> SimulatedAutomat:
    return sims.running[0][0]


def test_a_key_returned_into_another_contracts_locker_is_that_keys_return(
    acme: Tenant, sims: Simulators
) -> None:
    """Contract A keeps locker 0 for its key, which is out; contract B freed its key's
    locker at the fetch. B's key put back into locker 0 is B's return, not ignored
    because A's key also belongs in that locker."""
    _, sim = _automat(acme, sims, (ROOM, GARAGE))
    now = datetime.now(UTC)
    end = iso(now + timedelta(days=1))
    first = acme.api.post(
        PATH,
        {
            "start": iso(now - timedelta(hours=2)),
            "end": end,
            "contact": CONTACT,
            "keys": [{"id": ROOM.id}],
        },
    )
    second = acme.api.post(
        PATH,
        {
            "start": iso(now - timedelta(hours=1)),
            "end": end,
            "contact": CONTACT,
            "keys": [{"id": GARAGE.id}],
            "freeLockerAfterFetch": True,
        },
    )

    def fetch(contract: dict[str, Any], locker: int) -> None:
        code = contract["keys"][0]["storageInfo"]["pincode"]
        eventually(lambda: _synced(sims, sim, code))
        assert sims.call(sim.enter_code, code)
        sims.call(sim.take_key, locker)
        sims.call(sim.wait_flushed, BIND_SECONDS)
        eventually(lambda: _key(acme, contract["id"])["status"] == "key-fetched")

    fetch(first, 0)
    fetch(second, 1)
    sims.call(sim.insert_key, 0, GARAGE)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(lambda: _key(acme, second["id"])["status"] == "key-returned")
    assert _key(acme, first["id"])["status"] == "key-fetched"
