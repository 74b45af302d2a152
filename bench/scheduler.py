"""Scheduler cost: one worker pass over an outbox holding many future reminders.

Fills the outbox with N scheduled notification rows (one per contract) of
which 1,000 are due, then times a worker's claim of a batch of due rows (the
scheduler pass), an idle pass with nothing due, and claiming all 1,000 due
rows. The claimed rows are rolled back between repetitions, so every
repetition sees the same state. Compares N = 10,000 with N = 1,000,000.

    uv run python bench/scheduler.py                     # SQLite
    uv run python bench/scheduler.py --postgres URL      # and PostgreSQL
    uv run python bench/scheduler.py --sizes 10000 100000

Rows are bulk-inserted with Core; payloads are kept small (~150 bytes)
because the pass reads only due rows and the payload size of the rest does
not enter the query.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from keyautomat.adapters.db import Database
from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.orm import outbox
from keyautomat.service_layer import outbox as box

DUE = 1_000
BATCH = 50  # the worker's default batch size
NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
CHUNK = 20_000


def fill(db: Database, rows: int) -> float:
    rng = random.Random(7)
    started = time.perf_counter()
    due_ids = set(rng.sample(range(rows), DUE))
    payload = json.dumps(
        {"type": "contractEndReminder", "channel": "sms", "keyId": None, "view": {"id": "x" * 60}}
    )
    with db.engine.begin() as conn:
        for offset in range(0, rows, CHUNK):
            chunk = []
            for i in range(offset, min(rows, offset + CHUNK)):
                if i in due_ids:
                    due = NOW - timedelta(seconds=rng.randint(1, 3600))
                else:
                    due = NOW + timedelta(seconds=rng.randint(60, 60 * 86400))
                chunk.append(
                    {
                        "kind": "notification",
                        "payload": payload,
                        "ref": f"contract:{i:024x}:reminders",
                        "status": "pending",
                        "due_at": due,
                        "attempts": 0,
                        "created_at": NOW - timedelta(days=1),
                    }
                )
            conn.execute(insert(outbox), chunk)
        if db.engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE outbox"))
        else:
            conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


def timed(db: Database, work: Callable[[Session], object], repeat: int) -> list[float]:
    """Milliseconds per run of ``work`` in a transaction that is rolled back."""
    samples = []
    for _ in range(repeat):
        with db.session_factory() as session, session.begin():
            started = time.perf_counter()
            work(session)
            samples.append((time.perf_counter() - started) * 1000)
            session.rollback()
    return samples


def claim(now: datetime, limit: int) -> Callable[[Session], object]:
    def work(session: Session) -> object:
        got = box.claim(
            session,
            worker_id="bench",
            now=now,
            lease=timedelta(minutes=2),
            limit=limit,
            kinds=["notification"],
        )
        assert len(got) == min(limit, DUE) or now < NOW - timedelta(hours=2), len(got)
        return got

    return work


def claim_all(session: Session) -> object:
    total = 0
    while True:
        got = box.claim(
            session,
            worker_id="bench",
            now=NOW,
            lease=timedelta(minutes=2),
            limit=BATCH,
            kinds=["notification"],
        )
        if not got:
            break
        total += len(got)
    assert total == DUE, total
    return total


def run(label: str, url: str, rows: int) -> None:
    db = Database(url, threads=1)
    seconds = fill(db, rows)
    pass_ms = timed(db, claim(NOW, BATCH), 30)
    idle_ms = timed(db, claim(NOW - timedelta(days=1), BATCH), 30)
    all_ms = timed(db, claim_all, 5)
    print(
        f"{label:10} {rows:>9,} rows  filled in {seconds:6.1f} s | "
        f"pass ({BATCH} due rows) median {statistics.median(pass_ms):6.2f} ms "
        f"p90 {sorted(pass_ms)[int(len(pass_ms) * 0.9)]:6.2f} ms | "
        f"idle pass {statistics.median(idle_ms):5.2f} ms | "
        f"all {DUE} due rows in passes of {BATCH}: {statistics.median(all_ms):7.1f} ms",
        flush=True,
    )
    db.close()


def postgres_database(admin_url: str, name: str) -> str:
    url = make_url(admin_url)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    target = url.set(database=name).render_as_string(hide_password=False)
    upgrade(target)
    return target


def drop_postgres(admin_url: str, name: str) -> None:
    url = make_url(admin_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--postgres", help="admin URL, e.g. postgresql+psycopg://postgres@/x")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    print(f"{DUE} due rows; a pass claims up to {BATCH}; times are medians of repeated runs")
    for rows in args.sizes:
        if not args.no_sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "bench.db"
                upgrade(f"sqlite:///{path}")
                run("sqlite", f"sqlite:///{path}", rows)
        if args.postgres:
            name = f"keyautomat_bench_{rows}"
            try:
                run("postgresql", postgres_database(args.postgres, name), rows)
            finally:
                drop_postgres(args.postgres, name)


if __name__ == "__main__":
    main()
