"""Contract creation through the signed API, iLOQ or mechanical, with 1,000 automats x 30 lockers.

Seeds (bulk Core inserts on the tables only, so that the script outlives moves of
the contract code) one organization, 1,000 active automats of 30 lockers each
holding a key, and N existing contracts of the kind (90 % ended, 10 % ongoing,
one key each), then creates contracts through the signed API against a real
server (``keyautomat serve`` in its own process, with its outbox worker, as
deployed), from this process over HTTP, and prints throughput, latency and the
server's CPU time per request. The first ``--warmup`` seconds are not measured.

``--kind iloq`` (the default): key20 automats with iLOQ keys, one device group of
them all; existing contracts have no pincodes (as this bench first seeded them).
Each request is ``POST /v2/iloq/keycontracts`` with ``groupId`` and one key, so
the server ranks the group and picks the key.

``--kind mechanical``: key30 automats whose lockers hold registered mechanical
keys (``mechanical_keys``, each stored in its home automat's locker, the locker
showing the key's id); existing contracts are written as the service writes them
(``contracts``, ``mechanical_contracts``, ``contract_keys``,
``contract_reservations``, and the automat pincodes of ``device_pincodes``).
Each request is ``POST /v2/mechanical/keycontracts`` naming one key that no
ongoing contract holds, a different one each time (successive requests go to
different automats; once every free key has had a contract, the periods move
two days on), so every request should answer 201.

``--rate R`` offers R requests a second whatever the answers (latency as a
client at that load sees it); ``--rate 0`` saturates instead: ``--clients K``
clients each send their next request as soon as the last one is answered, and
the throughput printed is what the server achieved (the line then adds
``clients``). One JSON line per size; run once per size to see the cost of growth:

    uv run python bench/contracts.py --existing 1000 --existing 100000 [--rate 100] [--seconds 10]
    uv run python bench/contracts.py --kind mechanical --existing 1000 --seconds 5
    uv run python bench/contracts.py --rate 0 [--clients 16] (saturation)
    uv run python bench/contracts.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

With ``--database-url`` (PostgreSQL) each run gets a fresh database next to the
one named, dropped afterwards; without it, a SQLite file in a temporary directory.
On PostgreSQL the seed runs without row triggers and sums the automats' stock
counts once at the end (row by row, 100,000 reservations each updated their
automat's counts: four minutes, and a 23 MB automats table while the counts were
on it; now under two minutes on a loaded machine).

Besides throughput, latency and server CPU, each line says how many statements,
transactions and database round trips one creation takes (``statements_per_request``,
``transactions_per_request``, ``round_trips_per_request``: 20 creations made in this
process through the app before the server starts, each BEGIN and COMMIT counted as a
round trip) and, on PostgreSQL, what the run did to the ``automats`` and
``automat_stock`` tables: their dead row versions after the run, their updates and HOT
updates during it, and the sizes (KiB) of their heaps and indexes before and after
(``automats_*``, ``automat_stock_*``). A run takes the
seed, about 15 s of start-up, ``--warmup`` and ``--seconds``: about one minute at
1,000 contracts, two to three at 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import bindparam, create_engine, event, insert, text
from sqlalchemy.engine import make_url
from support import serve

from keyautomat.adapters import orm
from keyautomat.adapters.iloq.emulator import EmulatedSystem
from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.orm_contracts import contract_keys, contract_reservations, contracts
from keyautomat.adapters.orm_devices import device_links, device_pincodes
from keyautomat.adapters.orm_mechanical import mechanical_contracts, mechanical_keys
from keyautomat.bootstrap import bootstrap
from keyautomat.client import compact_json, signature_headers
from keyautomat.config import Settings
from keyautomat.domain.ids import new_object_id
from keyautomat.domain.model import OrgUnitType, Role
from keyautomat.service_layer import accounts

AUTOMATS = 1000
LOCKERS = 30
KINDS = ("iloq", "mechanical")
# Mechanical requests name their contact (required there); no address, so nothing is sent.
CONTACT = {"name": "Bench", "sendSms": False, "sendEmail": False, "language": "en"}


class Workload(Protocol):
    """What one kind's requests are: where they go and the body of the n-th one."""

    @property
    def path(self) -> str: ...

    def body(self, n: int, now: datetime) -> dict[str, Any]: ...


