"""contracts

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contracts",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.Column("contract_type", sa.Integer(), nullable=False),
        sa.Column("start", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("end", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("contact", sa.Text(), nullable=True),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("created_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "end_evaluated_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "completed_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("deleted_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_contracts_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contracts")),
    )
    with op.batch_alter_table("contracts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contracts_unit_created_at_id",
            ["organization_unit_id", "created_at", "id"],
            unique=False,
        )

    op.create_table(
        "contract_keys",
        sa.Column("contract_id", sa.String(length=24), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("automat_id", sa.String(length=16), nullable=True),
        sa.Column("locker_index", sa.Integer(), nullable=True),
        sa.Column("pincode", sa.String(length=16), nullable=True),
        sa.Column("pincode_id", sa.String(length=24), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=True),
        sa.Column("in_history", sa.Boolean(), nullable=False),
        sa.Column(
            "programmed_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("program_failures", sa.Integer(), nullable=False),
        sa.Column("fetched_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("returned_at", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["automat_id"], ["automats.id"], name=op.f("fk_contract_keys_automat_id_automats")
        ),
        sa.ForeignKeyConstraint(
            ["contract_id"], ["contracts.id"], name=op.f("fk_contract_keys_contract_id_contracts")
        ),
        sa.PrimaryKeyConstraint("contract_id", "position", name=op.f("pk_contract_keys")),
    )
    with op.batch_alter_table("contract_keys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contract_keys_automat_locker", ["automat_id", "locker_index"], unique=False
        )
        batch_op.create_index("ix_contract_keys_key_id", ["key_id"], unique=False)
        batch_op.create_index("ix_contract_keys_pincode_id", ["pincode_id"], unique=False)

    op.create_table(
        "contract_reservations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("contract_id", sa.String(length=24), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("automat_id", sa.String(length=16), nullable=False),
        sa.Column("locker_index", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("start", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("until", keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["automat_id"],
            ["automats.id"],
            name=op.f("fk_contract_reservations_automat_id_automats"),
        ),
        sa.ForeignKeyConstraint(
            ["contract_id"],
            ["contracts.id"],
            name=op.f("fk_contract_reservations_contract_id_contracts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contract_reservations")),
    )
    with op.batch_alter_table("contract_reservations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contract_reservations_automat_until", ["automat_id", "until"], unique=False
        )
        batch_op.create_index(
            "ix_contract_reservations_contract", ["contract_id", "position"], unique=False
        )
        batch_op.create_index(
            "ix_contract_reservations_key_until", ["key_id", "until"], unique=False
        )

    with op.batch_alter_table("device_pincodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("program_first", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("device_pincodes", schema=None) as batch_op:
        batch_op.drop_column("program_first")

    with op.batch_alter_table("contract_reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_contract_reservations_key_until")
        batch_op.drop_index("ix_contract_reservations_contract")
        batch_op.drop_index("ix_contract_reservations_automat_until")

    op.drop_table("contract_reservations")
    with op.batch_alter_table("contract_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_contract_keys_pincode_id")
        batch_op.drop_index("ix_contract_keys_key_id")
        batch_op.drop_index("ix_contract_keys_automat_locker")

    op.drop_table("contract_keys")
    with op.batch_alter_table("contracts", schema=None) as batch_op:
        batch_op.drop_index("ix_contracts_unit_created_at_id")

    op.drop_table("contracts")
