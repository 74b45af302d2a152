"""The demo's key20 automats hold the registered demo iLOQ keys: a contract works at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.entrypoints.demo import (
    DemoAccess,
    DemoAutomat,
    demo_access_right_id,
    demo_automats,
    demo_iloq_keys,
    demo_iloq_stocks,
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


def automats_of(container: Container, access: DemoAccess) -> list[DemoAutomat]:
    return container.db.transaction(lambda s: demo_automats(s, access.organization_unit_id))


def test_the_demo_keys_are_dealt_over_the_key20_automats(container: Container) -> None:
    automats = automats_of(container, seed(container))
    stocks = demo_iloq_stocks(automats)
    assert sorted(stocks) == sorted(a.id for a in automats if a.product == "key20")
    assert len(stocks) == 2
    dealt = [k for keys in stocks.values() for k in keys]
    assert sorted(k.id for k in dealt) == sorted(k.id for k in demo_iloq_keys())
    assert all(len(keys) == 4 for keys in stocks.values())
    assert demo_iloq_stocks([]) == {}


def test_a_contract_on_a_demo_key_is_created_once_the_key20_reports_it(
    container: Container, http: TestClient, sims: Simulators
) -> None:
    access = seed(container)
    assert access.private_key_pem is not None
    api = Client(TEST_BASE, access.service_account_id, access.private_key_pem, http=http)
    automats = automats_of(container, access)
    stocks = demo_iloq_stocks(automats)
    first = next(a for a in automats if a.product == "key20")
    keys = stocks[first.id]
    sim = sims.start(
        hw_id=f"DEMO-{first.id}",
        product="key20",
        locker_count=20,
        installation_pincode=first.installation_pincode,
    )
    sims.call(sim.stock, [SimKey(k.id, k.name, rfid=k.name) for k in keys])
    sims.call(sim.wait_bound, BIND_SECONDS)

    def reported() -> bool:
        lockers = api.get(f"/automats/{first.id}")["lockers"]
        return {lk["key"]["id"] for lk in lockers if lk.get("key")} >= {k.id for k in keys}

    eventually(reported)
    now = container.clock.now()
    body = {
        "input": {
            "contractType": 1,
            "accessRightIds": [demo_access_right_id("Main entrance")],
            "keyIds": [keys[0].id],
            "start": now.isoformat(),
            "end": (now + timedelta(days=1)).isoformat(),
        }
    }
    created = api.post("/iloq/keycontracts", body)
    assert created["keys"][0]["id"] == keys[0].id
    assert first.id in str(created["keys"][0]["storageInfo"])
