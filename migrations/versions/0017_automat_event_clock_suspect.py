"""automat_events.clock_suspect: device times too far ahead of the server's are flagged

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 09:00:00.000000

An event whose ``occurredAt`` lies further ahead of the server's receive time
(``recorded_at``) than ``KEYAUTOMAT_DEVICE_CLOCK_SKEW_SECONDS`` is stored as the
device reported it, flagged here; its effects (alarms, contract progress) took
the receive time (docs/device-protocol.md, "Clock"). Earlier events were never
checked and count as not suspect.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "automat_events",
        sa.Column("clock_suspect", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("automat_events", "clock_suspect")
