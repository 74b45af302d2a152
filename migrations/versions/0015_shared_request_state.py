"""shared request state: the replay window's signatures and the rate limit's buckets

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 12:50:00.000000

Every API process on one PostgreSQL database shares them (entrypoints/api/auth.py),
so a request accepted by one process is a replay to all others, and an account's
rate counts across processes. SQLite installations run one process and keep
both in memory; the tables exist there too and stay empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_signatures",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_request_signatures")),
    )
    op.create_index(op.f("ix_request_signatures_expires_ms"), "request_signatures", ["expires_ms"])
    op.create_table(
        "rate_buckets",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_index(op.f("ix_request_signatures_expires_ms"), table_name="request_signatures")
    op.drop_table("request_signatures")
