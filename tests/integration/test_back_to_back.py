"""Back-to-back bookings at simulated automats (in-process link), on a clock the test moves:
the next contract's code opens only the locker its key is in, once the key is back; a
key late for the next start is told once; a key returned into another locker takes its
next contract with it (docs/contracts.md, "Back to back")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters.orm_contracts import contract_keys, contract_reservations
from keyautomat.adapters.orm_notify import notifications
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.config import Settings
from keyautomat.contracts import succession
from keyautomat.contracts.store import SqlContractStore
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer.clock import ManualClock
from keyautomat.simulator import SimKey, SimulatedAutomat
from tests.conftest import Tenant
from tests.contract_helpers import iso
from tests.devices import (
    BIND_SECONDS,
    FAST_DEVICE_SETTINGS,
    Simulators,
    admin_client,
    eventually,
    install,
)
from tests.iloq_helpers import CONTRACTS_PATH, bound_automat, first_key, on_system, seed_system
from tests.integration.webhook_support import live, subscribe
from tests.webhook_receiver import Receiver, running_receiver

DESK = "desk@acme.example"
GUEST_A = {"name": "Anna First", "email": "anna@example.com", "sendEmail": True}
GUEST_B = {"name": "Bert Next", "email": "bert@example.com", "sendEmail": True}
ROOM = SimKey("room-101-key", "Room 101", rfid="1a00d1")
MECHANICAL = "/mechanical/keycontracts"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


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
def container(settings: Settings, clock: ManualClock) -> Iterator[Container]:
    # The automats, the gateway, the worker and the API share the test's clock, which
    # each test moves by less than the five minutes the API allows a request signature.
    c = bootstrap(settings, clock=clock)
    yield c
    c.close()


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def worker(container: Container, clock: ManualClock) -> OutboxWorker:
    return OutboxWorker(container.db, container.dispatcher, clock, worker_id="w1", batch_size=50)


def staffed(acme: Tenant, http: TestClient, receiver: Receiver) -> None:
    """The unit's desk gets notices; its integration receives webhooks."""
    admin = admin_client(acme, http)
    admin.call(
        "PUT",
        f"/admin/organizationunits/{acme.unit_id}/notification-settings",
        {"adminEmail": DESK},
    )
    subscribe(admin, receiver, acme.unit_id)


def synced(sims: Simulators, sim: SimulatedAutomat, code: str) -> int | None:
    """The locker ``code`` opens at the simulated automat, or None when it does not hold it."""
    for p in sims.call(lambda: list(sim.pincodes.values())):
        if p.code == code:
            return int(p.locker_index)
    return None


def opens_now(sims: Simulators, sim: SimulatedAutomat, code: str, clock: ManualClock) -> bool:
    """The simulated automat holds ``code`` and would open for it now."""
    return any(
        p.code == code and p.opens_at(clock.now())
        for p in sims.call(lambda: list(sim.pincodes.values()))
    )


def messages(container: Container, contract_id: str | None, type_: str) -> int:
    """Messages of ``type_`` queued about the contract (None: notices to the unit's admins)."""
    n = notifications
    where = [n.c.type == type_]
    where.append(
        n.c.contract_id.is_(None) if contract_id is None else n.c.contract_id == contract_id
    )
    counted = container.db.transaction(
        lambda s: s.scalar(select(func.count()).select_from(n).where(*where))
    )
    return int(counted or 0)


def states(receiver: Receiver, contract_id: str, event_type: str) -> list[dict[str, Any]]:
    return [
        e["data"]
        for e in live(receiver)
        if e["type"] == event_type and e["data"]["contractObjectId"] == contract_id
    ]


def iloq_contract(
    acme: Tenant, right: str, key_id: str, start: datetime, end: datetime, contact: Any
) -> Any:
    return acme.api.post(
        CONTRACTS_PATH,
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [right],
                "keyIds": [key_id],
                "start": iso(start),
                "end": iso(end),
                "contact": contact,
            }
        },
    )


