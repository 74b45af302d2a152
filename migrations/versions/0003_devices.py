"""devices: device links, applied device events, domain events, alarms, device pincodes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 20:22:21.045027
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "automat_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("automat_id", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column(
            "occurred_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "recorded_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("locker_index", sa.Integer(), nullable=True),
        sa.Column("key_id", sa.Text(), nullable=True),
        sa.Column("code", sa.String(length=16), nullable=True),
        sa.Column("source_message_id", sa.String(length=64), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["automat_id"], ["automats.id"], name=op.f("fk_automat_events_automat_id_automats")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automat_events")),
    )
    with op.batch_alter_table("automat_events", schema=None) as batch_op:
        batch_op.create_index("ix_automat_events_automat_id_id", ["automat_id", "id"], unique=False)

    op.create_table(
        "device_alarms",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("automat_id", sa.String(length=16), nullable=False),
        sa.Column("alarm_type", sa.String(length=40), nullable=False),
        sa.Column("started_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "acknowledged_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("acknowledged_by", sa.String(length=24), nullable=True),
        sa.ForeignKeyConstraint(
            ["automat_id"], ["automats.id"], name=op.f("fk_device_alarms_automat_id_automats")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_alarms")),
    )
    with op.batch_alter_table("device_alarms", schema=None) as batch_op:
        batch_op.create_index(
            "ix_device_alarms_automat_id_started_at", ["automat_id", "started_at"], unique=False
        )

    op.create_table(
        "device_inbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("automat_id", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column(
            "occurred_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "received_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["automat_id"], ["automats.id"], name=op.f("fk_device_inbox_automat_id_automats")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_inbox")),
        sa.UniqueConstraint("automat_id", "message_id", name="uq_device_inbox_automat_message"),
    )
    op.create_table(
        "device_links",
        sa.Column("automat_id", sa.String(length=16), nullable=False),
        sa.Column("hw_id", sa.Text(), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("bind_pincode_hash", sa.String(length=64), nullable=True),
        sa.Column("bound_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("firmware", sa.Text(), nullable=True),
        sa.Column("locker_count", sa.Integer(), nullable=True),
        sa.Column("desired_version", sa.BigInteger(), nullable=False),
        sa.Column("synced_version", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["automat_id"], ["automats.id"], name=op.f("fk_device_links_automat_id_automats")
        ),
        sa.PrimaryKeyConstraint("automat_id", name=op.f("pk_device_links")),
    )
    op.create_table(
        "device_pincodes",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("automat_id", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("locker_index", sa.Integer(), nullable=False),
        sa.Column("valid_from", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=True),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["automat_id"], ["automats.id"], name=op.f("fk_device_pincodes_automat_id_automats")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_pincodes")),
    )
    with op.batch_alter_table("device_pincodes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_device_pincodes_automat_id_code", ["automat_id", "code"], unique=False
        )
        batch_op.create_index(
            "ix_device_pincodes_automat_id_version", ["automat_id", "version"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("device_pincodes", schema=None) as batch_op:
        batch_op.drop_index("ix_device_pincodes_automat_id_version")
        batch_op.drop_index("ix_device_pincodes_automat_id_code")

    op.drop_table("device_pincodes")
    op.drop_table("device_links")
    op.drop_table("device_inbox")
    with op.batch_alter_table("device_alarms", schema=None) as batch_op:
        batch_op.drop_index("ix_device_alarms_automat_id_started_at")

    op.drop_table("device_alarms")
    with op.batch_alter_table("automat_events", schema=None) as batch_op:
        batch_op.drop_index("ix_automat_events_automat_id_id")

    op.drop_table("automat_events")
