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
    # Reported lost (docs/contracts.md, "Lost keys"); cleared when the key is found.
    Column("lost_at", UtcDateTime),
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


# What a mechanical key contract adds to the shared ``contracts`` row (kind
# ``mechanical``): the caller's id (unique per root organization, gaps.md F5),
# ``freeLockerAfterFetch``, ``userVerification``, pick-up info, and the signature.
mechanical_contracts = Table(
    "mechanical_contracts",
    metadata,
    Column("contract_id", String(24), ForeignKey("contracts.id"), primary_key=True),
    Column("root_unit_id", String(24), ForeignKey("organization_units.id"), nullable=False),
    Column("public_id", String(128), nullable=False),
    Column("free_locker_after_fetch", Boolean, nullable=False, default=False),
    Column("user_verification", String(1), nullable=False, default="0"),
    Column("pick_up_info", Text),
    # userVerification "1": the SHA-256 (hex) of the signature link's unguessable token
    # (the token itself is only in the link sent to the contact), and the signature.
    # The same token and hash serve the strong-authentication link of "2"
    # (docs/strong-authentication.md), which also expires.
    Column("signature_token_hash", String(64), unique=True),
    # When the verification was done: the signature of "1", the identity of "2".
    Column("signed_at", UtcDateTime),
    Column("verification_link_expires_at", UtcDateTime),
    Column("signature_name", Text),
    Column("signature_data", Text),
    # The final guard of F5 when two creations with the same id race.
    UniqueConstraint("root_unit_id", "public_id"),
)

# Units that may ask for strong authentication (userVerification "2", gaps.md F3).
strong_auth_units = Table(
    "strong_auth_units",
    metadata,
    Column(
        "organization_unit_id", String(24), ForeignKey("organization_units.id"), primary_key=True
    ),
)
