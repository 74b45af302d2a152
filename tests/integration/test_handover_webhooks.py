"""A whole iLOQ handover with a simulated automat, seen by a webhook receiver: the spec's
sequence of events with exact payloads (webhooks.md §5)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.entrypoints.worker import OutboxWorker
from tests.conftest import Tenant
from tests.contract_helpers import iso
from tests.devices import FAST_DEVICE_SETTINGS, Simulators, admin_client, eventually
from tests.iloq_helpers import CONTRACTS_PATH as PATH
from tests.iloq_helpers import bound_automat, first_key, seed_system, synced
from tests.integration.webhook_support import live, subscribe
from tests.webhook_receiver import Receiver, running_receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={**FAST_DEVICE_SETTINGS, "webhooks_allow_private": True})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def test_a_default_handover_produces_the_specs_events_with_exact_payloads(
    container: Container,
    acme: Tenant,
    http: TestClient,
    sims: Simulators,
    receiver: Receiver,
) -> None:
    subscribe(admin_client(acme, http), receiver, acme.unit_id)
    system = seed_system(container, acme.unit_id)
    automat_id, sim, [key_id] = bound_automat(acme, sims)
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(minutes=5), now + timedelta(days=2)
    created = acme.api.post(
        PATH,
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [system.front_door],
                "numberOfKeys": 1,
                "keyAutomatId": automat_id,
                "start": iso(start),
                "end": iso(end),
            }
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code))
    locker = next(
        int(locker["lockerIndex"])
        for locker in acme.api.get(f"/automats/{automat_id}")["lockers"]
        if locker["key"] and locker["key"]["id"] == key_id
    )
    assert sims.call(sim.enter_code, code)
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-fetched")
    assert sims.call(sim.enter_code, code)
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-returned")
    worker = OutboxWorker(container.db, container.dispatcher, container.clock)
    sims.call(worker.drain)

    events = live(receiver)
    assert all(r.verified for r in receiver.received)
    for event in events:
        assert set(event) == {
            "specVersion",
            "type",
            "occurredAt",
            "createdAt",
            "organizationUnitId",
            "data",
        }
        assert event["specVersion"] == "1"
        assert event["organizationUnitId"] == acme.unit_id
        assert event["occurredAt"] <= event["createdAt"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event["data"])
    contract = {"contractId": created["id"], "contractObjectId": created["id"]}
    assert by_type["contract-update"] == [
        {
            "contractType": "default",
            **contract,
            "pincode": code,
            "start": iso(start),
            "end": iso(end),
            "deviceId": automat_id,
            "keyId": key_id,
        }
    ]
    entered = {
        "codeType": "right-pincode",
        "code": code,
        "deviceId": automat_id,
        "lockerIndex": locker,
        "keyId": key_id,
        **contract,
    }
    assert by_type["code-entered"] == [entered, entered]  # fetch, then return (C9)
    status = {
        "storageType": "device",
        "deviceId": automat_id,
        "lockerIndex": locker,
        "keyId": key_id,
        **contract,
    }
    assert by_type["key-status"] == [
        {"state": "key-fetched", **status},
        {"state": "key-returned", **status},
    ]
    # Within the automat's lanes the order is the order things happened.
    kinds = [(e["type"], e["data"].get("state")) for e in events if e["type"] != "contract-update"]
    assert kinds.index(("key-status", "key-fetched")) < kinds.index(("key-status", "key-returned"))
