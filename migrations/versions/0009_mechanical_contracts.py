"""mechanical key contracts: their own fields beside the shared contracts row

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 21:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mechanical_contracts",
        sa.Column("contract_id", sa.String(length=24), nullable=False),
        sa.Column("root_unit_id", sa.String(length=24), nullable=False),
        sa.Column("public_id", sa.String(length=128), nullable=False),
        sa.Column("free_locker_after_fetch", sa.Boolean(), nullable=False),
        sa.Column("user_verification", sa.String(length=1), nullable=False),
        sa.Column("pick_up_info", sa.Text(), nullable=True),
        sa.Column("signature_token", sa.String(length=64), nullable=True),
        sa.Column("signed_at", keyautomat.adapters.orm.UtcDateTime(), nullable=True),
        sa.Column("signature_name", sa.Text(), nullable=True),
        sa.Column("signature_data", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["contract_id"],
            ["contracts.id"],
            name=op.f("fk_mechanical_contracts_contract_id_contracts"),
        ),
        sa.ForeignKeyConstraint(
            ["root_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_mechanical_contracts_root_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("contract_id", name=op.f("pk_mechanical_contracts")),
        sa.UniqueConstraint(
            "root_unit_id", "public_id", name=op.f("uq_mechanical_contracts_root_unit_id")
        ),
        sa.UniqueConstraint(
            "signature_token", name=op.f("uq_mechanical_contracts_signature_token")
        ),
    )
    op.create_table(
        "strong_auth_units",
        sa.Column("organization_unit_id", sa.String(length=24), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_strong_auth_units_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("organization_unit_id", name=op.f("pk_strong_auth_units")),
    )


def downgrade() -> None:
    op.drop_table("strong_auth_units")
    op.drop_table("mechanical_contracts")