@dataclass(frozen=True)
class IloqWorkload:
    group_id: str
    path: str = "/v2/iloq/keycontracts"

    def body(self, n: int, now: datetime) -> dict[str, Any]:
        # Each body differs (the end, by n ms): two requests signed in the same
        # millisecond would otherwise carry the same signature and the second
        # would be rejected as a replay (401).
        return {
            "input": {
                "contractType": 1,
                "accessRightIds": ["r"],
                "numberOfKeys": 1,
                "groupId": self.group_id,
                "start": now.isoformat(),
                "end": (now + timedelta(days=1, milliseconds=n)).isoformat(),
            }
        }


@dataclass(frozen=True)
class MechanicalWorkload:
    key_ids: list[str]  # keys no seeded contract holds now, automats interleaved
    path: str = "/v2/mechanical/keycontracts"

    def body(self, n: int, now: datetime) -> dict[str, Any]:
        # A key has one contract per round; the next round's period starts after the
        # last one's end, so no request overlaps an earlier one (409).
        turn, index = divmod(n, len(self.key_ids))
        start = now + timedelta(days=2 * turn)
        return {
            "start": start.isoformat(),
            "end": (start + timedelta(days=1, milliseconds=n)).isoformat(),
            "contact": CONTACT,
            "keys": [{"id": self.key_ids[index]}],
        }


@dataclass(frozen=True)
class Existing:
    """The n-th seeded contract: its id, period, and whether it is still going on."""

    id: str
    start: datetime
    end: datetime
    ongoing: bool


def existing_contracts(count: int, now: datetime) -> Iterator[Existing]:
    for n in range(count):
        ongoing = n % 10 == 0
        start = now - timedelta(days=30 + n % 300) if not ongoing else now - timedelta(hours=1)
        end = start + timedelta(days=2) if not ongoing else now + timedelta(days=2)
        yield Existing(f"{n:024x}", start, end, ongoing)


def insert_batches(session: Any, rows_by_table: list[tuple[Any, list[dict[str, Any]]]]) -> None:
    for table, rows in rows_by_table:
        for i in range(0, len(rows), 5000):
            session.execute(insert(table), rows[i : i + 5000])


# The per-automat stock counts as migrations 0011 and 0012 backfill them: what the row
# triggers on lockers and contract_reservations would have summed row by row, written
# to automat_stock (migration 0028) with the automat's last_seen_at: without row
# triggers, the trigger on automats inserted no row there.
_OFFERED = "(l.key_id IS NOT NULL AND l.is_key_inside)"
_EMPTY = "(l.key_id IS NULL AND NOT l.is_key_inside)"
_BOOKED = (
    "(SELECT count(*) FROM contract_reservations r JOIN lockers l"
    " ON l.automat_id = r.automat_id AND l.locker_index = r.locker_index"
    " WHERE r.automat_id = a.id AND r.counted AND r.key_id IS {} AND {})"
)
_COUNTS = ("keys_inside", "empty_lockers", "keys_booked", "lockers_booked")
# Constant fragments only, nothing from input.
_RECOUNT = (
    f"INSERT INTO automat_stock (automat_id, {', '.join(_COUNTS)}, last_seen_at)"  # noqa: S608
    " SELECT a.id,"
    f" (SELECT count(*) FROM lockers l WHERE l.automat_id = a.id AND {_OFFERED}),"
    f" (SELECT count(*) FROM lockers l WHERE l.automat_id = a.id AND {_EMPTY}),"
    f" {_BOOKED.format('NOT NULL', _OFFERED)}, {_BOOKED.format('NULL', _EMPTY)},"
    " a.last_seen_at FROM automats a ON CONFLICT (automat_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*_COUNTS, "last_seen_at"))
)


