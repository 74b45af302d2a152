"""indexes for ranking a group's automats: unended reservations, blocked keys, key lockers

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 21:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_contract_reservations_until_start",
        "contract_reservations",
        ["until", "start", "automat_id", "locker_index"],
        unique=False,
    )
    op.create_index(
        "ix_iloq_keys_blocked",
        "iloq_keys",
        ["id"],
        unique=False,
        sqlite_where=sa.text("blocked IS 1"),
        postgresql_where=sa.text("blocked IS true"),
    )
    op.create_index("ix_lockers_key_id", "lockers", ["key_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_lockers_key_id", table_name="lockers")
    op.drop_index("ix_iloq_keys_blocked", table_name="iloq_keys")
    op.drop_index("ix_contract_reservations_until_start", table_name="contract_reservations")
