"""secret custody: the secret key's check value; signature tokens stored hashed

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 07:40:00.000000
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per fact; the process writes the key check on its first start
    # (it alone knows the key), see adapters/secret_custody.py.
    op.create_table(
        "server_metadata",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_metadata")),
    )
    # Signature links' tokens: only their SHA-256 is kept from now on, so a copy
    # of the database opens no signature page (service_layer/mechanical_contracts.py,
    # token_hash). RENAME COLUMN works on both engines (SQLite 3.25+).
    op.execute(
        "ALTER TABLE mechanical_contracts RENAME COLUMN signature_token TO signature_token_hash"
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE mechanical_contracts RENAME CONSTRAINT "
            "uq_mechanical_contracts_signature_token "
            "TO uq_mechanical_contracts_signature_token_hash"
        )
    table = sa.table(
        "mechanical_contracts", sa.column("contract_id"), sa.column("signature_token_hash")
    )
    rows = bind.execute(
        sa.select(table.c.contract_id, table.c.signature_token_hash).where(
            table.c.signature_token_hash.is_not(None)
        )
    ).all()
    for contract_id, token in rows:
        bind.execute(
            table.update()
            .where(table.c.contract_id == contract_id)
            .values(signature_token_hash=hashlib.sha256(token.encode()).hexdigest())
        )


def downgrade() -> None:
    # The tokens cannot be recovered from their hashes: open links stop working.
    op.execute("UPDATE mechanical_contracts SET signature_token_hash = NULL")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE mechanical_contracts RENAME CONSTRAINT "
            "uq_mechanical_contracts_signature_token_hash "
            "TO uq_mechanical_contracts_signature_token"
        )
    op.execute(
        "ALTER TABLE mechanical_contracts RENAME COLUMN signature_token_hash TO signature_token"
    )
    op.drop_table("server_metadata")
