"""Tables of webhook subscriptions and of the log of every delivery attempt.

The deliveries themselves are outbox rows of kind ``webhook`` (see
``service_layer/webhooks.py``); these tables hold what the outbox does not: the
subscription with its encrypted secrets, and one row per HTTP attempt.
The feature works with Core statements only, so ``map_tables`` maps nothing.
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
)

from keyautomat.adapters.orm import UtcDateTime, metadata

webhook_subscriptions = Table(
    "webhook_subscriptions",
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
    Column("url", Text, nullable=False),
    # JSON list of event types, in catalog order.
    Column("event_types", Text, nullable=False),
    # pending (created, not yet verified) -> active (every test delivery got a 2xx)
    # -> disabled (failing too long; domain/webhook_health.py) -> active (an admin).
    Column("state", String(16), nullable=False),
    Column("secret_encrypted", Text, nullable=False),
    Column("secret_last4", String(4), nullable=False),
    # After a rotation the old secret keeps signing alongside the new one until it expires.
    Column("previous_secret_encrypted", Text),
    Column("previous_secret_expires_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("activated_at", UtcDateTime),
    # Health (domain/webhook_health.py), written under the row's lock with each live attempt.
    Column("delivered_count", BigInteger, nullable=False, server_default="0"),
    Column("failed_count", BigInteger, nullable=False, server_default="0"),
    Column("last_success_at", UtcDateTime),
    Column("last_failure_at", UtcDateTime),
    # The first failed attempt after the last success; NULL while deliveries succeed.
    Column("failing_since", UtcDateTime),
    Column("disabled_at", UtcDateTime),
    Index("ix_webhook_subscriptions_created_at_id", "created_at", "id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "subscription_id",
        String(24),
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The outbox row of a live delivery; NULL for test deliveries.
    Column("outbox_id", BigInteger().with_variant(Integer, "sqlite")),
    Column("webhook_id", Text, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("is_test", Boolean, nullable=False),
    Column("attempted_at", UtcDateTime, nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Integer, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("error", Text),
    Index("ix_webhook_attempts_subscription_id_id", "subscription_id", "id"),
    Index("ix_webhook_attempts_outbox_id", "outbox_id"),
    # Retention: the worker deletes the oldest entries in small batches.
    Index("ix_webhook_attempts_attempted_at", "attempted_at"),
)


def map_tables() -> None:
    """Nothing to map: webhooks use Core statements on the tables above."""
