"""The whole iLOQ handover through the public API and a simulated automat (in-process link):
create, pincode at the automat, key programmed at that moment, taken, returned, wiped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from keyautomat.adapters.orm_iloq import iloq_emu_access_rights
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.contracts.iloq.kind import WIPE_KIND
from keyautomat.domain.iloq import IloqKey
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import iloq_keys as registry
from keyautomat.service_layer import outbox
from tests.conftest import Tenant
from tests.contract_helpers import iso
from tests.devices import FAST_DEVICE_SETTINGS, Simulators, eventually
from tests.iloq_helpers import bound_automat, first_key, on_system, seed_system, synced

PATH = "/iloq/keycontracts"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST_DEVICE_SETTINGS)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def run_default_handover(container: Container, acme: Tenant, sims: Simulators) -> None:
    system = seed_system(container, acme.unit_id)
    automat_id, sim, key_ids = bound_automat(acme, sims)
    now = datetime.now(UTC)
    created = acme.api.post(
        PATH,
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [system.front_door, system.sauna],
                "numberOfKeys": 1,
                "keyAutomatId": automat_id,
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=2)),
            }
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    key_id = created["keys"][0]["id"]
    assert key_id == key_ids[0]
    eventually(lambda: synced(sims, sim, code))
    # No key holds rights before its fetch.
    assert on_system(container, acme.unit_id, lambda s: s.log(key_id)) == []

    typed_at = datetime.now(UTC)
    assert sims.call(sim.enter_code, code)
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-fetched")
    log = on_system(container, acme.unit_id, lambda s: s.log(key_id))
    assert [entry.action for entry in log] == ["program"]
    assert set(log[0].access_right_ids) == {system.front_door, system.sauna}
    assert log[0].at >= typed_at - timedelta(seconds=1)  # programmed at the automat, just now
    assert key_id in sims.call(lambda: dict(sim.person.pocket) if sim.person else {})
    key = first_key(acme, created["id"])
    assert key["inHistory"] is False
    assert key["storageInfo"]["pincode"] == code  # default: the same code returns it (C9)

    assert sims.call(sim.enter_code, code)
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-returned")
    worker = OutboxWorker(container.db, container.dispatcher, container.clock)
    sims.call(worker.drain)
    log = on_system(container, acme.unit_id, lambda s: s.log(key_id))
    assert [entry.action for entry in log] == ["program", "wipe"]
    info = on_system(container, acme.unit_id, lambda s: s.key(key_id))
    assert info.is_blank


def test_a_default_contract_hands_out_a_programmed_key_and_gets_it_back_wiped(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    run_default_handover(container, acme, sims)


def test_a_fetch_contract_frees_the_locker_and_the_key_keeps_its_rights(
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
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code))
    assert sims.call(sim.enter_code, code)
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-fetched")
    key = first_key(acme, created["id"])
    assert key["inHistory"] is True
    assert key["storageInfo"]["pincode"] is None
    locker = acme.api.get(f"/automats/{automat_id}")["lockers"][0]
    assert locker["key"] is None  # free for other use
    info = on_system(container, acme.unit_id, lambda s: s.key(key_ids[0]))
    assert list(info.access_right_ids) == [system.storage]
    assert acme.api.get(f"{PATH}?ended=true")["data"][0]["id"] == created["id"]


def test_a_return_contract_takes_a_key_into_an_empty_locker(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    seed_system(container, acme.unit_id)
    automat_id, sim, _ = bound_automat(acme, sims, keys=1)
    created = acme.api.post(
        PATH,
        {"input": {"contractType": 3, "keyIds": ["returned-key-1"], "keyAutomatId": automat_id}},
    )
    key = created["keys"][0]
    assert key["storageInfo"]["deviceId"] == automat_id
    assert registered(container, "returned-key-1") is None  # naming a key claims nothing
    code = key["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code))
    assert sims.call(sim.enter_code, code)  # opens at once: nothing to program
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-returned")
    key = first_key(acme, created["id"])
    assert key["inHistory"] is True
    assert key["storageInfo"]["pincode"] is None
    lockers = acme.api.get(f"/automats/{automat_id}")["lockers"]
    assert any(locker["key"] and locker["key"]["id"] == "returned-key-1" for locker in lockers)
    arrived = registered(container, "returned-key-1")  # registered as it arrives (C17)
    assert arrived is not None
    assert arrived.organization_unit_id == acme.unit_id


def test_another_organizations_key_returned_into_our_locker_stays_its_owners_unwiped(
    container: Container, acme: Tenant, operator: Tenant, sims: Simulators
) -> None:
    seed_system(container, acme.unit_id)
    theirs = "0b0e3c4d-1111-4222-8333-444455556666"
    container.db.transaction(
        lambda s: registry.register_key(
            s, organization_unit_id=operator.unit_id, key_id=theirs, now=container.clock.now()
        )
    )
    automat_id, sim, _ = bound_automat(acme, sims, keys=1)
    created = acme.api.post(
        PATH, {"input": {"contractType": 3, "keyIds": [theirs], "keyAutomatId": automat_id}}
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code))
    assert sims.call(sim.enter_code, code)
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-returned")
    owned = registered(container, theirs)
    assert owned is not None
    assert (owned.organization_unit_id, owned.automat_id) == (operator.unit_id, None)
    wipes = container.db.transaction(lambda s: outbox.read(s, kinds=[WIPE_KIND]))
    assert [w for w in wipes if w.payload["keyId"] == theirs] == []


def registered(container: Container, key_id: str) -> IloqKey | None:
    return container.db.transaction(lambda s: s.get(IloqKey, key_id))


def test_a_failed_programming_keeps_the_locker_shut_and_the_code_valid(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    system = seed_system(container, acme.unit_id)
    automat_id, sim, _ = bound_automat(acme, sims)
    now = datetime.now(UTC)
    created = acme.api.post(
        PATH,
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [system.storage],
                "numberOfKeys": 1,
                "keyAutomatId": automat_id,
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=1)),
            }
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    # The right is withdrawn from the API after the contract was made: iLOQ refuses it.
    on_system(
        container,
        acme.unit_id,
        lambda s: s.session.execute(
            update(iloq_emu_access_rights)
            .where(iloq_emu_access_rights.c.id == system.storage)
            .values(api_enabled=False)
        ),
    )
    eventually(lambda: synced(sims, sim, code))
    for attempt in range(3):
        assert sims.call(sim.enter_code, code)

        def failed_again(n: int = attempt) -> bool:
            return _failures(container, created["id"]) == n + 1

        eventually(failed_again)
    assert first_key(acme, created["id"])["status"] is None
    assert sims.call(lambda: sim.lockers[0].key is not None)  # still inside
    alarms = acme.api.call("GET", f"/automats/{automat_id}")  # the automat is still there
    assert alarms["id"] == automat_id
    assert eventually(lambda: _alarm_raised(container, automat_id))


def _failures(container: Container, contract_id: str) -> int:
    from sqlalchemy import select

    from keyautomat.adapters.orm_contracts import contract_keys

    return int(
        container.db.transaction(
            lambda s: s.execute(
                select(contract_keys.c.program_failures).where(
                    contract_keys.c.contract_id == contract_id
                )
            ).scalar_one()
        )
    )


def _alarm_raised(container: Container, automat_id: str) -> bool:
    from sqlalchemy import select

    from keyautomat.adapters.orm_devices import device_alarms

    rows = container.db.transaction(
        lambda s: s.execute(
            select(device_alarms.c.alarm_type).where(device_alarms.c.automat_id == automat_id)
        ).all()
    )
    return any(r.alarm_type == "DEVICE_ERROR" for r in rows)
