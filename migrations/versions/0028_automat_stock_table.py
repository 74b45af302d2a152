"""the automats' stock counts in a narrow table of their own, with the rank indexes

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-11 09:00:00.000000

The four counts of migrations 0011 and 0012 (keys_inside, empty_lockers,
keys_booked, lockers_booked) move from ``automats`` to ``automat_stock``, one row
per automat, kept by the same triggers, with a copy of ``last_seen_at`` (kept by a
trigger on automats) and the two rank indexes of 0012. On ``automats`` every
contract reservation wrote a new version of the wide row (~300 bytes) and an
entry in each of its seven indexes, and every device message's ``last_seen_at``
did the same; now a reservation writes a ~60-byte row and three index entries,
and a device message a HOT update of ``automats`` (no index of it names
``last_seen_at`` any more) and the same small row. The other design weighed, no
index on ``automat_stock`` so that every update is HOT, made the shortlist a
join and sort of the whole group, 10-40 times the index scan's CPU
(docs/performance/contract-creation.md, "The stock counts").

On PostgreSQL the old triggers' UPDATE of the automat's row also locked it. The
triggers keep taking that lock (``FOR NO KEY UPDATE``, a no-op when the
transaction holds the row already, as a creation does), so the order in which
transactions meet on an automat stays what docs/contracts.md describes: a path
that changes a locker and then locks its automat (a lost key) cannot deadlock
with a creation that locked the automat and then reserves.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTS = ("keys_inside", "empty_lockers", "keys_booked", "lockers_booked")


def _sibling(name: str) -> ModuleType:
    """The migration module ``name`` of this folder: 0011 and 0012 build the triggers."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_INSIDE = _sibling("0011_automat_stock_counters")
_BOOKED = _sibling("0012_automat_rank_indexes")


def _stock(postgres: bool) -> tuple[str, str, str]:
    """Where the triggers keep the counts now (the ``target`` of 0011 and 0012)."""
    lock = "PERFORM 1 FROM automats WHERE id = {row}.automat_id FOR NO KEY UPDATE;"
    return ("automat_stock", "automat_id", lock if postgres else "")


def _retarget(target: tuple[str, str, str]) -> None:
    _INSIDE.drop_triggers()
    _BOOKED.drop_triggers()
    _INSIDE.create_triggers(target)
    _BOOKED.create_triggers(target)


# Constant SQL only, nothing from input.
_COPY = ", ".join(_COUNTS)


def _copy_trigger(postgres: bool, name: str, event: str, sql: str) -> None:
    """A row trigger on automats running ``sql`` (about NEW) after ``event``."""
    if postgres:
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN {sql} RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON automats "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
    else:
        op.execute(f"CREATE TRIGGER {name} AFTER {event} ON automats BEGIN {sql} END")


# Every automat has its row from the start (the other triggers only update it), and
# the row follows the automat's last_seen_at, the tie rule of the rank order.
_COPY_TRIGGERS = {
    "automats_stock_row": (
        "INSERT",
        "INSERT INTO automat_stock (automat_id, last_seen_at) VALUES (NEW.id, NEW.last_seen_at);",
    ),
    "automats_stock_seen": (
        "UPDATE OF last_seen_at",
        "UPDATE automat_stock SET last_seen_at = NEW.last_seen_at WHERE automat_id = NEW.id;",
    ),
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "automat_stock",
        sa.Column(
            "automat_id",
            sa.String(16),
            sa.ForeignKey("automats.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        *(sa.Column(c, sa.Integer(), nullable=False, server_default="0") for c in _COUNTS),
        sa.Column("last_seen_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        f"INSERT INTO automat_stock (automat_id, {_COPY}, last_seen_at)"  # noqa: S608
        f" SELECT id, {_COPY}, last_seen_at FROM automats"
    )
    for name, (event, sql) in _COPY_TRIGGERS.items():
        _copy_trigger(postgres, name, event, sql)
    stock = _stock(postgres)
    _retarget(stock)
    _BOOKED.drop_rank_indexes()
    _BOOKED.create_rank_indexes(stock)
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), as in 0011: no trigger or index names
    # them any more.
    for column in reversed(_COUNTS):
        op.drop_column("automats", column)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for column in _COUNTS:
        op.add_column(
            "automats", sa.Column(column, sa.Integer(), nullable=False, server_default="0")
        )
    sets = ", ".join(
        f"{c} = (SELECT s.{c} FROM automat_stock s WHERE s.automat_id = automats.id)"  # noqa: S608
        for c in _COUNTS
    )
    op.execute(f"UPDATE automats SET {sets}")  # noqa: S608
    _retarget(_INSIDE.AUTOMATS)
    _BOOKED.drop_rank_indexes(_stock(postgres))
    _BOOKED.create_rank_indexes()
    for name in _COPY_TRIGGERS:
        if postgres:
            op.execute(f"DROP TRIGGER {name} ON automats")
            op.execute(f"DROP FUNCTION {name}()")
        else:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("automat_stock")
