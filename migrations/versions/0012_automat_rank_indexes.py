"""per-automat counts of open reservations; indexes for a group's rank order and locker checks

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 00:20:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keys_booked counts the open ("counted") reservations of keys whose locker has its
# key inside right now (on offer, as keys_inside counts them), lockers_booked those
# of empty lockers that are still empty: keys_inside - keys_booked is then what is
# free now. A fetched key is out of keys_inside and out of keys_booked, not
# subtracted twice. docs/contracts.md "How a group is ranked".
_OFFERED = "(l.key_id IS NOT NULL AND l.is_key_inside)"
_EMPTY = "(l.key_id IS NULL AND NOT l.is_key_inside)"


def _locker_state(row: str, state: str) -> str:
    # 1 when the reservation's locker is (still) in ``state``.
    return (
        f"(SELECT count(*) FROM lockers l WHERE l.automat_id = {row}.automat_id"  # noqa: S608
        f" AND l.locker_index = {row}.locker_index AND {state})"
    )


# Where the counts live: (table, its automat id column, a statement run before each
# adjustment, ``{row}`` standing for OLD or NEW). On automats until migration 0028
# moved them to automat_stock, which reuses the triggers below.
AUTOMATS = ("automats", "id", "")


def _booked_update(row: str, sign: str, target: tuple[str, str, str], key: str, locker: str) -> str:
    """Add (``sign`` +) or take ``key`` and ``locker`` from the booked counts in ``target``
    of the automat of ``row``."""
    table, id_, before = target
    lock = before.replace("{row}", row)
    parts = [lock, f"UPDATE {table} SET keys_booked = keys_booked", sign, key, ","]  # noqa: S608
    parts += [
        "lockers_booked = lockers_booked",
        sign,
        locker,
        f"WHERE {id_} =",
        row + ".automat_id;",
    ]
    return " ".join(parts)


def _reservation_adjust(row: str, sign: str, target: tuple[str, str, str]) -> str:
    """What one reservation adds to (or takes from) its automat's booked counts."""
    key = (
        f"(CASE WHEN {row}.counted AND {row}.key_id IS NOT NULL"
        f" THEN {_locker_state(row, _OFFERED)} ELSE 0 END)"
    )
    locker = (
        f"(CASE WHEN {row}.counted AND {row}.key_id IS NULL"
        f" THEN {_locker_state(row, _EMPTY)} ELSE 0 END)"
    )
    return _booked_update(row, sign, target, key, locker)


def _locker_adjust(row: str, sign: str, target: tuple[str, str, str]) -> str:
    """What one locker's state adds to (or takes from) the booked counts of its automat:
    its open reservations, when it is on offer (keys) or empty (lockers)."""
    open_ = (
        "(SELECT count(*) FROM contract_reservations r"  # noqa: S608 - constants only
        f" WHERE r.automat_id = {row}.automat_id"
        f" AND r.locker_index = {row}.locker_index AND r.counted AND r.key_id IS "
    )
    offered = _OFFERED.replace("l.", f"{row}.")
    empty = _EMPTY.replace("l.", f"{row}.")
    key = f"(CASE WHEN {offered} THEN {open_}NOT NULL) ELSE 0 END)"
    locker = f"(CASE WHEN {empty} THEN {open_}NULL) ELSE 0 END)"
    return _booked_update(row, sign, target, key, locker)


# The shortlist order of contracts.rank_automats: what is free now, then the most
# recently seen (never seen last: PostgreSQL must be told, SQLite sorts NULL lowest
# already), then the id.
_INDEXES = {
    "keys": "(keys_inside - keys_booked)",
    "empty": "(empty_lockers - lockers_booked)",
}


def create_rank_indexes(target: tuple[str, str, str] = AUTOMATS) -> None:
    """``ix_<table>_rank_keys`` and ``_empty`` on the table of ``target``."""
    table, id_, _ = target
    postgres = op.get_bind().dialect.name == "postgresql"
    seen = "last_seen_at DESC NULLS LAST" if postgres else "last_seen_at DESC"
    for name, available in _INDEXES.items():
        op.create_index(
            f"ix_{table}_rank_{name}", table, [sa.text(f"{available} DESC"), sa.text(seen), id_]
        )


def drop_rank_indexes(target: tuple[str, str, str] = AUTOMATS) -> None:
    table = target[0]
    for name in _INDEXES:
        op.drop_index(f"ix_{table}_rank_{name}", table_name=table)


