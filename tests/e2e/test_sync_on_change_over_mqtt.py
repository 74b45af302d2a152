"""Sync on change over a real Mosquitto broker: a contract's codes reach its automat right
after the commit, and a sendPincode issued at once opens the locker (issue 13 items 1-2).

The periodic sweep is set to an hour here, so nothing but the commit can push the sync."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.adapters.db import Database, mark_changed
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from tests.conftest import Tenant
from tests.contract_helpers import iso
from tests.devices import Simulators, eventually
from tests.e2e.mqtt_support import over_mqtt, simulators_on_the_broker
from tests.iloq_helpers import bound_automat, first_key, seed_system, synced

pytestmark = pytest.mark.mqtt
PATH = "/iloq/keycontracts"
NO_SWEEP = 3600.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return over_mqtt(
        settings,
        device_sync_interval_seconds=NO_SWEEP,
        device_offline_after_seconds=30.0,
    )


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    yield from simulators_on_the_broker(http, container)


def _default_contract(tenant: Tenant, automat_id: str, right: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    created: dict[str, Any] = tenant.api.post(
        PATH,
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [right],
                "numberOfKeys": 1,
                "keyAutomatId": automat_id,
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=1)),
            }
        },
    )
    return created


def test_a_new_contracts_code_reaches_the_automat_without_waiting_for_the_sweep(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    system = seed_system(container, acme.unit_id)
    automat_id, sim, _stock = bound_automat(acme, sims)
    code = _default_contract(acme, automat_id, system.front_door)["keys"][0]["storageInfo"][
        "pincode"
    ]
    eventually(lambda: synced(sims, sim, code), timeout=1.0)


def test_send_pincode_right_after_the_creation_opens_the_locker(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    system = seed_system(container, acme.unit_id)
    automat_id, _sim, _stock = bound_automat(acme, sims)
    created = _default_contract(acme, automat_id, system.front_door)
    code = created["keys"][0]["storageInfo"]["pincode"]
    result = acme.api.post(f"/automats/{automat_id}/sendPincode", {"pincode": code})
    assert result == {"success": True, "reason": None}
    # The key is programmed before the locker opens (several round trips and
    # transactions); a loaded machine took over the default 5 s twice in full runs.
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-fetched", timeout=15.0)


def test_a_deleted_contracts_code_leaves_the_automat_at_once(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    system = seed_system(container, acme.unit_id)
    automat_id, sim, _stock = bound_automat(acme, sims)
    created = _default_contract(acme, automat_id, system.front_door)
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code), timeout=1.0)
    acme.api.delete(f"{PATH}/{created['id']}")
    eventually(lambda: not synced(sims, sim, code), timeout=1.0)


# LISTEN/NOTIFY is PostgreSQL's; on SQLite there is one process.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_commit_in_another_process_wakes_the_gateway_through_postgres(
    container: Container,
) -> None:
    """A gateway hears of a commit made through another database (another process) only
    through PostgreSQL's LISTEN/NOTIFY, and wakes for the automat it changed."""
    url = container.settings.database_url
    writer = Database(url, threads=2)  # another process: no listener of its own
    woken: list[list[str]] = []

    def record(automat_ids: Iterable[str]) -> None:
        woken.append(sorted(automat_ids))

    async def scenario() -> None:
        gateway = container.devices
        gateway.wake = record  # type: ignore[method-assign]
        await gateway.start(wait=5.0)
        try:
            automat_id = "K20-" + uuid.uuid4().hex[:6].upper()
            for _ in range(200):  # LISTEN is issued once the listener task runs
                writer.transaction(lambda s: mark_changed(s, automat_id))
                await asyncio.sleep(0.02)
                if woken:
                    break
            assert woken[0] == [automat_id]
        finally:
            await gateway.stop()

    try:
        asyncio.run(scenario())
    finally:
        writer.close()


def test_send_pincode_times_out_when_the_automat_does_not_take_the_new_code(
    container: Container, acme: Tenant, sims: Simulators
) -> None:
    """The link is cut without the server noticing yet: the sync is never acknowledged, so
    the code is not sent (TIMEOUT), and the automat is not left busy for the next call."""
    system = seed_system(container, acme.unit_id)
    automat_id, sim, _stock = bound_automat(acme, sims)
    sims.call(sim.go_offline)
    created = _default_contract(acme, automat_id, system.front_door)
    code = created["keys"][0]["storageInfo"]["pincode"]
    send = f"/automats/{automat_id}/sendPincode"
    assert acme.api.post(send, {"pincode": code}) == {"success": False, "reason": "TIMEOUT"}
    assert acme.api.post(send, {"pincode": code})["reason"] == "TIMEOUT"  # not AUTOMAT_BUSY
    assert first_key(acme, created["id"])["status"] is None
