"""Tables of the iLOQ feature: our key registry, and the emulated iLOQ S5 locking systems.

``iloq_keys`` is keyautomat's own book of electronic keys. The ``iloq_emu_*``
tables are the state of the built-in emulator (``adapters/iloq/emulator.py``),
one locking system per owning organization unit; a deployment that talks to a
real iLOQ system leaves them empty.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
)

from keyautomat.adapters.orm import UtcDateTime, mapper_registry, metadata
from keyautomat.domain import iloq

KEY_ID = String(64)

iloq_keys = Table(
    "iloq_keys",
    metadata,
    Column("id", KEY_ID, primary_key=True),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
        index=True,
    ),
    Column("name", Text, nullable=False),
    Column("blocked", Boolean, nullable=False, default=False),
    Column("automat_id", String(16), ForeignKey("automats.id")),
    Column("locker_index", Integer),
    Column("created_at", UtcDateTime, nullable=False),
    # One key per locker: the final guard when two placements race.
    Index("ix_iloq_keys_locker", "automat_id", "locker_index", unique=True),
    Index("ix_iloq_keys_created_at_id", "created_at", "id"),
    # The few blocked keys, for ranking automats without reading the registry.
    Index(
        "ix_iloq_keys_blocked",
        "id",
        sqlite_where=text("blocked IS 1"),
        postgresql_where=text("blocked IS true"),
    ),
)

# --- the emulated locking systems --------------------------------------------

iloq_emu_real_estates = Table(
    "iloq_emu_real_estates",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
        index=True,
    ),
    Column("name", Text, nullable=False),
    Column("parent_id", String(36), ForeignKey("iloq_emu_real_estates.id")),
)

iloq_emu_access_rights = Table(
    "iloq_emu_access_rights",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
        index=True,
    ),
    Column("name", Text, nullable=False),
    Column("real_estate_id", String(36), ForeignKey("iloq_emu_real_estates.id")),
    Column("api_enabled", Boolean, nullable=False),
    Column("default_access", Boolean, nullable=False),
)

iloq_emu_persons = Table(
    "iloq_emu_persons",
    metadata,
    Column(
        "organization_unit_id", String(24), ForeignKey("organization_units.id"), primary_key=True
    ),
    Column("id", String(64), primary_key=True),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text, nullable=False),
    Column("is_default", Boolean, nullable=False, default=False),
)

iloq_emu_keys = Table(
    "iloq_emu_keys",
    metadata,
    Column(
        "organization_unit_id", String(24), ForeignKey("organization_units.id"), primary_key=True
    ),
    Column("id", KEY_ID, primary_key=True),
    Column("description", Text, nullable=False),
    Column("person_id", String(64)),
    # "planning": changes waiting for an order; "programmed": what the key holds.
    Column("state", String(16), nullable=False),
    Column("valid_from", UtcDateTime),
    Column("valid_until", UtcDateTime),
    Column("planned_person_id", String(64)),
    Column("planned_valid_from", UtcDateTime),
    Column("planned_valid_until", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("programmed_at", UtcDateTime),
)

iloq_emu_key_rights = Table(
    "iloq_emu_key_rights",
    metadata,
    Column("organization_unit_id", String(24), primary_key=True),
    Column("key_id", KEY_ID, primary_key=True),
    Column(
        "access_right_id",
        String(36),
        ForeignKey("iloq_emu_access_rights.id"),
        primary_key=True,
    ),
    # "planned" rights wait for the next order; "written" rights are in the key.
    Column("kind", String(8), primary_key=True),
    ForeignKeyConstraint(
        ["organization_unit_id", "key_id"],
        ["iloq_emu_keys.organization_unit_id", "iloq_emu_keys.id"],
        ondelete="CASCADE",
    ),
)

iloq_emu_blocklist = Table(
    "iloq_emu_blocklist",
    metadata,
    Column("organization_unit_id", String(24), primary_key=True),
    Column("key_id", KEY_ID, primary_key=True),
    Column("added_at", UtcDateTime, nullable=False),
    ForeignKeyConstraint(
        ["organization_unit_id", "key_id"],
        ["iloq_emu_keys.organization_unit_id", "iloq_emu_keys.id"],
        ondelete="CASCADE",
    ),
)

iloq_emu_programming_log = Table(
    "iloq_emu_programming_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
    ),
    Column("key_id", KEY_ID, nullable=False),
    Column("action", String(16), nullable=False),
    # Space-separated ids: a log line records what was written, it is never joined.
    Column("access_right_ids", Text, nullable=False),
    Column("person_id", String(64)),
    Column("valid_from", UtcDateTime),
    Column("valid_until", UtcDateTime),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_iloq_emu_programming_log_unit_key", "organization_unit_id", "key_id", "id"),
)


def map_tables() -> None:
    mapper_registry.map_imperatively(iloq.IloqKey, iloq_keys)
