"""automats.simulated, console_audit: the console's virtual automat

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-11 09:00:00.000000

``automats.simulated`` marks an automat that a simulator stands for (a demo automat
of ``serve --demo``, or one an admin marked): only such an automat has a virtual
keypad in the console, and only its simulator is ever sent keypad instructions
(docs/console.md, docs/device-protocol.md §11). ``console_audit`` records what
console users did at such an automat: every key pressed, digits masked.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch (table copy) on SQLite would drop the triggers that keep
    # the automat's counters (migrations 0011, 0012).
    op.add_column(
        "automats",
        sa.Column("simulated", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "console_audit",
        sa.Column("id", sa.String(24), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(24), nullable=False),
        sa.Column("user_email", sa.Text(), nullable=False),
        sa.Column("organization_unit_id", sa.String(24), nullable=False),
        sa.Column("automat_id", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_audit")),
    )
    op.create_index("ix_console_audit_automat_id_at", "console_audit", ["automat_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_console_audit_automat_id_at", table_name="console_audit")
    op.drop_table("console_audit")
    op.drop_column("automats", "simulated")
