"""indexes that give a group's automats in ranking order: most keys (or empty lockers) first

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 00:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = {"ix_automats_rank_keys": "keys_inside", "ix_automats_rank_empty": "empty_lockers"}


def upgrade() -> None:
    # The order of contracts.rank_automats' shortlist: the count, then the most
    # recently seen (never seen last: PostgreSQL must be told, SQLite sorts NULL
    # lowest already), then the id. A group's best few are then read off the index.
    seen = "last_seen_at DESC"
    if op.get_bind().dialect.name == "postgresql":
        seen += " NULLS LAST"
    for name, column in _INDEXES.items():
        op.create_index(name, "automats", [sa.text(f"{column} DESC"), sa.text(seen), "id"])


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name="automats")
