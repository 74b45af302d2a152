"""iLOQ contract creation through the signed API, with a group of 1,000 automats x 30 lockers.

Seeds (bulk Core inserts) one organization, 1,000 active key20 automats of 30
lockers each holding a key, one device group of them all, and N existing
contracts (90 % ended, 10 % ongoing, one key each), then creates contracts
through ``POST /v2/iloq/keycontracts`` (``groupId``, one key, signed) at a fixed
rate against a real server (``keyautomat serve`` in its own process, with its
outbox worker, as deployed), from this process over HTTP, and prints throughput,
latency and the server's CPU time per request. The first ``--warmup`` seconds
(same rate) are not measured. Run once per size to see the cost of growth:

    uv run python bench/contracts.py --existing 1000 --existing 100000 [--rate 100] [--seconds 10]
    uv run python bench/contracts.py --database-url postgresql+psycopg://... (PostgreSQL)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from support import serve

from keyautomat.adapters import orm
from keyautomat.adapters.iloq.emulator import EmulatedSystem
from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.orm_contracts import contract_keys, contract_reservations, contracts
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.client import compact_json, signature_headers
from keyautomat.config import Settings
from keyautomat.domain.ids import new_object_id
from keyautomat.domain.model import OrgUnitType, Role
from keyautomat.service_layer import accounts

AUTOMATS = 1000
LOCKERS = 30


def seed(container: Container, existing: int) -> tuple[str, str, str]:
    now = datetime.now(UTC)

    def work(session: Session) -> tuple[str, str, str]:
        unit = accounts.create_organization_unit(
            session,
            None,
            name="Bench",
            customer_id="bench",
            type=OrgUnitType.ORGANIZATION,
            parent_id=None,
            iloq_api_user=None,
            secrets=container.secrets,
            now=now,
        )
        created = accounts.create_service_account(
            session, None, organization_unit_id=unit.id, name="bench", role=Role.ADMIN, now=now
        )
        # Contracts name an access right their unit's (emulated) iLOQ system offers.
        EmulatedSystem(session, unit.id).add_access_right("Bench door", id="r")
        group_id = new_object_id()
        session.execute(
            insert(orm.groups).values(
                id=group_id,
                organization_unit_id=unit.id,
                name="All",
                customer_id=None,
                type=1,
                created_at=now,
            )
        )
        automat_rows, locker_rows, member_rows = [], [], []
        for n in range(AUTOMATS):
            automat_id = f"{n + 1:06d}"
            automat_rows.append(
                {
                    "id": automat_id,
                    "organization_unit_id": unit.id,
                    "name": f"A{n}",
                    "timezone": "Europe/Helsinki",
                    "product": "key20",
                    "hw_id": f"HW{n}",
                    "lifecycle_state": "active",
                    "created_at": now,
                    "last_seen_at": now,
                }
            )
            member_rows.append({"automat_id": automat_id, "group_id": group_id})
            for i in range(LOCKERS):
                locker_rows.append(
                    {
                        "automat_id": automat_id,
                        "locker_index": i,
                        "is_key_inside": True,
                        "key_id": str(uuid.uuid4()),
                        "key_name": "K",
                    }
                )
        session.execute(insert(orm.automats), automat_rows)
        session.execute(insert(orm.automat_groups), member_rows)
        session.execute(insert(orm.lockers), locker_rows)
        c_rows, k_rows, r_rows = [], [], []
        for n in range(existing):
            locker = locker_rows[n % len(locker_rows)]
            ongoing = n % 10 == 0
            start = now - timedelta(days=30 + n % 300) if not ongoing else now - timedelta(hours=1)
            end = start + timedelta(days=2) if not ongoing else now + timedelta(days=2)
            cid = f"{n:024x}"
            c_rows.append(
                {
                    "id": cid,
                    "kind": "iloq",
                    "organization_unit_id": unit.id,
                    "contract_type": 1,
                    "start": start,
                    "end": end,
                    "contact": None,
                    "request": "{}",
                    "created_at": start,
                    "updated_at": start,
                    "end_evaluated_at": None if ongoing else end,
                }
            )
            k_rows.append(
                {
                    "contract_id": cid,
                    "position": 0,
                    "key_id": locker["key_id"],
                    "automat_id": locker["automat_id"],
                    "locker_index": locker["locker_index"],
                    "pincode": None,
                    "status": None,
                    "in_history": not ongoing,
                    "program_failures": 0,
                }
            )
            r_rows.append(
                {
                    "contract_id": cid,
                    "position": 0,
                    "automat_id": locker["automat_id"],
                    "locker_index": locker["locker_index"],
                    "key_id": locker["key_id"],
                    "start": start,
                    "until": end,
                    # A live system stops counting a reservation at its contract's end.
                    "counted": ongoing,
                }
            )
        for table, rows in (
            (contracts, c_rows),
            (contract_keys, k_rows),
            (contract_reservations, r_rows),
        ):
            for i in range(0, len(rows), 5000):
                session.execute(insert(table), rows[i : i + 5000])
        return created.account.id, created.private_key_pem, group_id

    return container.db.transaction(work)


async def drive(
    base_url: str,
    pid: int,
    credentials: tuple[str, str],
    group_id: str,
    rate: float,
    seconds: float,
    warmup: float,
) -> tuple[list[float], Counter[int], float, float | None, float | None]:
    url = f"{base_url}/v2/iloq/keycontracts"
    account, key = credentials
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    now = datetime.now(UTC)

    def body_for(n: int) -> bytes:
        # Each body differs (the end, by n ms): two requests signed in the same
        # millisecond would otherwise carry the same signature and the second
        # would be rejected as a replay (401).
        return compact_json(
            {
                "input": {
                    "contractType": 1,
                    "accessRightIds": ["r"],
                    "numberOfKeys": 1,
                    "groupId": group_id,
                    "start": now.isoformat(),
                    "end": (now + timedelta(days=1, milliseconds=n)).isoformat(),
                }
            }
        ).encode()

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(n: int, record: bool) -> None:
            body = body_for(n)
            headers = signature_headers(
                method="POST",
                url=url,
                body=body,
                service_account_id=account,
                private_key_pem=key,
                timestamp_ms=int(time.time() * 1000),
            )
            t0 = time.perf_counter()
            response = await client.post(
                url, content=body, headers={"content-type": "application/json", **headers}
            )
            if record:
                latencies.append(time.perf_counter() - t0)
                statuses[response.status_code] += 1

        async def paced(first: int, count: int, record: bool) -> float:
            tasks = []
            started = time.perf_counter()
            for i in range(count):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(first + i, record)))
            await asyncio.gather(*tasks)
            return time.perf_counter() - started

        # Open the connections, then let the server warm up (its statement caches
        # fill on first use) at the same rate before measuring, as a long-running
        # server and client would be.
        await asyncio.gather(*(client.get(f"{base_url}/healthz") for _ in range(32)))
        warm = int(rate * warmup)
        await paced(0, warm, record=False)
        cpu_before, machine_before = cpu_seconds(pid), machine_ticks()
        elapsed = await paced(warm, int(rate * seconds), record=True)
        cpu_after, machine_after = cpu_seconds(pid), machine_ticks()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    busy = None
    if machine_before is not None and machine_after is not None:
        total = machine_after[1] - machine_before[1]
        busy = (machine_after[0] - machine_before[0]) / total if total else None
    return latencies, statuses, elapsed, cpu, busy


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), to report the server's cost."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine so far (Linux /proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def fresh_postgres(url: str) -> tuple[str, Callable[[], None]]:
    """A new, empty database next to the one ``url`` names (dropped by the returned call)."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


