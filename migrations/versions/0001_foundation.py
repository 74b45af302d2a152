"""foundation: organization units, service accounts, automats, groups

Revision ID: 0001
Revises:
Create Date: 2026-11-25 20:16:04.686219
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "id_counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_id_counters")),
    )
    # Automat ids are handed out from this counter (see service_layer/automats.py).
    op.execute("INSERT INTO id_counters (name, value) VALUES ('automat', 0)")
    op.create_table(
        "organization_units",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=True),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.String(length=24), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("iloq_username", sa.Text(), nullable=True),
        sa.Column("iloq_password_encrypted", sa.Text(), nullable=True),
        sa.Column("iloq_customer_code", sa.Text(), nullable=True),
        sa.Column("iloq_service_address", sa.Text(), nullable=True),
        sa.Column("created_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["organization_units.id"],
            name=op.f("fk_organization_units_parent_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_units")),
    )
    with op.batch_alter_table("organization_units", schema=None) as batch_op:
        batch_op.create_index("ix_organization_units_path", ["path"], unique=False)

    op.create_table(
        "automats",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("postal_code", sa.Text(), nullable=True),
        sa.Column("postal_office", sa.Text(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("product", sa.String(length=16), nullable=False),
        sa.Column("hw_id", sa.Text(), nullable=True),
        sa.Column("installation_pincode", sa.String(length=16), nullable=True),
        sa.Column("lifecycle_state", sa.String(length=32), nullable=False),
        sa.Column("created_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "last_seen_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_automats_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automats")),
        sa.UniqueConstraint("hw_id", name=op.f("uq_automats_hw_id")),
        sa.UniqueConstraint("installation_pincode", name=op.f("uq_automats_installation_pincode")),
    )
    with op.batch_alter_table("automats", schema=None) as batch_op:
        batch_op.create_index("ix_automats_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_automats_organization_unit_id"), ["organization_unit_id"], unique=False
        )

    op.create_table(
        "groups",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=True),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("created_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_groups_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
    )
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.create_index("ix_groups_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_groups_organization_unit_id"), ["organization_unit_id"], unique=False
        )

    op.create_table(
        "service_accounts",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_service_accounts_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_accounts")),
    )
    with op.batch_alter_table("service_accounts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_service_accounts_organization_unit_id"),
            ["organization_unit_id"],
            unique=False,
        )

    op.create_table(
        "automat_groups",
        sa.Column("automat_id", sa.String(length=16), nullable=False),
        sa.Column("group_id", sa.String(length=24), nullable=False),
        sa.ForeignKeyConstraint(
            ["automat_id"], ["automats.id"], name=op.f("fk_automat_groups_automat_id_automats")
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_automat_groups_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("automat_id", "group_id", name=op.f("pk_automat_groups")),
    )
    with op.batch_alter_table("automat_groups", schema=None) as batch_op:
        batch_op.create_index("ix_automat_groups_group_id", ["group_id"], unique=False)

    op.create_table(
        "lockers",
        sa.Column("automat_id", sa.String(length=16), nullable=False),
        sa.Column("locker_index", sa.Integer(), nullable=False),
        sa.Column("is_key_inside", sa.Boolean(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=True),
        sa.Column("key_name", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["automat_id"], ["automats.id"], name=op.f("fk_lockers_automat_id_automats")
        ),
        sa.PrimaryKeyConstraint("automat_id", "locker_index", name=op.f("pk_lockers")),
    )


def downgrade() -> None:
    op.drop_table("lockers")
    with op.batch_alter_table("automat_groups", schema=None) as batch_op:
        batch_op.drop_index("ix_automat_groups_group_id")

    op.drop_table("automat_groups")
    with op.batch_alter_table("service_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_accounts_organization_unit_id"))

    op.drop_table("service_accounts")
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_groups_organization_unit_id"))
        batch_op.drop_index("ix_groups_created_at_id")

    op.drop_table("groups")
    with op.batch_alter_table("automats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_automats_organization_unit_id"))
        batch_op.drop_index("ix_automats_created_at_id")

    op.drop_table("automats")
    with op.batch_alter_table("organization_units", schema=None) as batch_op:
        batch_op.drop_index("ix_organization_units_path")

    op.drop_table("organization_units")
    op.drop_table("id_counters")
