"""What the shortlist of a group's automats costs, in the two designs weighed for
migration 0028 (docs/performance/contract-creation.md, "The stock counts"):

* ``index``: what the code runs (contracts.allocation): ``automat_stock`` carries a
  copy of ``last_seen_at`` and the rank indexes, read in order until the shortlist
  is full, each member tested per automat (as ``automats`` was read before 0028).
  The update each reservation makes changes an indexed expression: never HOT.
* ``join``: ``automat_stock`` without any index but its key, so that every update
  is HOT; the group's members joined with ``automats`` and ``automat_stock`` and
  sorted (top N). Measured here with the rank index dropped in a transaction
  rolled back afterwards.

For each engine and number of existing contracts it seeds the database of
bench/contracts.py (one group of 1,000 automats x 30 lockers, 10 % of the contracts
ongoing), then times each design's shortlist statement, for that group and for a
group of 10 of them whose members rank last in the fleet-wide order (the worst case
of the index: it walks the whole fleet to find them). Figures per statement:

* ``us``: the median over ``--repeat`` executions on the driver's cursor, in
  microseconds of this process's CPU time (SQLite, which runs in this process) or of
  the server's ``Execution Time`` of ``EXPLAIN (ANALYZE, TIMING OFF)`` (PostgreSQL);
* ``buffers`` (PostgreSQL): shared buffers the statement touched.

The machine is shared: compare the designs within one run.

    uv run --frozen python bench/shortlist.py --existing 1000
    uv run --frozen python bench/shortlist.py --existing 1000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts import AUTOMATS, fresh_postgres, seed
from cryptography.fernet import Fernet
from sqlalchemy import (
    Connection,
    Select,
    bindparam,
    event,
    insert,
    select,
)

from keyautomat.adapters import orm
from keyautomat.adapters.migrate import upgrade
from keyautomat.bootstrap import bootstrap
from keyautomat.config import Settings
from keyautomat.contracts import allocation
from keyautomat.domain.model import LifecycleState

SMALL_GROUP = "s" * 24
SMALL = 10


def join_shortlist() -> Select[Any]:
    """The shortlist of the join design: the group's active key20 members, joined with
    their counts and sorted."""
    a, ag, st = orm.automats, orm.automat_groups, orm.automat_stock
    length: Any = bindparam("short") + allocation._blocked_inside("key20").scalar_subquery()
    return (
        select(a.c.id, a.c.last_seen_at)
        .select_from(
            ag.join(a, a.c.id == ag.c.automat_id).join(st, st.c.automat_id == ag.c.automat_id)
        )
        .where(
            ag.c.group_id == bindparam("group_id"),
            a.c.lifecycle_state == LifecycleState.ACTIVE,
            a.c.product == "key20",
        )
        .order_by(
            (st.c.keys_inside - st.c.keys_booked).desc(),
            a.c.last_seen_at.desc().nulls_last(),
            a.c.id,
        )
        .limit(length)
    )


def driver_statement(conn: Connection, stmt: Any, params: dict[str, Any]) -> tuple[str, Any]:
    """The SQL and parameters ``stmt`` reaches the driver's cursor with."""
    seen: list[tuple[str, Any]] = []

    def note(*args: Any) -> None:
        seen.append((args[2], args[3]))

    event.listen(conn, "before_cursor_execute", note)
    try:
        conn.execute(stmt, params).all()
    finally:
        event.remove(conn, "before_cursor_execute", note)
    return seen[-1]


def measure(conn: Connection, sql: str, params: Any, repeat: int) -> dict[str, Any]:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if conn.dialect.name == "postgresql":
        times, buffers = [], 0
        for _ in range(repeat):
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0][0]
            times.append(plan["Execution Time"] * 1000)
            top = plan["Plan"]
            buffers = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
        return {"us": round(statistics.median(times)), "buffers": buffers}
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        cursor.execute(sql, params)
        cursor.fetchall()
        times.append((time.process_time() - t0) * 1e6)
    return {"us": round(statistics.median(times))}


def add_small_group(conn: Connection) -> None:
    """A group of the :data:`SMALL` automats last in the fleet-wide rank order (the highest
    ids: the seeded counts and last_seen_at are alike)."""
    group = conn.execute(select(orm.groups).limit(1)).one()._asdict()
    conn.execute(insert(orm.groups).values({**group, "id": SMALL_GROUP, "name": "Small"}))
    last = [f"{n:06d}" for n in range(AUTOMATS - SMALL + 1, AUTOMATS + 1)]
    conn.execute(
        insert(orm.automat_groups), [{"automat_id": a, "group_id": SMALL_GROUP} for a in last]
    )


def run(url: str, existing: int, repeat: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    drop: Callable[[], None] = lambda: None  # noqa: E731
    database_url = f"sqlite:///{tmp / 'bench.db'}"
    if url != "sqlite":
        database_url, drop = fresh_postgres(url)
    try:
        upgrade(database_url)
        container = bootstrap(
            Settings(
                database_url=database_url,
                secret_key=Fernet.generate_key().decode(),
                secret_key_file=tmp / "k",
                notify_sink_dir=tmp / "sink",
            )
        )
        _, _, workload = seed(container, "iloq", existing)
        engine = container.db.engine
        designs = {"index": allocation._shortlist(True, "key20"), "join": join_shortlist()}
        groups = {"group_1000": workload.group_id, "group_10_last": SMALL_GROUP}  # type: ignore[attr-defined]
        result: dict[str, Any] = {"engine": engine.dialect.name, "existing": existing}
        with engine.begin() as conn:
            add_small_group(conn)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        for design, stmt in designs.items():
            with engine.connect() as conn, conn.begin() as transaction:
                if design == "join":  # no index to keep: the design's whole point
                    conn.exec_driver_sql("DROP INDEX ix_automat_stock_rank_keys")
                for name, group_id in groups.items():
                    params = {"group_id": group_id, "short": allocation.SHORTLIST}
                    sql, driver_params = driver_statement(conn, stmt, params)
                    result[f"{design}_{name}"] = measure(conn, sql, driver_params, repeat)
                transaction.rollback()
        container.close()
        return result
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--existing", type=int, action="append")
    parser.add_argument("--database-url", default="sqlite")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    for existing in args.existing or [1000]:
        print(json.dumps(run(args.database_url, existing, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
