"""contract_keys: indexes for the console dashboard's counts

Revision ID: 0026
Revises: 0023
Create Date: 2026-12-02 12:00:00.000000

The dashboard counts keys fetched and returned since midnight and the keys
overdue (status ``key-not-returned``). Without these indexes each count read
every contract key: about a second per dashboard at 100,000 contracts.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_contract_keys_fetched_at", "contract_keys", ["fetched_at"])
    op.create_index("ix_contract_keys_returned_at", "contract_keys", ["returned_at"])
    op.create_index("ix_contract_keys_status", "contract_keys", ["status"])


def downgrade() -> None:
    op.drop_index("ix_contract_keys_status", table_name="contract_keys")
    op.drop_index("ix_contract_keys_returned_at", table_name="contract_keys")
    op.drop_index("ix_contract_keys_fetched_at", table_name="contract_keys")
