"""Apply Alembic migrations from code (``keyautomat migrate`` and every process's start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from keyautomat.adapters.db import make_engine

PROJECT_ROOT = Path(__file__).resolve().parents[3]

MIGRATION_LOCK_KEY = 0x6B657961_75746F6D  # "keyautom": this application's migrations
"""The PostgreSQL advisory lock that migrating processes of one database take in turn."""

_LOCK = text("SELECT pg_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    """Bring the database at ``url`` to ``revision``; safe to call on every start.

    On PostgreSQL, processes that start together (an API, a worker and a gateway
    deployed at once) migrate one after another: each holds an advisory lock
    while it reads the version and upgrades, so the second finds the database at
    head instead of creating the same tables again and failing. The lock is the
    session's, not the transaction's, so it also holds across a migration that
    commits part-way (Alembic's ``autocommit_block``). SQLite serves one process.
    """
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            locked = connection.dialect.name == "postgresql"
            if locked:
                connection.execute(_LOCK, {"key": MIGRATION_LOCK_KEY})
                connection.commit()
            with connection.begin():
                config = alembic_config(url)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
            if locked:
                # On failure the lock goes with the connection, closed by dispose().
                connection.execute(_UNLOCK, {"key": MIGRATION_LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()


def known_revisions() -> frozenset[str]:
    """Every schema revision this code's migrations know (a database at another one was
    made by a newer release, or by something else)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return frozenset(revision.revision for revision in script.walk_revisions())


def head_revision() -> str:
    """The newest schema revision of this code's migrations."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head
