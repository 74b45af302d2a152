"""Tables of the device link: bindings, the inbox of applied device events, domain
events, alarms and the pincodes each automat must honour (docs/device-protocol.md).

The device gateway works with SQLAlchemy Core on these tables: it is the hot
path of the device fleet, and Core statements are several times cheaper than
the ORM (DESIGN.md, "Measured on this machine").
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from keyautomat.adapters.orm import UtcDateTime, metadata

# One row per automat that hardware has ever bound to. ``token_hash`` is the
# SHA-256 of the device credential issued at bind; the credential itself is only
# ever sent to the device. ``desired_version``/``synced_version`` form the sync
# outbox: a change to the automat's pincodes bumps the first, the device's ack
# of a sync sets the second, and the gateway pushes while they differ.
device_links = Table(
    "device_links",
    metadata,
    Column("automat_id", String(16), ForeignKey("automats.id"), primary_key=True),
    Column("hw_id", Text),
    Column("token_hash", String(64)),
    Column("bind_pincode_hash", String(64)),
    Column("bound_at", UtcDateTime),
    Column("connected", Boolean, nullable=False, default=False),
    Column("firmware", Text),
    Column("locker_count", Integer),
    Column("desired_version", BigInteger, nullable=False, default=0),
    Column("synced_version", BigInteger, nullable=False, default=0),
)

# Every device event applied, keyed by the device's own message id: the unique
# constraint is what makes a resent event a no-op instead of a second effect.
device_inbox = Table(
    "device_inbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("automat_id", String(16), ForeignKey("automats.id"), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    UniqueConstraint("automat_id", "message_id", name="uq_device_inbox_automat_message"),
)

# Domain events derived from device events (code entered, key removed or
# inserted, alarms). Later features turn them into contract progress, webhooks
# and notifications; ``data`` is the JSON of the event's own fields.
# ``occurred_at`` is the time the device reported, ``recorded_at`` the server's
# time when it received the event; ``clock_suspect`` marks a reported time too far
# ahead of it to be true, whose effects took ``recorded_at`` instead
# (docs/device-protocol.md, "Clock"). ``contract_id`` names the contract an event moved
# (a code typed, a key taken or put back), set by the contract code: a contract's
# timeline in the console reads it (docs/console.md).
automat_events = Table(
    "automat_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("automat_id", String(16), ForeignKey("automats.id"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("clock_suspect", Boolean, nullable=False, default=False, server_default=false()),
    Column("locker_index", Integer),
    Column("key_id", Text),
    Column("code", String(16)),
    Column("source_message_id", String(64)),
    Column("data", Text, nullable=False),
    Column("contract_id", String(24)),
    Index("ix_automat_events_automat_id_id", "automat_id", "id"),
    Index("ix_automat_events_contract_id", "contract_id"),
)

device_alarms = Table(
    "device_alarms",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("automat_id", String(16), ForeignKey("automats.id"), nullable=False),
    Column("alarm_type", String(40), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    Column("acknowledged_at", UtcDateTime),
    Column("acknowledged_by", String(24)),
    Index("ix_device_alarms_automat_id_started_at", "automat_id", "started_at"),
)

# The pincodes an automat must honour. Removal leaves a tombstone (``removed``)
# carrying the version it was removed at, so an incremental sync can tell the
# device to forget it; ``version`` is the automat's ``desired_version`` at the
# row's last change.
device_pincodes = Table(
    "device_pincodes",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("automat_id", String(16), ForeignKey("automats.id"), nullable=False),
    Column("code", String(16), nullable=False),
    Column("locker_index", Integer, nullable=False),
    Column("valid_from", UtcDateTime, nullable=False),
    Column("valid_until", UtcDateTime),
    Column("purpose", String(16), nullable=False),
    Column("key_id", Text),
    Column("reference", Text),
    Column("version", BigInteger, nullable=False),
    Column("removed", Boolean, nullable=False, default=False),
    # The key in this locker is programmed by the server before the locker opens
    # (iLOQ just-in-time programming): the device reports the code and waits for
    # ``open-locker`` instead of opening at once.
    Column("program_first", Boolean, nullable=False, default=False, server_default=false()),
    Index("ix_device_pincodes_automat_id_version", "automat_id", "version"),
    Index("ix_device_pincodes_automat_id_code", "automat_id", "code"),
)

# Which gateway process handles each device (docs/deployment.md, "Device leases"):
# every gateway hears every device, and handles only the devices whose lease it
# holds. Keyed by hwId, because a message names its hwId before it is authenticated.
device_leases = Table(
    "device_leases",
    metadata,
    Column("hw_id", Text, primary_key=True),
    Column("gateway_id", Text, nullable=False, index=True),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# sendPincode / cancelSendPincode handed by an API process to the gateway holding
# the device (entrypoints/device_commands.py). ``code`` is encrypted with the secret
# key; the row is deleted as soon as the API process has read ``answer``.
device_commands = Table(
    "device_commands",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("automat_id", String(16), nullable=False),
    Column("hw_id", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("code", Text, nullable=False),
    Column("proximity", Boolean, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
    Column("claimed_by", Text),
    Column("answer", String(32)),
)


def map_tables() -> None:
    """Nothing to map: the device link uses Core statements only."""
