"""notifications: per-unit settings and the per-message index of the admin view

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 20:25:17.462050
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_settings",
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("defaults", sa.Text(), nullable=True),
        sa.Column("start_reminder_lead_seconds", sa.Integer(), nullable=True),
        sa.Column("end_reminder_lead_seconds", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=True),
        sa.Column("sender_name", sa.Text(), nullable=True),
        sa.Column("sms_sender_id", sa.Text(), nullable=True),
        sa.Column("reply_to", sa.Text(), nullable=True),
        sa.Column("updated_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_notification_settings_organization_unit_id_organization_units"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_unit_id", name=op.f("pk_notification_settings")),
    )
    op.create_table(
        "notifications",
        sa.Column(
            "outbox_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("contract_id", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("skipped_reason", sa.Text(), nullable=True),
        sa.Column("created_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox.id"],
            name=op.f("fk_notifications_outbox_id_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("outbox_id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_contract_id", ["contract_id"], unique=False)
        batch_op.create_index(
            "ix_notifications_organization_unit_id_outbox_id",
            ["organization_unit_id", "outbox_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_organization_unit_id_outbox_id")
        batch_op.drop_index("ix_notifications_contract_id")

    op.drop_table("notifications")
    op.drop_table("notification_settings")