def test_a_next_guests_code_waits_for_a_key_returned_late_and_everyone_is_told_once(
    container: Container,
    acme: Tenant,
    http: TestClient,
    sims: Simulators,
    clock: ManualClock,
    worker: OutboxWorker,
    receiver: Receiver,
) -> None:
    staffed(acme, http, receiver)
    system = seed_system(container, acme.unit_id)
    right = system.sauna
    _, sim, [key_id] = bound_automat(acme, sims, clock=clock)
    now = clock.now()
    turnover = now + timedelta(minutes=2)
    a = iloq_contract(acme, right, key_id, now - timedelta(minutes=5), turnover, GUEST_A)
    b = iloq_contract(acme, right, key_id, turnover, turnover + timedelta(days=1), GUEST_B)
    code_a, code_b = (c["keys"][0]["storageInfo"]["pincode"] for c in (a, b))
    eventually(lambda: synced(sims, sim, code_a) == synced(sims, sim, code_b) == 0)

    assert sims.call(sim.enter_code, code_a)
    eventually(lambda: first_key(acme, a["id"])["status"] == "key-fetched")
    # The key is out: the next guest's code leaves the automat (the API still shows it).
    eventually(lambda: synced(sims, sim, code_b) is None)
    assert first_key(acme, b["id"])["storageInfo"]["pincode"] == code_b

    clock.set(turnover + timedelta(seconds=1))
    sims.call(worker.drain)
    assert first_key(acme, a["id"])["status"] == "key-not-returned"
    assert not sims.call(sim.enter_code, code_b)  # opens nothing while the key is out
    assert messages(container, b["id"], "contractKeyDelayed") == 1
    assert messages(container, None, "keyDelayed") == 1

    clock.advance(timedelta(minutes=1))
    # Past its end the first contract's code still opens its locker, for the return (C12).
    eventually(lambda: opens_now(sims, sim, code_a, clock))
    assert sims.call(sim.enter_code, code_a)  # the first guest brings the key back, late
    eventually(lambda: first_key(acme, a["id"])["status"] == "key-returned")
    eventually(lambda: synced(sims, sim, code_b) is not None)
    assert sims.call(sim.enter_code, code_b)
    eventually(lambda: first_key(acme, b["id"])["status"] == "key-fetched")
    programmed = on_system(container, acme.unit_id, lambda s: s.log(key_id))
    assert [(e.action, e.access_right_ids) for e in programmed] == [
        ("program", (system.sauna,)),
        ("program", (system.sauna,)),
    ]

    # A second run of the start's check, and the worker again, tell nobody anything more.
    container.db.transaction(
        lambda s: succession.check_late(
            SqlContractStore(s), container.contract_kinds, b["id"], 0, clock.now()
        )
    )
    sims.call(worker.drain)
    assert messages(container, b["id"], "contractKeyDelayed") == 1
    assert messages(container, b["id"], "contractKeyAvailable") == 1
    assert messages(container, None, "keyDelayed") == 1
    assert [s["state"] for s in states(receiver, b["id"], "key-status")] == [
        "key-delayed",
        "key-fetched",
    ]
    updates = states(receiver, b["id"], "contract-update")
    assert [u["pincode"] for u in updates] == [code_b, code_b]  # created, then available


def test_a_contract_booked_while_its_key_is_out_gets_its_code_when_the_key_is_back(
    container: Container, acme: Tenant, sims: Simulators, clock: ManualClock
) -> None:
    system = seed_system(container, acme.unit_id)
    right = system.front_door
    _, sim, [key_id] = bound_automat(acme, sims, clock=clock)
    now = clock.now()
    turnover = now + timedelta(hours=2)
    a = iloq_contract(acme, right, key_id, now - timedelta(minutes=5), turnover, GUEST_A)
    code_a = a["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code_a) is not None)
    assert sims.call(sim.enter_code, code_a)
    eventually(lambda: first_key(acme, a["id"])["status"] == "key-fetched")

    # Booked while the first guest holds the key: accepted, as before, and held.
    b = iloq_contract(acme, right, key_id, turnover, turnover + timedelta(days=1), GUEST_B)
    code_b = b["keys"][0]["storageInfo"]["pincode"]
    assert synced(sims, sim, code_b) is None
    assert sims.call(sim.enter_code, code_a)  # back well before the next start
    eventually(lambda: synced(sims, sim, code_b) is not None)
    assert messages(container, b["id"], "contractKeyAvailable") == 0  # nothing to tell


def mechanical_automat(acme: Tenant, sims: Simulators, clock: ManualClock) -> SimulatedAutomat:
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
        clock=clock,
    )
    sims.call(sim.stock, [ROOM])
    sims.call(sim.wait_bound, BIND_SECONDS)
    eventually(lambda: acme.api.get(f"/mechanical/keys/{ROOM.id}")["storage"] is not None)
    return sim


def test_a_key_returned_into_another_locker_stays_with_its_next_contract(
    container: Container, acme: Tenant, sims: Simulators, clock: ManualClock
) -> None:
    sim = mechanical_automat(acme, sims, clock)
    now = clock.now()
    turnover = now + timedelta(minutes=2)

    def book(start: datetime, end: datetime, contact: Any) -> Any:
        return acme.api.post(
            MECHANICAL,
            {
                "start": iso(start),
                "end": iso(end),
                "contact": contact,
                "keys": [{"id": ROOM.id}],
                "freeLockerAfterFetch": True,
            },
        )

    a = book(now - timedelta(minutes=5), turnover, GUEST_A)
    b = book(turnover, turnover + timedelta(days=1), GUEST_B)
    code_a, code_b = (c["keys"][0]["storageInfo"]["pincode"] for c in (a, b))
    eventually(lambda: synced(sims, sim, code_b) == 0)
    assert sims.call(sim.enter_code, code_a)  # the first guest takes the key from locker 0
    eventually(lambda: synced(sims, sim, code_b) is None)

    sims.call(sim.insert_key, 2, ROOM)  # and brings it back into locker 2 (F10)
    eventually(lambda: synced(sims, sim, code_b) == 2)
    ours = container.db.transaction(lambda s: _places(s, b["id"]))
    assert ours == {"key": 2, "reservations": [2]}
    assert acme.api.get(f"{MECHANICAL}/{a['id']}")["keys"][0]["inHistory"] is True

    clock.set(turnover + timedelta(seconds=1))
    assert sims.call(sim.enter_code, code_b)  # opens locker 2, where the key is
    eventually(
        lambda: acme.api.get(f"{MECHANICAL}/{b['id']}")["keys"][0]["status"] == "key-fetched"
    )
    assert sims.call(lambda: sim.openings[-1]) == 2


def _places(session: Session, contract_id: str) -> dict[str, Any]:
    key = session.scalar(
        select(contract_keys.c.locker_index).where(contract_keys.c.contract_id == contract_id)
    )
    r = contract_reservations
    held = session.scalars(select(r.c.locker_index).where(r.c.contract_id == contract_id))
    return {"key": key, "reservations": list(held)}