def create_triggers(target: tuple[str, str, str] = AUTOMATS) -> None:
    """The triggers on contract_reservations and lockers that keep keys_booked and
    lockers_booked in ``target``."""
    postgres = op.get_bind().dialect.name == "postgresql"
    old_r, new_r = (
        _reservation_adjust(row, sign, target) for row, sign in (("OLD", "-"), ("NEW", "+"))
    )
    old_l, new_l = (_locker_adjust(row, sign, target) for row, sign in (("OLD", "-"), ("NEW", "+")))
    watched = "AFTER UPDATE OF counted, key_id, automat_id ON contract_reservations"
    if postgres:
        op.execute(
            "CREATE FUNCTION reservations_booked() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            f"  IF TG_OP IN ('UPDATE', 'DELETE') THEN {old_r} END IF;\n"
            f"  IF TG_OP IN ('UPDATE', 'INSERT') THEN {new_r} END IF;\n"
            "  RETURN NULL;\n"
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER reservations_booked AFTER INSERT OR DELETE OR "
            f"{watched.removeprefix('AFTER ')} FOR EACH ROW EXECUTE FUNCTION reservations_booked()"
        )
        op.execute(
            "CREATE FUNCTION lockers_booked() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            f"  IF TG_OP IN ('UPDATE', 'DELETE') THEN {old_l} END IF;\n"
            f"  IF TG_OP IN ('UPDATE', 'INSERT') THEN {new_l} END IF;\n"
            "  RETURN NULL;\n"
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER lockers_booked AFTER INSERT OR DELETE OR UPDATE OF key_id, "
            "is_key_inside ON lockers FOR EACH ROW EXECUTE FUNCTION lockers_booked()"
        )
        return
    op.execute(
        "CREATE TRIGGER reservations_booked_insert AFTER INSERT ON contract_reservations "
        f"BEGIN {new_r} END"
    )
    op.execute(
        "CREATE TRIGGER reservations_booked_delete AFTER DELETE ON contract_reservations "
        f"BEGIN {old_r} END"
    )
    op.execute(f"CREATE TRIGGER reservations_booked_update {watched} BEGIN {old_r} {new_r} END")
    op.execute(f"CREATE TRIGGER lockers_booked_insert AFTER INSERT ON lockers BEGIN {new_l} END")
    op.execute(f"CREATE TRIGGER lockers_booked_delete AFTER DELETE ON lockers BEGIN {old_l} END")
    op.execute(
        "CREATE TRIGGER lockers_booked_update AFTER UPDATE OF key_id, is_key_inside ON lockers "
        f"BEGIN {old_l} {new_l} END"
    )


def drop_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER lockers_booked ON lockers")
        op.execute("DROP FUNCTION lockers_booked()")
        op.execute("DROP TRIGGER reservations_booked ON contract_reservations")
        op.execute("DROP FUNCTION reservations_booked()")
    else:
        for event in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER lockers_booked_{event}")
            op.execute(f"DROP TRIGGER reservations_booked_{event}")


# Every SQL text here is built from the constant fragments above; nothing comes from
# input (hence the S608 exemptions).


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for column in ("keys_booked", "lockers_booked"):
        op.add_column(
            "automats", sa.Column(column, sa.Integer(), nullable=False, server_default="0")
        )
    op.add_column(
        "contract_reservations",
        sa.Column("counted", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    # Reservations already over are not counted (SQLite keeps naive UTC, as UtcDateTime).
    now = datetime.now(UTC)
    reservations = sa.table(
        "contract_reservations",
        sa.column("until", sa.DateTime(timezone=True)),
        sa.column("counted", sa.Boolean()),
    )
    op.get_bind().execute(
        sa.update(reservations)
        .where(reservations.c.until <= sa.bindparam("now", type_=sa.DateTime(timezone=True)))
        .values(counted=False),
        {"now": now if postgres else now.replace(tzinfo=None)},
    )
    booked = (
        "(SELECT count(*) FROM contract_reservations r JOIN lockers l"
        " ON l.automat_id = r.automat_id AND l.locker_index = r.locker_index"
        " WHERE r.automat_id = automats.id AND r.counted AND r.key_id IS {} AND {})"
    )
    op.execute(
        f"UPDATE automats SET keys_booked = {booked.format('NOT NULL', _OFFERED)},"  # noqa: S608
        f" lockers_booked = {booked.format('NULL', _EMPTY)}"
    )
    # free_keys asks, per locker, for a reservation overlapping the period: one probe.
    op.create_index(
        "ix_contract_reservations_locker_until",
        "contract_reservations",
        ["automat_id", "locker_index", "until"],
    )
    create_rank_indexes()
    create_triggers()


def downgrade() -> None:
    drop_triggers()
    drop_rank_indexes()
    op.drop_index("ix_contract_reservations_locker_until", table_name="contract_reservations")
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), as in 0011.
    op.drop_column("contract_reservations", "counted")
    op.drop_column("automats", "lockers_booked")
    op.drop_column("automats", "keys_booked")
