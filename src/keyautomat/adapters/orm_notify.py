"""Tables of the notifications feature (spec notifications.md).

``notification_settings`` holds what an organization unit overrides (every
column nullable: null inherits from the parent unit, then the factory
defaults). ``notifications`` is one row per message, written with its outbox
row in the same transaction: it says what the message is about (unit,
contract, key, type, channel) so the admin view can filter and scope it, while
the outbox row next to it carries the delivery state. Notices to a unit's
admins (``service_layer/admin_notices.py``) have no contract.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Table, Text

from keyautomat.adapters.orm import UtcDateTime, metadata

notification_settings = Table(
    "notification_settings",
    metadata,
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # JSON {type: {sms: bool, email: bool}}; only the listed cells override.
    Column("defaults", Text),
    Column("start_reminder_lead_seconds", Integer),
    Column("end_reminder_lead_seconds", Integer),
    Column("timezone", Text),
    Column("sender_name", Text),
    Column("sms_sender_id", Text),
    Column("reply_to", Text),
    # Where notices for the unit's admins go (a webhook subscription disabled).
    Column("admin_email", Text),
    # When a device key still out after its contract's end is overdue (staff reminder),
    # and whether the contact is reminded of overdue keys too.
    Column("overdue_after_seconds", Integer),
    Column("guest_overdue_reminders", Boolean),
    Column("updated_at", UtcDateTime, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column(
        "outbox_id",
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("outbox.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("organization_unit_id", String(24), nullable=False),
    # NULL for notices to the unit's admins, which are about no contract.
    Column("contract_id", Text),
    Column("key_id", Text),
    Column("type", String(32), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("recipient", Text, nullable=False),
    Column("language", String(8), nullable=False),
    # Set by the worker when the message was not sent on purpose (defaults off
    # by then, condition no longer holds); null for messages that went out.
    Column("skipped_reason", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_notifications_contract_id", "contract_id"),
    Index("ix_notifications_organization_unit_id_outbox_id", "organization_unit_id", "outbox_id"),
)


def map_tables() -> None:
    """Nothing to map: the feature works with Core rows and plain dataclasses."""
