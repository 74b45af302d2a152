"""The whole system as separate processes on PostgreSQL and Mosquitto (issue 13): two API
processes, an outbox worker, a device gateway and a simulated automat, each a process of
its own, meeting only through the database and the broker.

The periodic sync sweep is set to an hour: a new contract's codes reach the automat only
because its commit was announced (LISTEN/NOTIFY) to the gateway process."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from keyautomat.adapters.orm_devices import device_links
from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.api.errors import error_body
from keyautomat.entrypoints.demo import demo_automats
from tests.conftest import Tenant
from tests.contract_helpers import iso
from tests.devices import eventually, install
from tests.e2e.mqtt_support import BROKER, over_mqtt
from tests.iloq_helpers import first_key, seed_system
from tests.processes import KeyautomatProcess, Processes, all_ready, sender_of_one_signed_request

pytestmark = [
    pytest.mark.mqtt,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]
API = ("--no-worker", "--no-gateway")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return over_mqtt(
        settings,
        device_sync_interval_seconds=3600.0,
        device_offline_after_seconds=30.0,
    )


@pytest.fixture
def http(container: Container) -> Iterator[TestClient]:
    """The test's own view of the system, for seeding and reading: no gateway of its own,
    which would compete with the gateway process for the device."""
    with TestClient(create_app(container, run_gateway=False), base_url="http://testserver") as c:
        yield c


@contextmanager
def at(api: KeyautomatProcess, tenant: Tenant) -> Iterator[Tenant]:
    """The tenant calling the API process ``api``."""
    with Client(api.api_url, tenant.account_id, tenant.private_key) as client:
        yield dataclasses.replace(tenant, api=client)


def test_a_contract_made_at_one_api_process_opens_its_locker_at_once_from_the_other(
    processes: Processes, container: Container, acme: Tenant
) -> None:
    processes.gateway()
    processes.worker()
    first, second = all_ready([processes.serve(*API, wait=False) for _ in range(2)])
    with at(first, acme) as one, at(second, acme) as two:
        handover(processes, container, acme, one, two)


def handover(
    processes: Processes, container: Container, acme: Tenant, one: Tenant, two: Tenant
) -> None:
    """Install at process one; the simulator binds; a contract at process two; sendPincode
    at process one right after the 201: the key is taken."""
    automat = install(one)
    processes.simulate(
        "--broker",
        BROKER,
        "--automat",
        automat["id"],
        "--installation-pincode",
        automat["installationPincode"],
        "--prefix",
        container.settings.mqtt_topic_prefix,
        "--lockers",
        "3",
        "--keys",
        "1",
        "--resend-seconds",
        "0.5",
    )
    eventually(
        lambda: any(
            locker["isKeyInside"] for locker in two.api.get(f"/automats/{automat['id']}")["lockers"]
        ),
        timeout=10.0,
    )

    system = seed_system(container, acme.unit_id)
    now = datetime.now(UTC)
    created: dict[str, Any] = two.api.post(
        "/iloq/keycontracts",
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [system.front_door],
                "numberOfKeys": 1,
                "keyAutomatId": automat["id"],
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=1)),
            }
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    sent = one.api.post(f"/automats/{automat['id']}/sendPincode", {"pincode": code})
    assert sent == {"success": True, "reason": None}
    eventually(lambda: first_key(two, created["id"])["status"] == "key-fetched", timeout=10.0)


def test_a_request_accepted_by_one_api_process_stays_a_replay_everywhere_after_every_restart(
    processes: Processes, acme: Tenant
) -> None:
    everything = [processes.gateway(), processes.worker()]
    # One public URL, as behind a proxy: a request signed once is good at either.
    public = "http://keyautomat.test/v2"
    env = {"KEYAUTOMAT_PUBLIC_URL": public}
    first, second = all_ready([processes.serve(*API, env=env, wait=False) for _ in range(2)])
    body = '{"name":"Once","customerId":"once","type":1}'
    send = sender_of_one_signed_request(public, "/groups", body, acme.account_id, acme.private_key)

    assert send(first)[0] == 201
    assert send(second) == (401, error_body(401, "Replayed request"))
    for process in [*everything, first, second]:
        process.restart()
    assert send(first) == (401, error_body(401, "Replayed request"))
    assert send(second) == (401, error_body(401, "Replayed request"))


def test_the_rate_limit_counts_an_accounts_requests_at_both_api_processes(
    processes: Processes, acme: Tenant
) -> None:
    slow = {"KEYAUTOMAT_RATE_LIMIT_PER_SECOND": "0.01", "KEYAUTOMAT_RATE_LIMIT_BURST": "2"}
    apis = all_ready([processes.serve(*API, env=slow, wait=False) for _ in range(2)])
    statuses = []
    for n in range(4):
        with Client(apis[n % 2].api_url, acme.account_id, acme.private_key) as client:
            statuses.append(client.request("GET", "/automats").status_code)
    assert statuses == [200, 200, 429, 429]


def test_the_demo_served_without_a_gateway_binds_its_automats_at_the_gateway_process(
    processes: Processes, container: Container
) -> None:
    processes.gateway()
    demo = processes.serve("--demo", *API)
    info = json.loads(demo.stdout().splitlines()[0])
    unit_id = info["organizationUnitId"]
    automats = container.db.transaction(lambda s: demo_automats(s, unit_id))
    assert automats

    def bound() -> set[str]:
        return set(
            container.db.transaction(
                lambda s: s.scalars(
                    select(device_links.c.automat_id).where(device_links.c.connected.is_(True))
                ).all()
            )
        )

    eventually(lambda: bound() >= {a.id for a in automats}, timeout=20.0)
