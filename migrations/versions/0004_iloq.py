"""iloq: key registry and the emulated iLOQ S5 locking systems

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 20:23:15.682087
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "iloq_emu_keys",
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("valid_from", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("valid_until", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("planned_person_id", sa.String(length=64), nullable=True),
        sa.Column(
            "planned_valid_from", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "planned_valid_until", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("created_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "programmed_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_iloq_emu_keys_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("organization_unit_id", "id", name=op.f("pk_iloq_emu_keys")),
    )
    op.create_table(
        "iloq_emu_persons",
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=False),
        sa.Column("last_name", sa.Text(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_iloq_emu_persons_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("organization_unit_id", "id", name=op.f("pk_iloq_emu_persons")),
    )
    op.create_table(
        "iloq_emu_programming_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("access_right_ids", sa.Text(), nullable=False),
        sa.Column("person_id", sa.String(length=64), nullable=True),
        sa.Column("valid_from", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("valid_until", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_iloq_emu_programming_log_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iloq_emu_programming_log")),
    )
    with op.batch_alter_table("iloq_emu_programming_log", schema=None) as batch_op:
        batch_op.create_index(
            "ix_iloq_emu_programming_log_unit_key",
            ["organization_unit_id", "key_id", "id"],
            unique=False,
        )

    op.create_table(
        "iloq_emu_real_estates",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_iloq_emu_real_estates_organization_unit_id_organization_units"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["iloq_emu_real_estates.id"],
            name=op.f("fk_iloq_emu_real_estates_parent_id_iloq_emu_real_estates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iloq_emu_real_estates")),
    )
    with op.batch_alter_table("iloq_emu_real_estates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_iloq_emu_real_estates_organization_unit_id"),
            ["organization_unit_id"],
            unique=False,
        )

    op.create_table(
        "iloq_emu_access_rights",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("real_estate_id", sa.String(length=36), nullable=True),
        sa.Column("api_enabled", sa.Boolean(), nullable=False),
        sa.Column("default_access", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_iloq_emu_access_rights_organization_unit_id_organization_units"),
        ),
        sa.ForeignKeyConstraint(
            ["real_estate_id"],
            ["iloq_emu_real_estates.id"],
            name=op.f("fk_iloq_emu_access_rights_real_estate_id_iloq_emu_real_estates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iloq_emu_access_rights")),
    )
    with op.batch_alter_table("iloq_emu_access_rights", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_iloq_emu_access_rights_organization_unit_id"),
            ["organization_unit_id"],
            unique=False,
        )

    op.create_table(
        "iloq_emu_blocklist",
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("added_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_unit_id", "key_id"],
            ["iloq_emu_keys.organization_unit_id", "iloq_emu_keys.id"],
            name=op.f("fk_iloq_emu_blocklist_organization_unit_id_iloq_emu_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_unit_id", "key_id", name=op.f("pk_iloq_emu_blocklist")
        ),
    )
    op.create_table(
        "iloq_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.Column("automat_id", sa.String(length=16), nullable=True),
        sa.Column("locker_index", sa.Integer(), nullable=True),
        sa.Column("created_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["automat_id"], ["automats.id"], name=op.f("fk_iloq_keys_automat_id_automats")
        ),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_iloq_keys_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iloq_keys")),
    )
    with op.batch_alter_table("iloq_keys", schema=None) as batch_op:
        batch_op.create_index("ix_iloq_keys_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_iloq_keys_locker", ["automat_id", "locker_index"], unique=True)
        batch_op.create_index(
            batch_op.f("ix_iloq_keys_organization_unit_id"), ["organization_unit_id"], unique=False
        )

    op.create_table(
        "iloq_emu_key_rights",
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("access_right_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["access_right_id"],
            ["iloq_emu_access_rights.id"],
            name=op.f("fk_iloq_emu_key_rights_access_right_id_iloq_emu_access_rights"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_unit_id", "key_id"],
            ["iloq_emu_keys.organization_unit_id", "iloq_emu_keys.id"],
            name=op.f("fk_iloq_emu_key_rights_organization_unit_id_iloq_emu_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_unit_id",
            "key_id",
            "access_right_id",
            "kind",
            name=op.f("pk_iloq_emu_key_rights"),
        ),
    )


def downgrade() -> None:
    # Dependants first; each table takes its indexes with it.
    for table in (
        "iloq_emu_key_rights",
        "iloq_keys",
        "iloq_emu_blocklist",
        "iloq_emu_access_rights",
        "iloq_emu_real_estates",
        "iloq_emu_programming_log",
        "iloq_emu_persons",
        "iloq_emu_keys",
    ):
        op.drop_table(table)
