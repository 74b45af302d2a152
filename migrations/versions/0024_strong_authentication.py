"""strong authentication: identity providers, logins, verification records, link expiry

Revision ID: 0024
Revises: 0022
Create Date: 2026-12-12 09:00:00.000000

userVerification "2" now holds a contract's codes back until the contact has
proved who they are with the unit's OpenID Connect provider
(docs/strong-authentication.md). Contracts that asked for "2" before this
revision got their codes at once (the flow did not exist); they keep them:
their ``signed_at`` is set to their creation time, so they count as verified,
and they have no verification record.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "mechanical_contracts",
        sa.Column("verification_link_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(
        "UPDATE mechanical_contracts SET signed_at = ("
        "SELECT contracts.created_at FROM contracts "
        "WHERE contracts.id = mechanical_contracts.contract_id) "
        "WHERE user_verification = '2' AND signed_at IS NULL"
    )
    op.create_table(
        "strong_auth_providers",
        sa.Column("organization_unit_id", sa.String(24), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("client_id", sa.String(256), nullable=False),
        sa.Column("client_secret_encrypted", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("match_rules", sa.Text(), nullable=False),
        sa.Column("acr_values", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_unit_id"],
            ["organization_units.id"],
            name=op.f("fk_strong_auth_providers_organization_unit_id_organization_units"),
        ),
        sa.PrimaryKeyConstraint("organization_unit_id", name=op.f("pk_strong_auth_providers")),
    )
    op.create_table(
        "strong_auth_logins",
        sa.Column("state_hash", sa.String(64), nullable=False),
        sa.Column("contract_id", sa.String(24), nullable=False),
        sa.Column("link_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["contract_id"],
            ["contracts.id"],
            name=op.f("fk_strong_auth_logins_contract_id_contracts"),
        ),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_strong_auth_logins")),
    )
    op.create_index(
        "ix_strong_auth_logins_contract_id_expires_at",
        "strong_auth_logins",
        ["contract_id", "expires_at"],
    )
    op.create_index("ix_strong_auth_logins_expires_at", "strong_auth_logins", ["expires_at"])
    op.create_table(
        "strong_auth_verifications",
        sa.Column("contract_id", sa.String(24), nullable=False),
        sa.Column("organization_unit_id", sa.String(24), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("subject_hash", sa.String(64), nullable=False),
        sa.Column("matched_claims", sa.Text(), nullable=False),
        sa.Column("acr", sa.String(128), nullable=True),
        sa.Column("amr", sa.String(256), nullable=True),
        sa.ForeignKeyConstraint(
            ["contract_id"],
            ["contracts.id"],
            name=op.f("fk_strong_auth_verifications_contract_id_contracts"),
        ),
        sa.PrimaryKeyConstraint("contract_id", name=op.f("pk_strong_auth_verifications")),
    )
    op.create_index(
        "ix_strong_auth_verifications_verified_at", "strong_auth_verifications", ["verified_at"]
    )


def downgrade() -> None:
    op.drop_index(
        "ix_strong_auth_verifications_verified_at", table_name="strong_auth_verifications"
    )
    op.drop_table("strong_auth_verifications")
    op.drop_index("ix_strong_auth_logins_expires_at", table_name="strong_auth_logins")
    op.drop_index("ix_strong_auth_logins_contract_id_expires_at", table_name="strong_auth_logins")
    op.drop_table("strong_auth_logins")
    op.drop_table("strong_auth_providers")
    with op.batch_alter_table("mechanical_contracts") as batch:
        batch.drop_column("verification_link_expires_at")
