"""secret custody: the secret key's check value

Revision ID: 0016
Revises: 0012
Create Date: 2026-11-30 07:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per fact; the process writes the key check on its first start
    # (it alone knows the key), see adapters/secret_custody.py.
    op.create_table(
        "server_metadata",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_metadata")),
    )


def downgrade() -> None:
    op.drop_table("server_metadata")
