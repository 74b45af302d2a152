"""installation pincodes expire; re-bind codes are keyed hashes

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 07:30:00.000000

``automats.installation_pincode_issued_at`` dates each installation pincode: it
binds hardware only for ``installation_pincode_ttl_hours`` after it was issued.
Pincodes waiting today count as issued now, so an upgrade expires none of them.

``device_links.bind_pincode_hash`` was an unsalted SHA-256 of six digits, which a
table dump inverts in a second; it is now an HMAC under a key derived from the
server's secret key. The old hashes cannot be checked that way and are dropped:
a device that bound before the upgrade and never received its welcome needs a
``replace`` (docs/device-protocol.md, "Binding and re-binding").
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    column_type = keyautomat.adapters.orm.UtcDateTime(timezone=True)
    op.add_column("automats", sa.Column("installation_pincode_issued_at", column_type))
    automats = sa.table(
        "automats",
        sa.column("installation_pincode", sa.String),
        sa.column("installation_pincode_issued_at", column_type),
    )
    op.execute(
        automats.update()
        .where(automats.c.installation_pincode.is_not(None))
        .values(installation_pincode_issued_at=datetime.now(UTC))
    )
    op.execute("UPDATE device_links SET bind_pincode_hash = NULL")


def downgrade() -> None:
    with op.batch_alter_table("automats") as batch:
        batch.drop_column("installation_pincode_issued_at")
