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

# What an open ("counted") reservation adds to its automat's counts: a reserved
# key, or a reserved empty locker (return contracts). docs/contracts.md
# "How a group is ranked".
_KEY = "(CASE WHEN {row}.counted AND {row}.key_id IS NOT NULL THEN 1 ELSE 0 END)"
_LOCKER = "(CASE WHEN {row}.counted AND {row}.key_id IS NULL THEN 1 ELSE 0 END)"

# The shortlist order of contracts.rank_automats: what is on offer minus what is
# booked, then the most recently seen (never seen last: PostgreSQL must be told,
# SQLite sorts NULL lowest already), then the id.
_INDEXES = {
    "ix_automats_rank_keys": "(keys_inside - keys_booked)",
    "ix_automats_rank_empty": "(empty_lockers - lockers_booked)",
}


def _adjust(row: str, sign: str) -> str:
    # Constant fragments only: nothing here comes from input.
    key, locker = _KEY.replace("{row}", row), _LOCKER.replace("{row}", row)
    parts = ["UPDATE automats SET keys_booked = keys_booked", sign, key, ","]
    parts += ["lockers_booked = lockers_booked", sign, locker, "WHERE id =", row + ".automat_id;"]
    return " ".join(parts)


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
    op.execute(
        "UPDATE automats SET keys_booked = (SELECT count(*) FROM contract_reservations r"
        " WHERE r.automat_id = automats.id AND r.counted AND r.key_id IS NOT NULL),"
        " lockers_booked = (SELECT count(*) FROM contract_reservations r"
        " WHERE r.automat_id = automats.id AND r.counted AND r.key_id IS NULL)"
    )
    # free_keys asks, per locker, for a reservation overlapping the period: one probe.
    op.create_index(
        "ix_contract_reservations_locker_until",
        "contract_reservations",
        ["automat_id", "locker_index", "until"],
    )
    seen = "last_seen_at DESC NULLS LAST" if postgres else "last_seen_at DESC"
    for name, available in _INDEXES.items():
        op.create_index(name, "automats", [sa.text(f"{available} DESC"), sa.text(seen), "id"])
    watched = "AFTER UPDATE OF counted, key_id, automat_id ON contract_reservations"
    if postgres:
        op.execute(
            "CREATE FUNCTION reservations_booked() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            f"  IF TG_OP IN ('UPDATE', 'DELETE') THEN {_adjust('OLD', '-')} END IF;\n"
            f"  IF TG_OP IN ('UPDATE', 'INSERT') THEN {_adjust('NEW', '+')} END IF;\n"
            "  RETURN NULL;\n"
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER reservations_booked AFTER INSERT OR DELETE OR "
            f"{watched.removeprefix('AFTER ')} FOR EACH ROW EXECUTE FUNCTION reservations_booked()"
        )
        return
    op.execute(
        "CREATE TRIGGER reservations_booked_insert AFTER INSERT ON contract_reservations "
        f"BEGIN {_adjust('NEW', '+')} END"
    )
    op.execute(
        "CREATE TRIGGER reservations_booked_delete AFTER DELETE ON contract_reservations "
        f"BEGIN {_adjust('OLD', '-')} END"
    )
    op.execute(
        f"CREATE TRIGGER reservations_booked_update {watched} "
        f"BEGIN {_adjust('OLD', '-')} {_adjust('NEW', '+')} END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER reservations_booked ON contract_reservations")
        op.execute("DROP FUNCTION reservations_booked()")
    else:
        for event in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER reservations_booked_{event}")
    for name in _INDEXES:
        op.drop_index(name, table_name="automats")
    op.drop_index("ix_contract_reservations_locker_until", table_name="contract_reservations")
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), as in 0011.
    op.drop_column("contract_reservations", "counted")
    op.drop_column("automats", "lockers_booked")
    op.drop_column("automats", "keys_booked")
