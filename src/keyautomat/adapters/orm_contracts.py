"""Tables of key contracts: the contracts, their keys, and reservations of keys and lockers.

The core is shared by every contract kind (``kind`` = ``iloq`` now, ``mechanical``
later): a contract has a period and keys; each key of a contract sits in one
automat locker (or, for mechanical keys, in manual storage), has a pincode, a
status and an ``in_history`` flag. ``contract_reservations`` holds what a
contract blocks over time: a key, a locker, or both.

Reservations are checked and written while the automats concerned are locked
(``SELECT ... FOR UPDATE`` on their ``automats`` rows on PostgreSQL; SQLite has
one writer, and every transaction starts with ``BEGIN IMMEDIATE``), so two
creations racing for the last free key of an automat are serialised and the
second one sees the first one's reservation (docs/contracts.md).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    text,
    true,
)

from keyautomat.adapters.orm import UtcDateTime, metadata

contracts = Table(
    "contracts",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
    ),
    # 1 default, 2 fetch, 3 return (the iLOQ numbering; mechanical contracts use 1).
    Column("contract_type", Integer, nullable=False),
    Column("start", UtcDateTime, nullable=False),
    Column("end", UtcDateTime),
    # The contact as the caller sent it (validated), JSON; None without a contact.
    Column("contact", Text),
    # What the caller asked for (accessRightIds, numberOfKeys, keyIds, keyAutomatId,
    # groupId, ...), JSON: echoed in responses as requested.
    Column("request", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Set when the end has been evaluated (key-not-fetched / key-not-returned), once.
    Column("end_evaluated_at", UtcDateTime),
    # Set when every key is in history: the contract is over before its end.
    Column("completed_at", UtcDateTime),
    # Deleted contracts stay as an audit record (gaps.md C16) but leave every list.
    Column("deleted_at", UtcDateTime),
    Index("ix_contracts_unit_created_at_id", "organization_unit_id", "created_at", "id"),
    # The console's list of a subtree's contracts, newest first, whatever their units: read
    # backwards until a page is found, instead of sorting the subtree (migration 0023).
    Index("ix_contracts_created_at_id", "created_at", "id"),
)

contract_keys = Table(
    "contract_keys",
    metadata,
    Column("contract_id", String(24), ForeignKey("contracts.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("automat_id", String(16), ForeignKey("automats.id")),
    Column("locker_index", Integer),
    Column("pincode", String(16)),
    # The device_pincodes row the automat honours for this key, while it has one.
    Column("pincode_id", String(24)),
    Column("status", String(24)),
    Column("in_history", Boolean, nullable=False, default=False),
    Column("programmed_at", UtcDateTime),
    Column("program_failures", Integer, nullable=False, default=0),
    Column("fetched_at", UtcDateTime),
    Column("returned_at", UtcDateTime),
    # Since when the key's code waits off its automat for the key to come back from
    # another contract's user (back to back, docs/contracts.md); None otherwise.
    Column("held_since", UtcDateTime),
    Index("ix_contract_keys_automat_locker", "automat_id", "locker_index"),
    # The few held codes, for the pincode clash check of a new contract.
    Index(
        "ix_contract_keys_held",
        "automat_id",
        "pincode",
        sqlite_where=text("held_since IS NOT NULL"),
        postgresql_where=text("held_since IS NOT NULL"),
    ),
    Index("ix_contract_keys_pincode_id", "pincode_id"),
    Index("ix_contract_keys_key_id", "key_id"),
    # The console's dashboard: keys fetched and returned today, and the few keys overdue.
    Index("ix_contract_keys_fetched_at", "fetched_at"),
    Index("ix_contract_keys_returned_at", "returned_at"),
    Index("ix_contract_keys_status", "status"),
)

# What a contract blocks, from ``start`` to ``until`` (exclusive). An open end is
# stored as ``OPEN_END`` rather than NULL so that "overlaps [s, e)" is one range
# condition an index can serve: ``start < e AND until > s``.
contract_reservations = Table(
    "contract_reservations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("contract_id", String(24), ForeignKey("contracts.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("automat_id", String(16), ForeignKey("automats.id"), nullable=False),
    Column("locker_index", Integer, nullable=False),
    # The key blocked as well (default and fetch contracts); None for an empty
    # locker waiting for a return.
    Column("key_id", String(64)),
    Column("start", UtcDateTime, nullable=False),
    Column("until", UtcDateTime, nullable=False),
    # Open: counted in its automat's keys_booked / lockers_booked (automat_stock).
    # Cleared when the reservation is released or its contract's end has passed.
    Column("counted", Boolean, nullable=False, server_default=true()),
    Index("ix_contract_reservations_automat_until", "automat_id", "until"),
    Index("ix_contract_reservations_locker_until", "automat_id", "locker_index", "until"),
    Index("ix_contract_reservations_key_until", "key_id", "until"),
    Index("ix_contract_reservations_contract", "contract_id", "position"),
    # Group ranking: every reservation overlapping a period, reached by the range
    # ``until > s`` that skips the (many) ended ones; covering, so no table reads.
    Index(
        "ix_contract_reservations_until_start",
        "until",
        "start",
        "automat_id",
        "locker_index",
    ),
)


def map_tables() -> None:
    """Nothing to map: contracts use Core statements (the creation path is hot)."""
