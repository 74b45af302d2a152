"""Lost keys on both engines (docs/contracts.md, "Lost keys"): an iLOQ key blocklisted in the
emulator, out of its contract, and a replacement programmed with the same rights when its
user takes it at a simulated automat; the same blocklisting through the S5 client against
the emulator's HTTP server; a mechanical key no longer offered, its contracts told. Each
event and message once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from keyautomat.adapters.orm_mechanical import mechanical_contracts, mechanical_keys
from keyautomat.adapters.orm_notify import notifications
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.contracts import progress
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.iloq import IloqKey
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import iloq_keys as registry
from keyautomat.service_layer import lockers
from keyautomat.service_layer.iloq import ensure_key
from tests.conftest import TEST_BASE, Tenant, make_tenant
from tests.contract_helpers import RIGHT, iso, stocked_automat
from tests.devices import FAST_DEVICE_SETTINGS, Simulators, admin_client, eventually, install
from tests.iloq_helpers import CONTRACTS_PATH, bound_automat, on_system, seed_system, synced
from tests.integration.iloq_support import EmulatorServer, serve_emulator
from tests.integration.webhook_support import live, subscribe
from tests.webhook_receiver import Receiver, running_receiver

GUEST = {"name": "Anna Guest", "email": "anna@example.com", "sendEmail": True}
PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={**FAST_DEVICE_SETTINGS, "webhooks_allow_private": True})


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


def count(container: Container, contract_id: str, type_: str) -> int:
    n = notifications
    found = container.db.transaction(
        lambda s: s.scalar(
            select(func.count())
            .select_from(n)
            .where(n.c.contract_id == contract_id, n.c.type == type_)
        )
    )
    return int(found or 0)


def drain(container: Container, sims: Simulators | None = None) -> None:
    worker = OutboxWorker(container.db, container.dispatcher, container.clock)
    if sims is not None:
        sims.call(worker.drain)
    else:
        asyncio.run(worker.drain())


def keys_of(api: Client, contract_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.get(f"{CONTRACTS_PATH}/{contract_id}")["keys"]
    return found


def test_a_lost_iloq_key_is_blocklisted_and_replaced_by_a_key_given_the_same_rights(
    container: Container,
    acme: Tenant,
    http: TestClient,
    sims: Simulators,
    receiver: Receiver,
) -> None:
    admin = admin_client(acme, http)
    subscribe(admin, receiver, acme.unit_id)
    system = seed_system(container, acme.unit_id)
    automat_id, sim, stock = bound_automat(acme, sims, keys=2)
    now = datetime.now(UTC).replace(microsecond=0)
    created = acme.api.post(
        CONTRACTS_PATH,
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [system.front_door, system.sauna],
                "keyIds": [stock[0]],
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=2)),
                "contact": GUEST,
            }
        },
    )
    lost_key, spare = stock
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code))
    assert sims.call(sim.enter_code, code)
    eventually(lambda: keys_of(acme.api, created["id"])[0]["status"] == "key-fetched")

    refused = admin.request("POST", f"/admin/iloq/keys/{spare}/lost", {})
    assert refused.status_code == 400  # the spare is in its locker: not lost
    assert refused.json()["message"][0].startswith("keyId: is inside locker")

    report = admin.post(f"/admin/iloq/keys/{lost_key}/lost", {"replace": True})
    [outcome] = report["contracts"]
    assert (report["keyId"], report["blocklisted"], outcome["id"]) == (
        lost_key,
        True,
        created["id"],
    )
    new_code = outcome["replacement"]["pincode"]
    assert outcome["replacement"]["keyId"] == spare
    assert on_system(container, acme.unit_id, lambda s: s.is_blocklisted(lost_key))
    assert [e.action for e in on_system(container, acme.unit_id, lambda s: s.log(lost_key))] == [
        "program",
        "blocklist",
    ]
    lost, replacement = keys_of(acme.api, created["id"])
    assert (lost["id"], lost["status"], lost["inHistory"]) == (lost_key, "key-lost", True)
    assert lost["storageInfo"]["pincode"] is None
    assert (replacement["id"], replacement["status"]) == (spare, None)
    assert replacement["storageInfo"] == {"deviceId": automat_id, "pincode": new_code}
    registered = container.db.transaction(lambda s: s.get(IloqKey, lost_key))
    assert registered is not None
    assert registered.blocked

    # The replacement is programmed when its user takes it, with the contract's rights.
    eventually(lambda: synced(sims, sim, new_code))
    assert not synced(sims, sim, code)
    assert sims.call(sim.enter_code, new_code)
    eventually(lambda: keys_of(acme.api, created["id"])[1]["status"] == "key-fetched")
    first, second = (
        on_system(container, acme.unit_id, lambda s, k=k: s.log(k))[0] for k in (lost_key, spare)
    )
    assert set(second.access_right_ids) == set(first.access_right_ids)
    assert (second.valid_from, second.valid_until) == (first.valid_from, first.valid_until)

    # A second report finds nothing more to do and tells nobody anything.
    again = admin.post(f"/admin/iloq/keys/{lost_key}/lost", {"replace": True})
    assert (again["blocklisted"], again["contracts"]) == (True, [])
    drain(container, sims)
    assert count(container, created["id"], "contractUpdated") == 1
    assert count(container, created["id"], "contractKeyFetched") == 2
    events = [e for e in live(receiver) if e["data"].get("contractObjectId") == created["id"]]
    states = [(e["data"]["keyId"], e["data"]["state"]) for e in events if e["type"] == "key-status"]
    assert states == [(lost_key, "key-fetched"), (lost_key, "key-lost"), (spare, "key-fetched")]
    updates = [e["data"] for e in events if e["type"] == "contract-update"]
    assert [(u["keyId"], u["pincode"]) for u in updates] == [(lost_key, code), (spare, new_code)]


def test_an_unknown_or_foreign_iloq_key_is_not_found_and_integrations_may_not_report(
    container: Container, acme: Tenant, acme_pms: Tenant, operator: Tenant, http: TestClient
) -> None:
    admin = admin_client(acme, http)
    assert admin.request("POST", "/admin/iloq/keys/nobody-has-it/lost", {}).status_code == 404
    _, [theirs] = stocked_automat(container, operator, keys=1)
    # Another organization's key, even one in a locker, is not the caller's to report.
    assert admin.request("POST", f"/admin/iloq/keys/{theirs}/lost", {}).status_code == 404
    # Registered to us but inside another organization's automat: not lost, and their automat
    # is not named.
    container.db.transaction(
        lambda s: registry.register_key(
            s, organization_unit_id=acme.unit_id, key_id=theirs, now=container.clock.now()
        )
    )
    inside = admin.request("POST", f"/admin/iloq/keys/{theirs}/lost", {})
    assert inside.status_code == 400
    assert inside.json()["message"] == [
        "keyId: is inside a locker of an automat: only a key that is out can be lost"
    ]
    refused = admin_client(acme_pms, http).request("POST", "/admin/iloq/keys/k/lost", {})
    assert refused.status_code == 403
    bad = admin.request("POST", "/admin/iloq/keys/k/lost", {"replace": "yes"})
    assert bad.status_code == 400
    assert bad.json()["message"][0].startswith("replace")


# --- the S5 client against the emulator's HTTP server --------------------------------------


@pytest.fixture
def live_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"iloq_mode": "live", "iloq_allow_private": True})


@pytest.fixture
def live_container(live_settings: Settings) -> Iterator[Container]:
    c = bootstrap(live_settings)
    yield c
    c.close()


@pytest.fixture
def emulator_server(live_settings: Settings) -> Iterator[EmulatorServer]:
    yield from serve_emulator(live_settings)


def test_the_s5_client_blocklists_a_lost_key_on_the_emulators_http_server(
    live_container: Container, emulator_server: EmulatorServer
) -> None:
    container = live_container
    with TestClient(create_app(container), base_url="http://testserver") as http:
        operator = make_tenant(container, http, name="Platform")
        unit = operator.api.post(
            "/organizationUnits",
            {
                "type": 1,
                "name": "Live Housing",
                "customerId": "live",
                "iloqApiUser": {
                    "username": "api.keyautomat",
                    "password": PASSWORD,
                    "customerCode": "LIVE-S5",
                    "serviceAddress": emulator_server.url,
                },
            },
        )
        account = operator.api.post(
            "/serviceAccounts",
            {"organizationUnitId": unit["id"], "name": "desk", "role": "admin"},
        )
        tenant = Tenant(
            unit["id"],
            account["id"],
            account["privateKey"],
            Client(TEST_BASE, account["id"], account["privateKey"], http=http),
        )
        automat_id, [key_id, spare] = stocked_automat(container, tenant, keys=2)
        now = container.clock.now()
        created = tenant.api.post(
            CONTRACTS_PATH,
            {
                "input": {
                    "contractType": 1,
                    "accessRightIds": [RIGHT],
                    "keyIds": [key_id],
                    "start": iso(now - timedelta(minutes=5)),
                    "end": iso(now + timedelta(days=1)),
                }
            },
        )

        async def program() -> None:  # what the automat's fetch does, over HTTP
            port = await container.iloq.port_for(tenant.unit_id)
            await ensure_key(port, key_id, key_id)
            await port.program_key(key_id, [RIGHT], valid_from=now, valid_until=None)

        asyncio.run(program())
        kind = container.contract_kinds["iloq"]

        def fetched(session: Any) -> None:  # the automat's key-removed, as its gateway records it
            lockers.report_key(session, automat_id, 0, inside=False, key_id=key_id, key_name=None)
            store = SqlContractStore(session)
            contract = store.load(created["id"])
            assert contract is not None
            progress.fetched(store, kind, contract, contract.key_at(0), now)

        container.db.transaction(fetched)

        report = admin_client(tenant, http).post(
            f"/admin/iloq/keys/{key_id}/lost", {"replace": True}
        )
        assert report["blocklisted"] is True
        assert report["contracts"][0]["replacement"]["keyId"] == spare
        assert on_system(container, tenant.unit_id, lambda s: s.blocklist()) == [key_id]
        assert [
            e.action for e in on_system(container, tenant.unit_id, lambda s: s.log(key_id))
        ] == [
            "program",
            "blocklist",
        ]
        assert tenant.api.get(f"/automats/{automat_id}")["lockers"][0]["key"] is None


# --- mechanical keys -----------------------------------------------------------------------

MECHANICAL = "/mechanical/keycontracts"


def test_a_lost_mechanical_key_is_offered_no_more_and_its_contracts_are_told_once(
    container: Container, acme: Tenant, http: TestClient, receiver: Receiver
) -> None:
    admin = admin_client(acme, http)
    subscribe(admin, receiver, acme.unit_id)
    acme.api.post(
        "/mechanical/keys",
        {"id": "flat-12", "selectedStorage": {"manualStorageInfo": "Desk"}, "away": False},
    )
    now = datetime.now(UTC).replace(microsecond=0)

    def book(public_id: str, start: datetime, end: datetime) -> None:
        acme.api.post(
            MECHANICAL,
            {
                "id": public_id,
                "start": iso(start),
                "end": iso(end),
                "contact": GUEST,
                "keys": [{"id": "flat-12"}],
                "pickUpInfoForManualStorageKeys": "At the desk",
            },
        )

    book("stay-1", now - timedelta(hours=1), now + timedelta(hours=2))
    book("stay-2", now + timedelta(hours=3), now + timedelta(days=1))
    admin.post(f"/admin{MECHANICAL}/stay-1/keys/flat-12/handover", {})

    report = admin.post("/admin/mechanical/keys/flat-12/lost", {})
    assert report["keyId"] == "flat-12"
    assert [(c["id"], c["replacement"]) for c in report["contracts"]] == [
        ("stay-1", None),
        ("stay-2", None),
    ]
    for stay in ("stay-1", "stay-2"):
        [key] = acme.api.get(f"{MECHANICAL}/{stay}")["keys"]
        assert (key["status"], key["inHistory"]) == ("key-lost", True)
    assert acme.api.get("/mechanical/keys/flat-12")["status"]["available"] is False
    refused = acme.api.request(
        "POST",
        MECHANICAL,
        {
            "start": iso(now + timedelta(days=2)),
            "end": iso(now + timedelta(days=3)),
            "contact": GUEST,
            "keys": [{"id": "flat-12"}],
            "pickUpInfoForManualStorageKeys": "At the desk",
        },
    )
    assert refused.status_code == 400
    assert refused.json()["message"] == ["keys.0.id: is lost"]

    again = admin.post("/admin/mechanical/keys/flat-12/lost", {})
    assert (again["lostAt"], again["contracts"]) == (report["lostAt"], [])
    drain(container)
    ids = {c["id"]: c for c in acme.api.get(MECHANICAL)["data"]}
    assert set(ids) == {"stay-1", "stay-2"}
    for stay in ("stay-1", "stay-2"):
        object_id = container.db.transaction(
            lambda s, stay=stay: s.scalar(  # type: ignore[misc]
                select(mechanical_contracts.c.contract_id).where(
                    mechanical_contracts.c.public_id == stay
                )
            )
        )
        assert count(container, object_id, "contractUpdated") == 1
        lost_events = [
            e
            for e in live(receiver)
            if e["type"] == "key-status"
            and e["data"]["contractId"] == stay
            and e["data"]["state"] == "key-lost"
        ]
        assert [e["data"]["storageType"] for e in lost_events] == ["manualStorage"]


def test_a_mechanical_key_in_an_automats_locker_is_not_lost(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    automat = install(acme, product="key30", name="K30")
    acme.api.post(
        "/mechanical/keys",
        {"id": "garage", "selectedStorage": {"automatId": automat["id"]}, "away": True},
    )
    container.db.transaction(
        lambda s: s.execute(
            update(mechanical_keys)
            .where(mechanical_keys.c.id == "garage")
            .values(stored_automat_id=automat["id"], stored_locker_index=1)
        )
    )
    refused = admin_client(acme, http).request("POST", "/admin/mechanical/keys/garage/lost", {})
    assert refused.status_code == 400
    assert refused.json()["message"] == [
        f"id: is inside locker 1 of automat {automat['id']}: only a key that is out can be lost"
    ]
    unknown = admin_client(acme, http).request("POST", "/admin/mechanical/keys/none/lost", {})
    assert unknown.status_code == 404
