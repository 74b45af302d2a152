"""keyautomat as separate processes on one PostgreSQL database (DESIGN.md, Scale out): API
processes that race for the same keys and share the replay window, worker processes that
share one outbox, and processes that migrate the database as they start together."""

from __future__ import annotations

import os
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from keyautomat.adapters.migrate import MIGRATION_LOCK_KEY, alembic_config
from keyautomat.adapters.orm import outbox
from keyautomat.adapters.orm_contracts import contract_keys
from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.domain import webhooks as wh
from keyautomat.entrypoints.api.errors import error_body
from keyautomat.service_layer import webhooks
from keyautomat.service_layer.webhooks import KIND as WEBHOOK
from tests.conftest import Tenant
from tests.contract_helpers import RIGHT, booked_keys, group_of, iso, stocked_automat
from tests.devices import admin_client, eventually
from tests.integration.webhook_support import subscribe
from tests.processes import Processes, all_ready, sender_of_one_signed_request
from tests.services import postgres_database
from tests.webhook_receiver import Received, running_receiver

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

# API processes only: no outbox worker, no device gateway in them.
API = ("--no-worker", "--no-gateway")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Webhooks to the receiver on 127.0.0.1 over http (gaps.md G8).
    return settings.model_copy(update={"webhooks_allow_private": True})


# -- allocation across API processes ------------------------------------------------


def _contract(now: datetime, n: int, group_id: str) -> dict[str, Any]:
    # Each body differs (its end, by n ms): two requests signed in the same millisecond
    # would otherwise carry the same signature, and the second would be a replay.
    return {
        "input": {
            "contractType": 1,
            "accessRightIds": [RIGHT],
            "numberOfKeys": 1,
            "groupId": group_id,
            "start": iso(now - timedelta(minutes=1)),
            "end": iso(now + timedelta(days=1, milliseconds=n)),
        }
    }


def test_fifty_creations_split_across_two_api_processes_race_for_ten_keys_and_exactly_ten_win(
    processes: Processes, container: Container, acme: Tenant
) -> None:
    automats = [stocked_automat(container, acme, keys=5, empty=0, name=f"A{i}") for i in range(2)]
    seeded = {key for _, keys in automats for key in keys}
    group_id = group_of(acme, [automat_id for automat_id, _ in automats])
    apis = all_ready([processes.serve(*API, wait=False) for _ in range(2)])
    now = datetime.now(UTC)
    # All 50 are signed first and sent at once, half to each process.
    gate = threading.Barrier(50)

    def create(n: int) -> tuple[int, Any]:
        with Client(apis[n % 2].api_url, acme.account_id, acme.private_key) as api:
            body = _contract(now, n, group_id)
            gate.wait(timeout=30)
            response = api.request("POST", "/iloq/keycontracts", body)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(create, range(50)))

    assert Counter(status for status, _ in answers) == {201: 10, 409: 40}, answers
    refusals = {body["message"] for status, body in answers if status == 409}
    assert refusals == {"No automat has 1 keys available for the requested period"}
    won = [body["keys"][0]["id"] for status, body in answers if status == 201]
    assert sorted(won) == sorted(seeded)
    assert booked_keys(container) == (10, 10, 10)
    assert set(container.db.transaction(lambda s: s.scalars(select(contract_keys.c.key_id)))) == (
        seeded
    )
    assert all(api.running for api in apis)


# -- the replay window across API processes -----------------------------------------

PUBLIC = "http://keyautomat.test/v2"


def test_a_request_one_api_process_accepted_is_a_replay_at_the_other_and_after_a_restart(
    processes: Processes, acme: Tenant
) -> None:
    # One public URL, as behind a load balancer: a request signed once is good at either.
    env = {"KEYAUTOMAT_PUBLIC_URL": PUBLIC}
    first, second = all_ready([processes.serve(*API, env=env, wait=False) for _ in range(2)])
    body = '{"name":"Once","customerId":"once","type":1}'
    send = sender_of_one_signed_request(PUBLIC, "/groups", body, acme.account_id, acme.private_key)

    assert send(first)[0] == 201
    assert send(second) == (401, error_body(401, "Replayed request"))
    first.restart()
    assert send(first) == (401, error_body(401, "Replayed request"))
    assert [g["name"] for g in acme.api.get("/groups")["data"]] == ["Once"]