def without_row_triggers(session: Any) -> None:
    """PostgreSQL: the rest of this transaction fires no row trigger (nor foreign key
    check), and :func:`recount` sums the counts once at the end. Row by row, each of
    100,000 seeded reservations updated its automat's counts: minutes of seeding (and,
    before migration 0028, a bloated automats table). SQLite seeds fast as it is."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL session_replication_role = replica"))


def recount(session: Any) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(_RECOUNT))


def seed_account(session: Any, container: Any, now: datetime) -> tuple[str, str, str]:
    """A root organization and an admin service account of it: (unit, account, key PEM)."""
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
    return unit.id, created.account.id, created.private_key_pem


def automat_rows(unit_id: str, product: str, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{n + 1:06d}",
            "organization_unit_id": unit_id,
            "name": f"A{n}",
            "timezone": "Europe/Helsinki",
            "product": product,
            "hw_id": f"HW{n}",
            "lifecycle_state": "active",
            "created_at": now,
            "last_seen_at": now,
        }
        for n in range(AUTOMATS)
    ]


def seed_iloq(container: Any, existing: int) -> tuple[str, str, Workload]:
    now = datetime.now(UTC)

    def work(session: Any) -> tuple[str, str, Workload]:
        unit_id, account, key = seed_account(session, container, now)
        without_row_triggers(session)
        # Contracts name an access right their unit's (emulated) iLOQ system offers.
        EmulatedSystem(session, unit_id).add_access_right("Bench door", id="r")
        group_id = new_object_id()
        session.execute(
            insert(orm.groups).values(
                id=group_id,
                organization_unit_id=unit_id,
                name="All",
                customer_id=None,
                type=1,
                created_at=now,
            )
        )
        automats = automat_rows(unit_id, "key20", now)
        member_rows = [{"automat_id": a["id"], "group_id": group_id} for a in automats]
        locker_rows = [
            {
                "automat_id": a["id"],
                "locker_index": i,
                "is_key_inside": True,
                "key_id": str(uuid.uuid4()),
                "key_name": "K",
            }
            for a in automats
            for i in range(LOCKERS)
        ]
        session.execute(insert(orm.automats), automats)
        session.execute(insert(orm.automat_groups), member_rows)
        session.execute(insert(orm.lockers), locker_rows)
        c_rows, k_rows, r_rows = [], [], []
        for n, old in enumerate(existing_contracts(existing, now)):
            locker = locker_rows[n % len(locker_rows)]
            c_rows.append(
                {
                    "id": old.id,
                    "kind": "iloq",
                    "organization_unit_id": unit_id,
                    "contract_type": 1,
                    "start": old.start,
                    "end": old.end,
                    "contact": None,
                    "request": "{}",
                    "created_at": old.start,
                    "updated_at": old.start,
                    "end_evaluated_at": None if old.ongoing else old.end,
                }
            )
            k_rows.append(
                {
                    "contract_id": old.id,
                    "position": 0,
                    "key_id": locker["key_id"],
                    "automat_id": locker["automat_id"],
                    "locker_index": locker["locker_index"],
                    "pincode": None,
                    "status": None,
                    "in_history": not old.ongoing,
                    "program_failures": 0,
                }
            )
            r_rows.append(
                {
                    "contract_id": old.id,
                    "position": 0,
                    "automat_id": locker["automat_id"],
                    "locker_index": locker["locker_index"],
                    "key_id": locker["key_id"],
                    "start": old.start,
                    "until": old.end,
                    # A live system stops counting a reservation at its contract's end.
                    "counted": old.ongoing,
                }
            )
        insert_batches(
            session,
            [(contracts, c_rows), (contract_keys, k_rows), (contract_reservations, r_rows)],
        )
        recount(session)
        return account, key, IloqWorkload(group_id)

    result: tuple[str, str, Workload] = container.db.transaction(work)
    return result


def seed_mechanical(container: Any, existing: int) -> tuple[str, str, Workload]:
    now = datetime.now(UTC)

    def work(session: Any) -> tuple[str, str, Workload]:
        unit_id, account, key = seed_account(session, container, now)
        without_row_triggers(session)
        # The unit is a root organization: mechanical ids are unique within it.
        root = unit_id
        automats = automat_rows(unit_id, "key30", now)
        # Locker by locker across the automats: consecutive requests (and seeded
        # contracts) land on different automats, as a fleet's bookings would.
        slots = [(a["id"], i) for i in range(LOCKERS) for a in automats]
        key_rows = [
            {
                "object_id": new_object_id(),
                "root_unit_id": root,
                "id": f"K{automat_id}-{i:02d}",
                "organization_unit_id": unit_id,
                "name": None,
                "rfid_hex": None,
                "selected_automat_id": automat_id,
                "selected_manual_info": None,
                "shared": False,
                # In its home locker, as after the automat reported it inside.
                "stored_automat_id": automat_id,
                "stored_locker_index": i,
                "stored_manual_info": None,
                "created_at": now,
            }
            for automat_id, i in slots
        ]
        # A locker holding a registered mechanical key shows the key's id, as the service sets it.
        locker_rows = [
            {
                "automat_id": k["stored_automat_id"],
                "locker_index": k["stored_locker_index"],
                "is_key_inside": True,
                "key_id": k["id"],
                "key_name": None,
            }
            for k in key_rows
        ]
        session.execute(insert(orm.automats), automats)
        session.execute(insert(orm.lockers), locker_rows)
        insert_batches(session, [(mechanical_keys, key_rows)])
        c_rows, m_rows, k_rows, r_rows, p_rows = [], [], [], [], []
        versions: Counter[str] = Counter()
        held: set[int] = set()
        contact = json.dumps(
            {
                "name": CONTACT["name"],
                "email": None,
                "phoneNumber": None,
                "language": CONTACT["language"],
                "sendSms": False,
                "sendEmail": False,
                "notifications": None,
            },
            separators=(",", ":"),
        )
        for n, old in enumerate(existing_contracts(existing, now)):
            slot = n % len(key_rows)
            if old.ongoing:
                held.add(slot)
            mkey = key_rows[slot]
            automat_id, locker_index = mkey["stored_automat_id"], mkey["stored_locker_index"]
            # The contract's code on its automat: added at creation, removed (a
            # tombstone at a later version) when the key went into history.
            code = f"{n % 1_000_000:06d}"
            versions[automat_id] += 1 if old.ongoing else 2
            pincode_id = new_object_id()
            p_rows.append(
                {
                    "id": pincode_id,
                    "automat_id": automat_id,
                    "code": code,
                    "locker_index": locker_index,
                    "valid_from": old.start,
                    "valid_until": old.end,
                    "purpose": "default",
                    "key_id": mkey["id"],
                    "reference": old.id,
                    "version": versions[automat_id],
                    "removed": not old.ongoing,
                    "program_first": False,
                }
            )
            c_rows.append(
                {
                    "id": old.id,
                    "kind": "mechanical",
                    "organization_unit_id": unit_id,
                    "contract_type": 1,
                    "start": old.start,
                    "end": old.end,
                    "contact": contact,
                    "request": json.dumps({"keys": [{"id": mkey["id"]}]}, separators=(",", ":")),
                    "created_at": old.start,
                    "updated_at": old.start,
                    "end_evaluated_at": None if old.ongoing else old.end,
                }
            )
            m_rows.append(
                {
                    "contract_id": old.id,
                    "root_unit_id": root,
                    "public_id": old.id,
                    "free_locker_after_fetch": False,
                    "user_verification": "0",
                    "pick_up_info": None,
                }
            )
            k_rows.append(
                {
                    "contract_id": old.id,
                    "position": 0,
                    "key_id": mkey["object_id"],
                    "automat_id": automat_id,
                    "locker_index": locker_index,
                    # History keeps the code; only the automat forgets it.
                    "pincode": code,
                    "pincode_id": pincode_id if old.ongoing else None,
                    "status": None,
                    "in_history": not old.ongoing,
                    "program_failures": 0,
                }
            )
            r_rows.append(
                {
                    "contract_id": old.id,
                    "position": 0,
                    "automat_id": automat_id,
                    "locker_index": locker_index,
                    "key_id": mkey["object_id"],
                    "start": old.start,
                    "until": old.end,
                    # A live system stops counting a reservation at its contract's end.
                    "counted": old.ongoing,
                }
            )
        # The automats' sync outbox, every seeded change already acknowledged.
        link_rows = [
            {
                "automat_id": automat_id,
                "connected": False,
                "desired_version": version,
                "synced_version": version,
            }
            for automat_id, version in versions.items()
        ]
        insert_batches(
            session,
            [
                (device_links, link_rows),
                (device_pincodes, p_rows),
                (contracts, c_rows),
                (mechanical_contracts, m_rows),
                (contract_keys, k_rows),
                (contract_reservations, r_rows),
            ],
        )
        recount(session)
        free = [k["id"] for slot, k in enumerate(key_rows) if slot not in held]
        return account, key, MechanicalWorkload(free)

    result: tuple[str, str, Workload] = container.db.transaction(work)
    return result


SEEDS: dict[str, Callable[[Any, int], tuple[str, str, Workload]]] = {
    "iloq": seed_iloq,
    "mechanical": seed_mechanical,
}


async def drive(
    base_url: str,
    pid: int,
    credentials: tuple[str, str],
    workload: Workload,
    rate: float,
    clients: int,
    seconds: float,
    warmup: float,
) -> tuple[list[float], Counter[int], float, float | None, float | None]:
    """Offer ``rate`` requests a second (``rate`` 0: ``clients`` back-to-back senders)."""
    url = f"{base_url}{workload.path}"
    account, key = credentials
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    now = datetime.now(UTC)
    numbers = itertools.count()

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(n: int, record: bool) -> None:
            body = compact_json(workload.body(n, now)).encode()
            headers = signature_headers(
                method="POST",
                url=url,
                body=body,
                service_account_id=account,
                private_key_pem=key,
                timestamp_ms=int(time.time() * 1000),
            )
            t0 = time.perf_counter()
            try:
                response = await client.post(
                    url, content=body, headers={"content-type": "application/json", **headers}
                )
                status = response.status_code
            except httpx.TransportError:
                # A kept-alive connection the server closed as it was reused (uvicorn's
                # keep-alive timeout racing the next request): counted as status 0.
                status = 0
            if record:
                latencies.append(time.perf_counter() - t0)
                statuses[status] += 1

        async def paced(count: int, record: bool) -> float:
            tasks = []
            started = time.perf_counter()
            for i in range(count):
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(next(numbers), record)))
            await asyncio.gather(*tasks)
            return time.perf_counter() - started

        async def saturated(duration: float, record: bool) -> float:
            started = time.perf_counter()
            deadline = started + duration

            async def sender() -> None:
                while time.perf_counter() < deadline:
                    await one(next(numbers), record)

            await asyncio.gather(*(sender() for _ in range(clients)))
            # Until the last answer: the requests still in flight at the deadline count.
            return time.perf_counter() - started

        async def phase(duration: float, record: bool) -> float:
            if rate > 0:
                return await paced(int(rate * duration), record)
            return await saturated(duration, record)

        # Open the connections, then let the server warm up (its statement caches
        # fill on first use) at the same load before measuring, as a long-running
        # server and client would be.
        await asyncio.gather(*(client.get(f"{base_url}/healthz") for _ in range(32)))
        await phase(warmup, record=False)
        cpu_before, machine_before = cpu_seconds(pid), machine_ticks()
        elapsed = await phase(seconds, record=True)
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


def count_round_trips(
    container: Any, credentials: tuple[str, str], workload: Workload, requests: int = 20
) -> dict[str, float]:
    """Statements and database round trips per request, over ``requests`` creations made
    in this process through the app (``create_app``, no server, no worker), after one
    not counted (caches warm): each statement is one round trip, and so are the BEGIN
    and COMMIT of each transaction (psycopg sends them on their own)."""
    from keyautomat.entrypoints.api.app import create_app

    counts = Counter[str]()

    def statement(*_: Any) -> None:
        counts["statements"] += 1

    def transaction(*_: Any) -> None:
        counts["transactions"] += 1

    engine = container.db.engine
    app = create_app(container, run_gateway=False)
    account, key = credentials
    base = "http://bench.test"
    now = datetime.now(UTC)

    async def creations() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url=base) as client,
        ):
            for i in range(requests + 1):
                if i == 1:
                    event.listen(engine, "before_cursor_execute", statement)
                    event.listen(engine, "commit", transaction)
                    event.listen(engine, "rollback", transaction)
                # Numbers no run reaches: bodies (hence signatures) of their own.
                body = compact_json(workload.body(10_000_000 + i, now)).encode()
                headers = signature_headers(
                    method="POST",
                    url=f"{base}{workload.path}",
                    body=body,
                    service_account_id=account,
                    private_key_pem=key,
                    timestamp_ms=int(time.time() * 1000),
                )
                response = await client.post(
                    workload.path,
                    content=body,
                    headers={"content-type": "application/json", **headers},
                )
                if response.status_code != 201:
                    raise RuntimeError(f"probe creation answered {response.status_code}")

    try:
        asyncio.run(creations())
    finally:
        for name, fn in (
            ("before_cursor_execute", statement),
            ("commit", transaction),
            ("rollback", transaction),
        ):
            if event.contains(engine, name, fn):
                event.remove(engine, name, fn)
    return {
        "statements_per_request": round(counts["statements"] / requests, 1),
        "transactions_per_request": round(counts["transactions"] / requests, 1),
        "round_trips_per_request": round(
            (counts["statements"] + 2 * counts["transactions"]) / requests, 1
        ),
    }


# The tables whose row versions a run counts: automats (written on every reservation
# until migration 0028) and automat_stock (since).
WATCHED = ("automats", "automat_stock")


def table_bloat(url: str) -> dict[str, dict[str, int]] | None:
    """PostgreSQL: dead row versions in each :data:`WATCHED` table, its updates and HOT
    updates so far and its size (heap, indexes), from pg_stat_user_tables; None on SQLite
    (it updates rows in place)."""
    if not url.startswith("postgresql"):
        return None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT relname, n_dead_tup, n_tup_upd, n_tup_hot_upd,"
                    " pg_relation_size(relid) AS heap,"
                    " pg_indexes_size(relid) AS indexes"
                    " FROM pg_stat_user_tables WHERE relname IN :names"
                ).bindparams(bindparam("names", expanding=True)),
                {"names": list(WATCHED)},
            ).all()
    finally:
        engine.dispose()
    return {
        row.relname: {
            "dead": row.n_dead_tup,
            "updates": row.n_tup_upd,
            "hot_updates": row.n_tup_hot_upd,
            "heap_kb": row.heap // 1024,
            "indexes_kb": row.indexes // 1024,
        }
        for row in rows
    }


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
    kind: str,
    existing: int,
    url: str | None,
    rate: float,
    clients: int,
    seconds: float,
    warmup: float,
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
        rate_limit_per_second=0,
    )
    container = bootstrap(settings)
    t0 = time.perf_counter()
    account, key, workload = seed(container, kind, existing)
    seeded = time.perf_counter() - t0
    probe = count_round_trips(container, (account, key), workload)
    container.close()
    # The seed's writes are not what is measured: flush them to disk now rather
    # than have the kernel write them back under the run.
    os.sync()
    # The capacity of the creation path, every request served: with admission control on,
    # senders past its limit would be refused (bench/overload.py measures that).
    env = server_env(database_url, secret, tmp, {"KEYAUTOMAT_MAX_REQUESTS_IN_FLIGHT": "0"})
    server, base_url = serve(env)
    # Nor is this process's own garbage: a collection walking what the seed left
    # would pause the client and show up as server latency.
    gc.collect()
    gc.freeze()
    bloat_before = table_bloat(database_url)
    try:
        latencies, statuses, elapsed, cpu, busy = asyncio.run(
            drive(base_url, server.pid, (account, key), workload, rate, clients, seconds, warmup)
        )
        if bloat_before is not None:
            time.sleep(1.5)  # the server's backends report their counts at most once a second
        bloat_after = table_bloat(database_url)
    finally:
        server.terminate()
        server.wait(30)
        drop()
        shutil.rmtree(tmp, ignore_errors=True)
    ms = sorted(x * 1000 for x in latencies)
    result: dict[str, Any] = {
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
    result.update(probe)
    if bloat_before is not None and bloat_after is not None:
        # Over the whole run (warm-up included): what each table gained.
        for table, after in bloat_after.items():
            before = bloat_before[table]
            result[f"{table}_dead_tuples"] = after["dead"]
            result[f"{table}_updates"] = after["updates"] - before["updates"]
            result[f"{table}_hot_updates"] = after["hot_updates"] - before["hot_updates"]
            result[f"{table}_heap_kb"] = [before["heap_kb"], after["heap_kb"]]
            result[f"{table}_indexes_kb"] = [before["indexes_kb"], after["indexes_kb"]]
    if rate == 0:
        result["clients"] = clients
    return result


def seed(container: Any, kind: str, existing: int) -> tuple[str, str, Workload]:
    """Seeds ``kind`` with ``existing`` contracts; on PostgreSQL then vacuums and analyses."""
    account, key, workload = SEEDS[kind](container, existing)
    if container.db.engine.dialect.name == "postgresql":
        # A live database has planner statistics and autovacuum has cleared the
        # row versions behind it; a bulk-loaded one has neither yet (the seed's
        # recount updated every automat once).
        with container.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    return account, key, workload


def server_env(database_url: str, secret: str, tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of the ``keyautomat serve`` under test: the seeded database, its
    key, no rate limit, notifications into ``tmp``, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTOMAT_")}
    env.update(
        KEYAUTOMAT_DATABASE_URL=database_url,
        KEYAUTOMAT_SECRET_KEY=secret,
        KEYAUTOMAT_SECRET_KEY_FILE=str(tmp / "k"),
        KEYAUTOMAT_RATE_LIMIT_PER_SECOND="0",
        KEYAUTOMAT_NOTIFY_SINK_DIR=str(tmp / "sink"),
        **extra,
    )
    return env


@contextlib.contextmanager
def seeded_server(
    kind: str, existing: int, url: str | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str, tuple[str, str], Workload]]:
    """A seeded database and a ``keyautomat serve`` on it, as ``run`` sets them up, for other
    benches (bench/overload.py): (server, base URL, (account id, private key), workload).
    ``extra_env`` adds server settings."""
    tmp = Path(tempfile.mkdtemp())
    drop: Callable[[], None] = lambda: None  # noqa: E731
    database_url = f"sqlite:///{tmp / 'bench.db'}"
    if url is not None:
        database_url, drop = fresh_postgres(url)
    try:
        upgrade(database_url)
        secret = Fernet.generate_key().decode()
        container = bootstrap(
            Settings(
                database_url=database_url,
                secret_key=secret,
                secret_key_file=tmp / "k",
                notify_sink_dir=tmp / "sink",
            )
        )
        account, key, workload = seed(container, kind, existing)
        container.close()
        os.sync()
        env = server_env(database_url, secret, tmp, extra_env or {})
        # A busy machine can take a minute to import and start the server.
        server, base_url = serve(env, start_timeout=180)
        try:
            yield server, base_url, (account, key), workload
        finally:
            server.terminate()
            server.wait(30)
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=KINDS, default="iloq")
    parser.add_argument("--existing", type=int, action="append")
    parser.add_argument("--database-url")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="requests offered per second; 0 saturates"
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent senders when saturating"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not measured")
    args = parser.parse_args()
    if args.rate < 0 or args.clients < 1:
        parser.error("--rate must be 0 (saturate) or more, --clients at least 1")
    results = [
        run(
            args.kind,
            n,
            args.database_url,
            args.rate,
            args.clients,
            args.seconds,
            args.warmup,
        )
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
