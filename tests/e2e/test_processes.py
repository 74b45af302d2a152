"""keyautomat as separate processes on one PostgreSQL database (DESIGN.md, Scale out):
processes that migrate the database as they start together."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from keyautomat.adapters.migrate import MIGRATION_LOCK_KEY, alembic_config
from tests.devices import eventually
from tests.processes import Processes
from tests.services import postgres_database

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


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