# -- one outbox, two worker processes -------------------------------------------------

EVENTS = 1000
LANES = 100  # devices: each one's events are delivered in order, one after another


def _publish(container: Container, unit_id: str) -> list[str]:
    """EVENTS key-status events, LANES devices taking turns, in one transaction."""
    now = datetime.now(UTC)

    def work(session: Any) -> list[str]:
        ids = []
        for n in range(EVENTS):
            data = wh.key_status_data(
                state="key-fetched",
                device_id=f"{n % LANES + 1:06d}",
                locker_index=n // LANES,
                key_id=f"k-{n}",
                contract_id=f"c-{n}",
                contract_object_id=f"c-{n}",
            )
            ids += webhooks.publish(
                session,
                organization_unit_id=unit_id,
                event_type="key-status",
                data=data,
                occurred_at=now,
                now=now,
            )
        return ids

    return container.db.transaction(work)


def _statuses(container: Container) -> dict[str, int]:
    counted = (
        select(outbox.c.status, func.count())
        .where(outbox.c.kind == WEBHOOK)
        .group_by(outbox.c.status)
    )
    return container.db.transaction(lambda s: {row[0]: row[1] for row in s.execute(counted)})


def _delivered_by(container: Container) -> set[str]:
    """The pids (from the worker ids) of the workers that delivered a row."""
    owners = container.db.transaction(
        lambda s: set(s.scalars(select(outbox.c.claimed_by).where(outbox.c.kind == WEBHOOK)))
    )
    return {owner.split(":")[1] for owner in owners}


def test_a_thousand_outbox_rows_with_two_worker_processes_are_each_delivered_once(
    processes: Processes, container: Container, acme: Tenant, http: TestClient
) -> None:
    with running_receiver() as receiver:
        subscribe(admin_client(acme, http), receiver, acme.unit_id, ["key-status"])
        workers = [processes.worker(wait=False) for _ in range(2)]
        published = _publish(container, acme.unit_id)
        # Both ready (the first may have begun): each gets its share of the backlog.
        all_ready(workers)
        eventually(lambda: _statuses(container) == {"done": EVENTS}, timeout=90, interval=0.2)
        live: list[Received] = [
            r for r in receiver.accepted if r.payload["data"]["deviceId"] != "000000"
        ]

    assert len(published) == EVENTS
    assert Counter(r.webhook_id for r in live) == Counter(published)  # each exactly once
    assert all(r.verified for r in live)
    lanes: dict[str, list[int]] = defaultdict(list)
    for r in live:
        lanes[r.payload["data"]["deviceId"]].append(r.payload["data"]["lockerIndex"])
    assert len(lanes) == LANES
    assert all(order == sorted(order) for order in lanes.values())
    assert _delivered_by(container) == {str(worker.pid) for worker in workers}


# -- migrating at start --------------------------------------------------------------


def _waiting_for_the_migration_lock(url: str) -> int:
    admin = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND ((classid::bigint << 32) | objid::bigint) = %s",
            (MIGRATION_LOCK_KEY,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def empty_database() -> Iterator[str]:
    with postgres_database(f"keyautomat_test_{os.getpid()}_empty") as url:
        yield url


def test_processes_that_migrate_an_empty_database_together_take_turns_and_all_succeed(
    empty_database: str, processes: Processes
) -> None:
    env = {"KEYAUTOMAT_DATABASE_URL": empty_database}
    admin = make_url(empty_database).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as holder:
        # Held here, so that all three are started and queue up before any migrates.
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        migrating = [processes.start("migrate", env=env, wait=False) for _ in range(3)]
        # All three queue on the lock (without it, they would not wait: this times out).
        eventually(lambda: _waiting_for_the_migration_lock(empty_database) == 3, timeout=30)
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        codes = [proc.wait() for proc in migrating]
        versions = holder.execute("SELECT version_num FROM alembic_version").fetchall()
    assert codes == [0, 0, 0], [proc.output() for proc in migrating]
    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
    assert versions == [(head,)]
