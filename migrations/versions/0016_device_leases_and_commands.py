"""device leases and routed device commands: several gateway processes share the devices

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 14:10:00.000000

Every gateway hears every device and handles only those whose lease it holds
(``device_leases``). An API process that does not hold a device hands its
sendPincode / cancelSendPincode to the holder through ``device_commands``
(docs/deployment.md). On SQLite, one process does everything; the tables exist
there too.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from keyautomat.adapters.orm import UtcDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_leases",
        sa.Column("hw_id", sa.Text(), nullable=False),
        sa.Column("gateway_id", sa.Text(), nullable=False),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hw_id", name=op.f("pk_device_leases")),
    )
    op.create_index(op.f("ix_device_leases_gateway_id"), "device_leases", ["gateway_id"])
    op.create_index(op.f("ix_device_leases_expires_at"), "device_leases", ["expires_at"])
    op.create_table(
        "device_commands",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("automat_id", sa.String(16), nullable=False),
        sa.Column("hw_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("proximity", sa.Boolean(), nullable=False),
        sa.Column("expires_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("answer", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_commands")),
    )
    op.create_index(op.f("ix_device_commands_expires_at"), "device_commands", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_device_commands_expires_at"), table_name="device_commands")
    op.drop_table("device_commands")
    op.drop_index(op.f("ix_device_leases_expires_at"), table_name="device_leases")
    op.drop_index(op.f("ix_device_leases_gateway_id"), table_name="device_leases")
    op.drop_table("device_leases")
