"""Tables, and the imperative mapping of the domain classes onto them.

The schema itself is owned by Alembic (``migrations/``); ``metadata`` here must
match it: it is the ``target_metadata`` of ``migrations/env.py``, so
``alembic revision --autogenerate`` on a database at the last migration should
propose nothing. No test runs that comparison yet; it would report two known
gaps: 0028's expression indexes ``ix_automat_stock_rank_*`` are not declared here,
and on SQLite the unique constraint on ``signature_token_hash`` keeps its old
name (0014 renames it on PostgreSQL only).
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import registry

from keyautomat.domain import model


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=naming_convention)

organization_units = Table(
    "organization_units",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("name", Text, nullable=False),
    Column("customer_id", Text),
    Column("type", Integer, nullable=False),
    Column("parent_id", String(24), ForeignKey("organization_units.id")),
    Column("path", Text, nullable=False),
    Column("iloq_username", Text),
    Column("iloq_password_encrypted", Text),
    Column("iloq_customer_code", Text),
    Column("iloq_service_address", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_organization_units_path", "path"),
)

service_accounts = Table(
    "service_accounts",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", String(32), nullable=False),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
        index=True,
    ),
    Column("public_key_pem", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

id_counters = Table(
    "id_counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# Facts about this installation that must survive restarts, e.g. the check value
# of the secret key (adapters/secret_custody.py).
server_metadata = Table(
    "server_metadata",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Request state every API process shares (entrypoints/api/auth.py, PostgreSQL only):
# the signatures accepted within the replay window, by SHA-256 of account and
# signature, and each service account's token bucket of the rate limit.
request_signatures = Table(
    "request_signatures",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("expires_ms", BigInteger, nullable=False, index=True),
)
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("stamp", Float, nullable=False),  # seconds since the epoch of the last refill
)

# Idempotent writes (service_layer/idempotency.py): one row per (service account,
# Idempotency-Key), inserted to claim the key before the request is handled; then the
# response (``status``, and headers and body encrypted in ``response``) for replays.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),  # SHA-256 of method, target, body
    Column("token", String(32), nullable=False),  # the claim's, so only its holder finishes it
    Column("claimed_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
    Column("status", Integer),  # null while the request is in progress
    Column("response", Text),
)

automats = Table(
    "automats",
    metadata,
    Column("id", String(16), primary_key=True),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
        index=True,
    ),
    Column("name", Text, nullable=False),
    Column("label", Text),
    Column("address", Text),
    Column("postal_code", Text),
    Column("postal_office", Text),
    Column("timezone", Text, nullable=False),
    Column("product", String(16), nullable=False),
    Column("hw_id", Text, unique=True),
    Column("installation_pincode", String(16), unique=True),
    # When the pincode was drawn: it binds only for installation_pincode_ttl_hours.
    Column("installation_pincode_issued_at", UtcDateTime),
    Column("lifecycle_state", String(32), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime),
    # A simulator stands for this automat (a demo automat, or marked by an admin): only
    # then has it a virtual keypad in the console (docs/console.md).
    Column("simulated", Boolean, nullable=False, server_default=false()),
    Index("ix_automats_created_at_id", "created_at", "id"),
)

# One row per automat (inserted by a trigger on automats), written by triggers only: the
# counts a group is ranked by, and a copy of the automat's last_seen_at (the tie rule),
# in the order of the indexes ix_automat_stock_rank_keys / _empty (docs/contracts.md
# "How a group is ranked"). A table of its own so that the update every reservation
# makes writes a narrow row and three index entries instead of the automat's wide row
# and its seven (migration 0028, docs/performance/contract-creation.md).
automat_stock = Table(
    "automat_stock",
    metadata,
    Column(
        "automat_id",
        String(16),
        ForeignKey("automats.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # Lockers holding a key / empty, kept by triggers on ``lockers`` (migration 0011):
    # the upper bound a group is ranked by.
    Column("keys_inside", Integer, nullable=False, server_default="0"),
    Column("empty_lockers", Integer, nullable=False, server_default="0"),
    # Open reservations of keys and of empty lockers, kept by triggers on
    # contract_reservations (migration 0012) from their ``counted`` flag.
    Column("keys_booked", Integer, nullable=False, server_default="0"),
    Column("lockers_booked", Integer, nullable=False, server_default="0"),
    Column("last_seen_at", UtcDateTime),
)

lockers = Table(
    "lockers",
    metadata,
    Column("automat_id", String(16), ForeignKey("automats.id"), primary_key=True),
    Column("locker_index", Integer, primary_key=True),
    Column("is_key_inside", Boolean, nullable=False, default=False),
    Column("key_id", Text),
    Column("key_name", Text),
    # The tag the device read of the key inside (upper-case hex), when it has a reader:
    # a key registered later by its rfidHex is found here.
    Column("key_rfid", Text),
    # Which locker holds a key (contracts naming keyIds, blocked keys in ranking).
    Index("ix_lockers_key_id", "key_id"),
    Index("ix_lockers_key_rfid", "key_rfid"),
)

groups = Table(
    "groups",
    metadata,
    Column("id", String(24), primary_key=True),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
        index=True,
    ),
    Column("name", Text, nullable=False),
    Column("customer_id", Text),
    Column("type", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_groups_created_at_id", "created_at", "id"),
)

automat_groups = Table(
    "automat_groups",
    metadata,
    Column("automat_id", String(16), ForeignKey("automats.id"), primary_key=True),
    Column("group_id", String(24), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_automat_groups_group_id", "group_id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("kind", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    # Rows of one lane are delivered strictly one after another, in id order.
    Column("lane", Text),
    # What the row is about (e.g. "contract:<id>"), so pending work can be cancelled.
    Column("ref", Text),
    # What the row is about for people (``contract:<id>``): a contract's timeline lists
    # the webhook deliveries that reported it (docs/console.md).
    Column("subject", Text),
    Column("idempotency_key", Text, unique=True),
    Column("status", String(16), nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_by", Text),
    Column("claimed_until", UtcDateTime),
    Column("last_error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Index("ix_outbox_status_due_at", "status", "due_at"),
    Index("ix_outbox_lane_id", "lane", "id"),
    Index("ix_outbox_ref", "ref"),
    Index("ix_outbox_subject", "subject"),
)

# One row per lane; enqueueing locks it first, so rows of one lane get their ids
# in commit order even when several transactions write to the lane at once.
outbox_lanes = Table(
    "outbox_lanes",
    metadata,
    Column("lane", Text, primary_key=True),
    Column("last_enqueued_at", UtcDateTime, nullable=False),
)

mapper_registry = registry(metadata=metadata)
_mapped = False

# Each feature keeps its tables in a module of its own next to this one. The
# module defines its tables on ``metadata`` and a ``map_tables()`` function that
# maps its domain classes; listing it here is all it takes to join the schema.
FEATURE_TABLE_MODULES: tuple[str, ...] = (
    "keyautomat.adapters.orm_notify",
    "keyautomat.adapters.orm_webhooks",
    "keyautomat.adapters.orm_devices",
    "keyautomat.adapters.orm_iloq",
    "keyautomat.adapters.orm_contracts",
    "keyautomat.adapters.orm_mechanical",
    "keyautomat.adapters.orm_console",
    "keyautomat.adapters.orm_identity",
)


def load_all_tables() -> MetaData:
    """Import every feature's table module so ``metadata`` describes the whole schema."""
    for name in FEATURE_TABLE_MODULES:
        importlib.import_module(name)
    return metadata


def start_mappers() -> None:
    """Map the domain classes once per process.

    Only the classes of tables written through the ORM are mapped; the tables
    written with Core (``automats``, ``lockers``, ``automat_groups`` and the
    rest) have no mapped class, so no ORM object can write them by accident or
    hold a stale copy of their rows (docs/persistence.md).
    """
    global _mapped
    if _mapped:
        return
    load_all_tables()
    mapper_registry.map_imperatively(model.OrganizationUnit, organization_units)
    mapper_registry.map_imperatively(model.ServiceAccount, service_accounts)
    mapper_registry.map_imperatively(model.Group, groups)
    for name in FEATURE_TABLE_MODULES:
        importlib.import_module(name).map_tables()
    _mapped = True
