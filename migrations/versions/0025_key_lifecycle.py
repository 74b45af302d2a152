"""the key lifecycle: codes held back while a booked key is out, overdue keys, lost keys

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-09 09:00:00.000000

* ``contract_keys.held_since``: a contract's code waits off its automat while
  the key is out with another contract's user, and goes on when the key is back
  (back-to-back bookings, docs/contracts.md). A partial index finds the few held
  codes for the pincode clash check of a new contract.
* ``notification_settings.overdue_after_seconds`` and ``guest_overdue_reminders``:
  when a device key still out after its contract's end is overdue (a reminder to
  the unit's staff), and whether the contact is reminded too (docs/contracts.md,
  "Overdue keys"). Null inherits, as every column of the table.
* ``mechanical_keys.lost_at``: a key reported lost is not offered to new
  contracts until it is found (docs/contracts.md, "Lost keys").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str) -> sa.Column:
    return sa.Column(name, keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True)


def upgrade() -> None:
    op.add_column("contract_keys", _time("held_since"))
    op.create_index(
        "ix_contract_keys_held",
        "contract_keys",
        ["automat_id", "pincode"],
        sqlite_where=sa.text("held_since IS NOT NULL"),
        postgresql_where=sa.text("held_since IS NOT NULL"),
    )
    op.add_column(
        "notification_settings", sa.Column("overdue_after_seconds", sa.Integer(), nullable=True)
    )
    op.add_column(
        "notification_settings", sa.Column("guest_overdue_reminders", sa.Boolean(), nullable=True)
    )
    op.add_column("mechanical_keys", _time("lost_at"))


def downgrade() -> None:
    op.drop_column("mechanical_keys", "lost_at")
    op.drop_column("notification_settings", "guest_overdue_reminders")
    op.drop_column("notification_settings", "overdue_after_seconds")
    op.drop_index("ix_contract_keys_held", table_name="contract_keys")
    op.drop_column("contract_keys", "held_since")
