"""lockers.key_rfid: the tag a device read of the key inside a locker

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02 09:00:00.000000

A device with an RFID reader may report a key only by its tag. The tag is kept
on the locker (upper-case hex, as ``mechanical_keys.rfid_hex``), so that a key
registered later with that ``rfidHex`` is placed in the locker at once instead
of waiting for the device's next report (docs/mechanical-keys.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("lockers", sa.Column("key_rfid", sa.Text(), nullable=True))
    op.create_index("ix_lockers_key_rfid", "lockers", ["key_rfid"])


def downgrade() -> None:
    op.drop_index("ix_lockers_key_rfid", table_name="lockers")
    op.drop_column("lockers", "key_rfid")
