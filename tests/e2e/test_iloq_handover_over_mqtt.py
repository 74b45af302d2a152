"""Each iLOQ contract type end to end over a real Mosquitto broker, through the signed API.

Default (1): the pincode sent to the automat (sendPincode), the key programmed at that
moment (the emulator's log), taken, returned with the same code, and wiped. Fetch (2): the
key programmed when its code is sent, taken for good, the locker freed, the rights kept.
Return (3): an empty reserved locker opens on the code, takes the key, and it is wiped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from keyautomat.adapters.orm import outbox
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.simulator import blank_iloq_keys
from tests.conftest import Tenant
from tests.contract_helpers import iso
from tests.devices import Simulators, eventually
from tests.e2e.mqtt_support import over_mqtt, simulators_on_the_broker
from tests.iloq_helpers import bound_automat, first_key, on_system, seed_system, synced

pytestmark = pytest.mark.mqtt
PATH = "/iloq/keycontracts"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return over_mqtt(settings)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    yield from simulators_on_the_broker(http, container)


def test_a_default_contract_over_mqtt_programs_the_key_when_the_pincode_is_sent(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    system = seed_system(container, acme.unit_id)
    automat_id, sim, stock = bound_automat(acme, sims)
    now = datetime.now(UTC)
    created = acme.api.post(
        PATH,
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [system.front_door],
                "numberOfKeys": 1,
                "keyAutomatId": automat_id,
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=1)),
            }
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    key_id = created["keys"][0]["id"]
    assert key_id == stock[0]
    eventually(lambda: synced(sims, sim, code))
    assert on_system(container, acme.unit_id, lambda s: s.log(key_id)) == []  # no rights yet

    sent_at = datetime.now(UTC)
    result = acme.api.post(f"/automats/{automat_id}/sendPincode", {"pincode": code})
    assert result == {"success": True, "reason": None}
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-fetched")
    log = on_system(container, acme.unit_id, lambda s: s.log(key_id))
    assert [entry.action for entry in log] == ["program"]
    assert list(log[0].access_right_ids) == [system.front_door]
    assert sent_at - timedelta(seconds=1) <= log[0].at <= datetime.now(UTC)
    key = first_key(acme, created["id"])
    assert key["inHistory"] is False
    assert key["storageInfo"]["pincode"] == code

    assert sims.call(sim.enter_code, code)  # the guest brings it back
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-returned")
    sims.call(OutboxWorker(container.db, container.dispatcher, container.clock).drain)
    log = on_system(container, acme.unit_id, lambda s: s.log(key_id))
    assert [entry.action for entry in log] == ["program", "wipe"]
    assert on_system(container, acme.unit_id, lambda s: s.key(key_id)).is_blank


def test_a_fetch_contract_over_mqtt_frees_the_locker_and_the_key_keeps_its_rights(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    system = seed_system(container, acme.unit_id)
    automat_id, sim, key_ids = bound_automat(acme, sims)
    created = acme.api.post(
        PATH,
        {
            "input": {
                "contractType": 2,
                "accessRightIds": [system.storage],
                "keyIds": key_ids,
                "start": iso(datetime.now(UTC) - timedelta(minutes=1)),
            }
        },
    )
    key_id = created["keys"][0]["id"]
    assert key_id == key_ids[0]
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code))
    assert on_system(container, acme.unit_id, lambda s: s.log(key_id)) == []  # no rights yet

    sent_at = datetime.now(UTC)
    result = acme.api.post(f"/automats/{automat_id}/sendPincode", {"pincode": code})
    assert result == {"success": True, "reason": None}
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-fetched")
    log = on_system(container, acme.unit_id, lambda s: s.log(key_id))
    assert [entry.action for entry in log] == ["program"]
    assert list(log[0].access_right_ids) == [system.storage]
    assert sent_at - timedelta(seconds=1) <= log[0].at <= datetime.now(UTC)
    assert key_id in sims.call(lambda: dict(sim.person.pocket) if sim.person else {})
    key = first_key(acme, created["id"])
    assert key["inHistory"] is True
    assert key["storageInfo"]["pincode"] is None
    eventually(lambda: acme.api.get(f"/automats/{automat_id}")["lockers"][0]["key"] is None)

    # A fetched key is gone for good: nothing wipes it, it keeps its rights.
    sims.call(OutboxWorker(container.db, container.dispatcher, container.clock).drain)
    log = on_system(container, acme.unit_id, lambda s: s.log(key_id))
    assert [entry.action for entry in log] == ["program"]
    info = on_system(container, acme.unit_id, lambda s: s.key(key_id))
    assert list(info.access_right_ids) == [system.storage]
    assert not info.is_blank


def test_a_return_contract_over_mqtt_takes_the_key_into_the_empty_locker_and_wipes_it(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    seed_system(container, acme.unit_id)
    automat_id, sim, stock = bound_automat(acme, sims, keys=1)
    returned = blank_iloq_keys(1)[0]  # a key the service has never seen (C17)
    assert on_system(container, acme.unit_id, lambda s: s.key(returned.id)) is None
    created = acme.api.post(
        PATH,
        {"input": {"contractType": 3, "keyIds": [returned.id], "keyAutomatId": automat_id}},
    )
    key = created["keys"][0]
    assert key["id"] == returned.id
    assert key["storageInfo"]["deviceId"] == automat_id
    code = key["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code))
    locker_index = next(
        p.locker_index for p in sims.call(lambda: list(sim.pincodes.values())) if p.code == code
    )
    assert sims.call(lambda: sim.lockers[locker_index].key) is None  # reserved and empty

    def hold_the_key() -> None:
        assert sim.person is not None
        sim.person.pocket[returned.id] = returned

    sims.call(hold_the_key)
    assert sims.call(sim.enter_code, code)  # opens at once: nothing to program
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-returned")
    assert sims.call(lambda: sim.lockers[locker_index].key) == returned
    key = first_key(acme, created["id"])
    assert key["inHistory"] is True
    assert key["storageInfo"]["pincode"] is None
    lockers = {
        int(locker["lockerIndex"]): locker
        for locker in acme.api.get(f"/automats/{automat_id}")["lockers"]
    }
    assert lockers[locker_index]["key"]["id"] == returned.id  # registered in that locker
    assert lockers[locker_index]["isKeyInside"] is True
    stocked = next(i for i, lk in lockers.items() if lk["key"] and lk["key"]["id"] == stock[0])
    inside = sorted(i for i, locker in lockers.items() if locker["isKeyInside"])
    assert inside == sorted({stocked, locker_index})  # the stocked key was not disturbed

    sims.call(OutboxWorker(container.db, container.dispatcher, container.clock).drain)
    # Enrolled in iLOQ by the wipe job (C17): blank, and the job did not fail.
    info = on_system(container, acme.unit_id, lambda s: s.key(returned.id))
    assert info is not None
    assert info.is_blank
    assert _outbox_statuses(container, "iloq-wipe") == ["done"]


def _outbox_statuses(container: Container, kind: str) -> list[str]:
    return container.db.transaction(
        lambda s: list(s.scalars(select(outbox.c.status).where(outbox.c.kind == kind)))
    )
