"""Tables of mechanical keys (docs/mechanical-keys.md).

A key's ``id`` is chosen by the caller and unique per root organization
(gaps.md F7), so rows are keyed by an internal ``object_id`` and the pair
``(root_unit_id, id)`` is unique. ``selected_*`` is the key's home storage
(exactly one of automat and manual text); ``stored_*`` is where it is now,
all null while it is away.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from keyautomat.adapters.orm import UtcDateTime, mapper_registry, metadata
from keyautomat.domain import mechanical

mechanical_keys = Table(
    "mechanical_keys",
    metadata,
    Column("object_id", String(24), primary_key=True),
    Column("root_unit_id", String(24), ForeignKey("organization_units.id"), nullable=False),
    Column("id", String(128), nullable=False),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
        index=True,
    ),
    Column("name", Text),
    Column("rfid_hex", String(64)),
    Column("selected_automat_id", String(16), ForeignKey("automats.id"), index=True),
    Column("selected_manual_info", Text),
    Column("shared", Boolean, nullable=False, default=False),
    Column("stored_automat_id", String(16), ForeignKey("automats.id")),
    Column("stored_locker_index", Integer),
    Column("stored_manual_info", Text),
    Column("created_at", UtcDateTime, nullable=False),
    # The final guard of F7 when two creations of the same id race.
    UniqueConstraint("root_unit_id", "id"),
    CheckConstraint(
        "(selected_automat_id IS NULL) <> (selected_manual_info IS NULL)",
        name="one_selected_storage",
    ),
    # One key per locker, as for iLOQ keys: device reports move keys, never double them.
    Index(
        "ix_mechanical_keys_stored_locker", "stored_automat_id", "stored_locker_index", unique=True
    ),
    Index("ix_mechanical_keys_root_unit_id_rfid_hex", "root_unit_id", "rfid_hex"),
    Index("ix_mechanical_keys_created_at_id", "created_at", "id"),
)


def map_tables() -> None:
    mapper_registry.map_imperatively(mechanical.MechanicalKey, mechanical_keys)
