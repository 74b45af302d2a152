"""mechanical keys: the caller-named keys of /v2/mechanical/keys

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 21:03:51.465958
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mechanical_keys",
        sa.Column("object_id", sa.String(length=24), nullable=False),
        sa.Column("root_unit_id", sa.String(length=24), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("rfid_hex", sa.String(length=64), nullable=True),
        sa.Column("selected_automat_id", sa.String(length=16), nullable=True),
        sa.Column("selected_manual_info", sa.Text(), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("stored_automat_id", sa.String(length=16), nullable=True),
        sa.Column("stored_locker_index", sa.Integer(), nullable=True),
        sa.Column("stored_manual_info", sa.Text(), nullable=True),
        sa.Column("created_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(selected_automat_id IS NULL) <> (selected_manual_info IS NULL)",
            name=op.f("ck_mechanical_keys_one_selected_storage"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_mechanical_keys_organization_unit_id_organization_units"),
        ),
        sa.ForeignKeyConstraint(
            ["root_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_mechanical_keys_root_unit_id_organization_units"),
        ),
        sa.ForeignKeyConstraint(
            ["selected_automat_id"],
            ["automats.id"],
            name=op.f("fk_mechanical_keys_selected_automat_id_automats"),
        ),
        sa.ForeignKeyConstraint(
            ["stored_automat_id"],
            ["automats.id"],
            name=op.f("fk_mechanical_keys_stored_automat_id_automats"),
        ),
        sa.PrimaryKeyConstraint("object_id", name=op.f("pk_mechanical_keys")),
        sa.UniqueConstraint("root_unit_id", "id", name=op.f("uq_mechanical_keys_root_unit_id")),
    )
    with op.batch_alter_table("mechanical_keys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mechanical_keys_created_at_id", ["created_at", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_mechanical_keys_organization_unit_id"),
            ["organization_unit_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_mechanical_keys_root_unit_id_rfid_hex", ["root_unit_id", "rfid_hex"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_mechanical_keys_selected_automat_id"),
            ["selected_automat_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_mechanical_keys_stored_locker",
            ["stored_automat_id", "stored_locker_index"],
            unique=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("mechanical_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_mechanical_keys_stored_locker")
        batch_op.drop_index(batch_op.f("ix_mechanical_keys_selected_automat_id"))
        batch_op.drop_index("ix_mechanical_keys_root_unit_id_rfid_hex")
        batch_op.drop_index(batch_op.f("ix_mechanical_keys_organization_unit_id"))
        batch_op.drop_index("ix_mechanical_keys_created_at_id")

    op.drop_table("mechanical_keys")
