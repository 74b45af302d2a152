"""automat_events.contract_id, outbox.subject: what a contract's timeline is made of; and
contracts by creation time

Revision ID: 0023
Revises: 0025
Create Date: 2026-12-12 09:00:00.000000

The console shows each contract's history (docs/console.md, "Contracts"): the
device events that moved it (a code typed, a key taken or put back) and the
webhook deliveries that reported it. Both were stored without saying which
contract they were about. ``automat_events.contract_id`` is set by the contract
code in the transaction that applies such an event; ``outbox.subject``
(``contract:<id>``) by ``webhooks.publish`` for an event about a contract. Rows
stored before this revision have neither: their contracts' timelines show what
the contract rows themselves record (the latest fetch and return of each key).

``ix_contracts_created_at_id`` serves the console's contract list, newest first
over a whole subtree: PostgreSQL read 100,000 contracts and sorted them for each
page (53 ms) where it now reads backwards until a page is full (11 ms;
bench/console_contracts.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("automat_events", sa.Column("contract_id", sa.String(24), nullable=True))
    op.create_index("ix_automat_events_contract_id", "automat_events", ["contract_id"])
    op.add_column("outbox", sa.Column("subject", sa.Text(), nullable=True))
    op.create_index("ix_outbox_subject", "outbox", ["subject"])
    op.create_index("ix_contracts_created_at_id", "contracts", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_contracts_created_at_id", table_name="contracts")
    op.drop_index("ix_outbox_subject", table_name="outbox")
    op.drop_column("outbox", "subject")
    op.drop_index("ix_automat_events_contract_id", table_name="automat_events")
    op.drop_column("automat_events", "contract_id")
