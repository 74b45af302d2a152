"""What the held-code check adds to an iLOQ creation: one statement per code it chooses.

A code held off its automat while its key is out (back-to-back bookings,
docs/contracts.md) is still taken for other contracts of that automat, so a
creation checks it next to the pincode clash check it always ran. This seeds
20,000 contract keys on one automat (a tenth of them live, one in a thousand
held), then times 2,000 of each check in one session, five times, and prints the
medians:

    uv run python bench/held_codes.py                    # SQLite
    uv run python bench/held_codes.py --postgres URL     # and PostgreSQL (a fresh database)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler import drop_postgres, postgres_database
from sqlalchemy import insert
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.db import make_engine
from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.orm_contracts import contract_keys, contracts
from keyautomat.contracts.store import SqlContractStore

KEYS = 20_000
CHECKS = 2_000
UNIT = "0" * 24
AUTOMAT = "000001"


def seed(url: str, now: datetime) -> None:
    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(
            insert(orm.organization_units).values(
                id=UNIT, name="U", type=0, path=f"/{UNIT}/", created_at=now
            )
        )
        conn.execute(
            insert(orm.automats).values(
                id=AUTOMAT,
                organization_unit_id=UNIT,
                name="A",
                timezone="UTC",
                product="key20",
                lifecycle_state="active",
                created_at=now,
            )
        )
        conn.execute(
            insert(contracts),
            [
                {
                    "id": f"{i:024d}",
                    "kind": "iloq",
                    "organization_unit_id": UNIT,
                    "contract_type": 1,
                    "start": now,
                    "end": now + timedelta(days=1),
                    "request": "{}",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(KEYS)
            ],
        )
        conn.execute(
            insert(contract_keys),
            [
                {
                    "contract_id": f"{i:024d}",
                    "position": 0,
                    "key_id": f"k{i}",
                    "automat_id": AUTOMAT,
                    "locker_index": i % 30,
                    # Live keys have a code on the automat; done ones none.
                    "pincode": f"{i:06d}" if i % 10 == 0 else None,
                    "pincode_id": f"p{i}" if i % 10 == 0 and i % 1000 else None,
                    "in_history": i % 10 != 0,
                    "program_failures": 0,
                    "held_since": now if i % 1000 == 0 else None,
                }
                for i in range(KEYS)
            ],
        )
    engine.dispose()


def run(label: str, url: str) -> None:
    now = datetime.now(UTC)
    seed(url, now)
    engine = make_engine(url, pool_size=1)
    until = now + timedelta(days=1)
    checks: dict[str, Callable[[SqlContractStore, str], bool]] = {
        "pincode clash (every creation)": lambda s, c: s.pincode_in_use(AUTOMAT, c, now, until),
        "held code (iLOQ, new)": lambda s, c: s.held_code_taken(AUTOMAT, c, now, until),
    }
    for name, check in checks.items():
        runs = []
        for _ in range(5):
            with Session(engine) as session:
                store = SqlContractStore(session)
                started = time.perf_counter()
                for i in range(CHECKS):
                    check(store, f"{(i * 7919) % 1_000_000:06d}")
                runs.append((time.perf_counter() - started) / CHECKS * 1e6)
        print(f"{label:10} {name:32} {statistics.median(runs):7.1f} µs a check")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="admin URL, e.g. postgresql+psycopg://postgres@/x")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        run("sqlite", url)
    if args.postgres:
        name = "keyautomat_bench_held_codes"
        try:
            run("postgresql", postgres_database(args.postgres, name))
        finally:
            drop_postgres(args.postgres, name)


if __name__ == "__main__":
    main()
