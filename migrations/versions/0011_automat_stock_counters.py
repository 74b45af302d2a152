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


# Where the counts live: (table, its automat id column, a statement run before each
# adjustment, ``{row}`` standing for OLD or NEW). On automats until migration 0028
# moved them to automat_stock, which reuses the triggers below.
AUTOMATS = ("automats", "id", "")


def _adjust(row: str, sign: str, target: tuple[str, str, str]) -> str:
    # Constant fragments only: nothing here comes from input.
    key, empty = _KEY.replace("{row}", row), _EMPTY.replace("{row}", row)
    table, id_, before = target
    lock = before.replace("{row}", row)
    parts = [lock, f"UPDATE {table} SET keys_inside = keys_inside", sign, key, ","]  # noqa: S608
    parts += ["empty_lockers = empty_lockers", sign, empty, f"WHERE {id_} =", f"{row}.automat_id;"]
    return " ".join(parts)


def create_triggers(target: tuple[str, str, str] = AUTOMATS) -> None:
    """The triggers on lockers that keep keys_inside and empty_lockers in ``target``."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION lockers_stock() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            f"  IF TG_OP IN ('UPDATE', 'DELETE') THEN {_adjust('OLD', '-', target)} END IF;\n"
            f"  IF TG_OP IN ('UPDATE', 'INSERT') THEN {_adjust('NEW', '+', target)} END IF;\n"
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
        f"BEGIN {_adjust('NEW', '+', target)} END"
    )
    op.execute(
        "CREATE TRIGGER lockers_stock_delete AFTER DELETE ON lockers "
        f"BEGIN {_adjust('OLD', '-', target)} END"
    )
    op.execute(
        "CREATE TRIGGER lockers_stock_update AFTER UPDATE ON lockers "
        f"BEGIN {_adjust('OLD', '-', target)} {_adjust('NEW', '+', target)} END"
    )


def drop_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER lockers_stock ON lockers")
        op.execute("DROP FUNCTION lockers_stock()")
    else:
        for event in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER lockers_stock_{event}")


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
    create_triggers()


def downgrade() -> None:
    drop_triggers()
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of automats would
    # trip the foreign keys that point at it.
    op.drop_column("automats", "empty_lockers")
    op.drop_column("automats", "keys_inside")
