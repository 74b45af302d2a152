"""Delivering a ``notification`` outbox row: resolve, check, render, send.

At fire time the handler resolves the contact's settings against the
organization defaults in force *then* (notifications.md §3), asks the contract
code whether a scheduled message still applies, renders the message in the
contact's language and hands it to the channel's transport. Transports raise
:class:`RetryLater` for transient trouble and :class:`GiveUp` for a permanent
refusal; the worker does the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session

from keyautomat import metrics
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.domain.notifications import (
    SCHEDULED_TYPES,
    Channel,
    ContractView,
    NotificationType,
    OrgNotificationSettings,
    effective,
)
from keyautomat.service_layer import admin_notices, notifications
from keyautomat.service_layer.delivery import GiveUp
from keyautomat.service_layer.outbox import OutboxMessage

log = logging.getLogger(__name__)

# notifications.md §6: "retry provider errors a few times (e.g. 3 attempts over
# 10 minutes)". Four attempts: at once, +1 min, +3 min, +6 min (10 minutes in all).
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=3),
    timedelta(minutes=6),
)


def stable_message_id(outbox_id: int) -> str:
    """The id a message carries on every attempt, so receivers can spot a re-delivery."""
    return f"notification-{outbox_id}"


@dataclass(frozen=True, slots=True)
class Email:
    to: str
    subject: str
    text: str
    html: str | None
    sender_name: str | None
    reply_to: str | None
    message_id: str  # stable per outbox row, so a receiver can spot a re-delivery


@dataclass(frozen=True, slots=True)
class Sms:
    to: str  # E.164
    text: str
    sender_id: str | None
    message_id: str


class EmailTransport(Protocol):
    async def send_email(self, email: Email) -> None: ...


class SmsTransport(Protocol):
    async def send_sms(self, sms: Sms) -> None: ...


class MessageRenderer(Protocol):
    def render(
        self,
        view: ContractView,
        type_: NotificationType,
        channel: Channel,
        org: OrgNotificationSettings,
        *,
        key_id: str | None = None,
        missing_key_ids: tuple[str, ...] | None = None,
    ) -> RenderedLike: ...

    def render_notice(
        self, notice: str, facts: dict[str, Any], org: OrgNotificationSettings
    ) -> RenderedLike: ...


class RenderedLike(Protocol):
    @property
    def subject(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def html(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class _Decision:
    org: OrgNotificationSettings
    skip: str | None
    missing_key_ids: tuple[str, ...] | None


class NotificationHandler:
    """The outbox handler for kind ``notification``."""

    def __init__(
        self,
        db: Database,
        renderer: MessageRenderer,
        email: EmailTransport,
        sms: SmsTransport,
        *,
        box: SecretBox,
        domain: str = "keyautomat.local",
    ) -> None:
        self.db = db
        self.box = box
        self.renderer = renderer
        self.email = email
        self.sms = sms
        self.domain = domain

    async def __call__(self, message: OutboxMessage) -> None:
        payload = message.payload
        if admin_notices.NOTICE in payload:
            await self._notice(message)
            return
        try:
            type_ = NotificationType(payload["type"])
            channel: Channel = "sms" if payload["channel"] == "sms" else "email"
            view = notifications.unsealed_view(payload, self.box)
        except (KeyError, ValueError) as exc:
            raise GiveUp(f"unreadable notification row: {exc}") from exc
        key_id = payload.get("keyId")

        decision = await self.db.run(lambda s: self._decide(s, view, type_, channel))
        if decision.skip is not None:
            reason = decision.skip
            log.info("notification %s skipped: %s", message.id, reason)
            await self.db.run(lambda s: notifications.record_skipped(s, message.id, reason))
            metrics.notification_done(channel, "skipped")
            return
        contact = view.contact
        assert contact is not None
        address = contact.address(channel)
        if address is None:
            metrics.notification_done(channel, "failed")
            raise GiveUp(f"the contact has no {channel} address")
        rendered = self.renderer.render(
            view,
            type_,
            channel,
            decision.org,
            key_id=key_id,
            missing_key_ids=decision.missing_key_ids,
        )
        stable_id = stable_message_id(message.id)
        if channel == "sms":
            await _counted(
                "sms",
                self.sms.send_sms(
                    Sms(
                        to=address,
                        text=rendered.text,
                        sender_id=decision.org.sms_sender_id,
                        message_id=stable_id,
                    )
                ),
            )
        else:
            await _counted(
                "email",
                self.email.send_email(
                    Email(
                        to=address,
                        subject=rendered.subject,
                        text=rendered.text,
                        html=rendered.html,
                        sender_name=decision.org.sender_name,
                        reply_to=decision.org.reply_to,
                        message_id=f"<{stable_id}@{self.domain}>",
                    )
                ),
            )

    async def _notice(self, message: OutboxMessage) -> None:
        """A notice to a unit's admins: English, by email, to the address resolved when queued."""
        payload = message.payload
        try:
            notice: str = payload[admin_notices.NOTICE]
            recipient: str = payload["recipient"]
            unit_id: str = payload["organizationUnitId"]
            facts: dict[str, Any] = payload["facts"]
        except KeyError as exc:
            raise GiveUp(f"unreadable notice row: missing {exc}") from exc
        if notice not in admin_notices.NOTICES:
            raise GiveUp(f"unknown notice {notice!r}")
        org = await self.db.run(lambda s: notifications.load_settings(s, unit_id))
        rendered = self.renderer.render_notice(notice, facts, org)
        await _counted(
            "email",
            self.email.send_email(
                Email(
                    to=recipient,
                    subject=rendered.subject,
                    text=rendered.text,
                    html=rendered.html,
                    sender_name=org.sender_name,
                    reply_to=None,
                    message_id=f"<{stable_message_id(message.id)}@{self.domain}>",
                )
            ),
        )

    def _decide(
        self, session: Session, view: ContractView, type_: NotificationType, channel: Channel
    ) -> _Decision:
        org = notifications.load_settings(session, view.organization_unit_id)
        if not effective(view.contact, type_, channel, org):
            return _Decision(org, "not enabled for this contact when sending", None)
        if type_ not in SCHEDULED_TYPES:
            return _Decision(org, None, None)
        condition = notifications.check_condition(session, view, type_)
        if not condition.holds:
            return _Decision(org, condition.reason or "condition no longer holds", None)
        return _Decision(org, None, condition.missing_key_ids)


async def _counted(channel: Channel, sending: Awaitable[None]) -> None:
    """Await a transport's send and count its outcome; a failure is counted, then raised."""
    try:
        await sending
    except Exception:
        metrics.notification_done(channel, "failed")
        raise
    metrics.notification_done(channel, "sent")