def run(
    existing: int, url: str | None, rate: float, seconds: float, warmup: float
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if url is None:
        database_url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        database_url, drop = fresh_postgres(url)
    upgrade(database_url)
    secret = Fernet.generate_key().decode()
    settings = Settings(
        database_url=database_url,
        secret_key=secret,
        secret_key_file=tmp / "k",
        notify_sink_dir=tmp / "sink",
    )
    container = bootstrap(settings)
    t0 = time.perf_counter()
    account, key, group_id = seed(container, existing)
    if container.db.engine.dialect.name == "postgresql":
        # A live database has planner statistics and autovacuum has cleared the
        # row versions behind it; a bulk-loaded one has neither yet (the seed's
        # reservations each updated their automat's booked count).
        with container.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    seeded = time.perf_counter() - t0
    container.close()
    # The seed's writes are not what is measured: flush them to disk now rather
    # than have the kernel write them back under the run.
    os.sync()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTOMAT_")}
    env.update(
        KEYAUTOMAT_DATABASE_URL=database_url,
        KEYAUTOMAT_SECRET_KEY=secret,
        KEYAUTOMAT_SECRET_KEY_FILE=str(tmp / "k"),
        KEYAUTOMAT_RATE_LIMIT_PER_SECOND="0",
        KEYAUTOMAT_NOTIFY_SINK_DIR=str(tmp / "sink"),
    )
    server, base_url = serve(env)
    # Nor is this process's own garbage: a collection walking what the seed left
    # would pause the client and show up as server latency.
    gc.collect()
    gc.freeze()
    try:
        latencies, statuses, elapsed, cpu, busy = asyncio.run(
            drive(base_url, server.pid, (account, key), group_id, rate, seconds, warmup)
        )
    finally:
        server.terminate()
        server.wait(30)
        drop()
        shutil.rmtree(tmp, ignore_errors=True)
    ms = sorted(x * 1000 for x in latencies)
    return {
        "existing": existing,
        "seed_s": round(seeded, 1),
        "requests": len(ms),
        "statuses": dict(statuses),
        "throughput": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 1),
        "max_ms": round(ms[-1], 1),
        "server_cpu_ms_per_request": None if cpu is None else round(cpu * 1000 / len(ms), 1),
        # Everything on the machine (database server, this client) over all its cores.
        "machine_cpu_busy": None if busy is None else round(busy, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--existing", type=int, action="append")
    parser.add_argument("--database-url")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not measured")
    args = parser.parse_args()
    results = [
        run(n, args.database_url, args.rate, args.seconds, args.warmup)
        for n in (args.existing or [1000, 100000])
    ]
    for result in results:
        print(json.dumps(result))
    if len(results) == 2:
        print(
            json.dumps({"p99_growth_ratio": round(results[1]["p99_ms"] / results[0]["p99_ms"], 2)})
        )


if __name__ == "__main__":
    main()
