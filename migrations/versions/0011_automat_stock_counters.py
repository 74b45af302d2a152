"""per-automat counts of keys inside and empty lockers, kept by triggers on lockers

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 22:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What a locker adds to its automat's counts (docs/contracts.md "How a group is ranked").
_KEY = "(CASE WHEN {row}.key_id IS NOT NULL AND {row}.is_key_inside THEN 1 ELSE 0 END)"
_EMPTY = "(CASE WHEN {row}.key_id IS NULL AND NOT {row}.is_key_inside THEN 1 ELSE 0 END)"


def _adjust(row: str, sign: str) -> str:
    # Constant fragments only: nothing here comes from input.
    key, empty = _KEY.replace("{row}", row), _EMPTY.replace("{row}", row)
    parts = ["UPDATE automats SET keys_inside = keys_inside", sign, key, ","]
    parts += ["empty_lockers = empty_lockers", sign, empty, "WHERE id =", row + ".automat_id;"]
    return " ".join(parts)


def upgrade() -> None:
    op.add_column(
        "automats", sa.Column("keys_inside", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "automats", sa.Column("empty_lockers", sa.Integer(), nullable=False, server_default="0")
    )
    op.execute(
        "UPDATE automats SET keys_inside = (SELECT count(*) FROM lockers l"
        " WHERE l.automat_id = automats.id AND l.key_id IS NOT NULL AND l.is_key_inside),"
        " empty_lockers = (SELECT count(*) FROM lockers l"
        " WHERE l.automat_id = automats.id AND l.key_id IS NULL AND NOT l.is_key_inside)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION lockers_stock() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            f"  IF TG_OP IN ('UPDATE', 'DELETE') THEN {_adjust('OLD', '-')} END IF;\n"
            f"  IF TG_OP IN ('UPDATE', 'INSERT') THEN {_adjust('NEW', '+')} END IF;\n"
            "  RETURN NULL;\n"
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER lockers_stock AFTER INSERT OR UPDATE OR DELETE ON lockers "
            "FOR EACH ROW EXECUTE FUNCTION lockers_stock()"
        )
        return
    op.execute(
        "CREATE TRIGGER lockers_stock_insert AFTER INSERT ON lockers "
        f"BEGIN {_adjust('NEW', '+')} END"
    )
    op.execute(
        "CREATE TRIGGER lockers_stock_delete AFTER DELETE ON lockers "
        f"BEGIN {_adjust('OLD', '-')} END"
    )
    op.execute(
        "CREATE TRIGGER lockers_stock_update AFTER UPDATE ON lockers "
        f"BEGIN {_adjust('OLD', '-')} {_adjust('NEW', '+')} END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER lockers_stock ON lockers")
        op.execute("DROP FUNCTION lockers_stock()")
    else:
        for event in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER lockers_stock_{event}")
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of automats would
    # trip the foreign keys that point at it.
    op.drop_column("automats", "empty_lockers")
    op.drop_column("automats", "keys_inside")
