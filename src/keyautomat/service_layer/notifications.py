"""Notifications: the producer API the contract code calls, organization settings, the admin view.

The contract code describes a contract as a :class:`ContractView` and, inside
the transaction of the change, calls

* :func:`notify` for an immediate message (created, updated, key fetched or
  returned, signature requested),
* :func:`schedule_reminders` after creating a contract, :func:`reschedule`
  after a change of ``start``/``end``/contact/keys, :func:`cancel_reminders`
  when deleting it (or when a condition ends for good).

Each call only writes outbox rows (kind ``notification``) plus one
``notifications`` row per message for the admin view, so a rolled-back change
sends nothing and a committed one loses nothing. The worker resolves the
organization defaults when it sends (notifications.md §3), and for scheduled
messages asks the contract code, through ``Wiring.condition_checkers``,
whether the condition still holds.
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.orm_notify import notification_settings, notifications
from keyautomat.domain.contact import normalise_email
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.model import OrganizationUnit
from keyautomat.domain.notifications import (
    CHANNELS,
    NOTIFICATION_TYPES,
    SCHEDULED_TYPES,
    Channel,
    Contact,
    ContractView,
    Matrix,
    NotificationType,
    OrgNotificationSettings,
    applies_to,
    contact_to_wire,
    effective,
    plan_reminders,
)
from keyautomat.domain.times import time_zone
from keyautomat.service_layer import outbox
from keyautomat.service_layer.principal import Principal, in_scope
from keyautomat.service_layer.wiring import wiring_of

KIND = "notification"
# The payload field holding the signature link, encrypted (docs/security.md).
SEALED_LINK = "sealedSignatureLink"

# The container's secret box (``Wiring.link_box``, set by bootstrap) seals signature
# links in outbox payloads, which are kept after sending, so a database copy opens no page.


def _box(session: Session) -> SecretBox:
    box = wiring_of(session).link_box
    if box is None:
        raise RuntimeError("no secret box installed to seal signature links")
    return box


def sealed_payload_view(session: Session, view: ContractView) -> tuple[dict[str, Any], str | None]:
    """The view as stored in an outbox row: without its signature link, which comes
    back encrypted as the second value (None when the view has none)."""
    data = view.to_json()
    link = data.pop("signatureLink", None)
    return data, _box(session).encrypt(link) if link else None


# server_metadata row: the plain links queued before sealing have been sealed.
LINKS_SEALED = "signature-links-sealed"


def seal_stored_links(session: Session) -> int:
    """Seal the signature links of rows queued in clear before links were sealed; once
    per database (``LINKS_SEALED``). Returns how many rows it sealed."""
    meta = orm.server_metadata
    if session.scalar(select(meta.c.name).where(meta.c.name == LINKS_SEALED)) is not None:
        return 0
    ob = orm.outbox
    rows = session.execute(
        select(ob.c.id, ob.c.payload).where(ob.c.kind == KIND, ob.c.payload.like("%/sign/%"))
    ).all()
    sealed = 0
    for row in rows:
        payload = json.loads(row.payload)
        view = payload.get("view")
        link = view.pop("signatureLink", None) if isinstance(view, dict) else None
        if not link:
            continue
        payload[SEALED_LINK] = _box(session).encrypt(link)
        session.execute(
            update(ob)
            .where(ob.c.id == row.id)
            .values(payload=json.dumps(payload, separators=(",", ":")))
        )
        sealed += 1
    session.execute(meta.insert().values(name=LINKS_SEALED, value="1"))
    return sealed


def seal_stored_links_at_start(db: Database) -> None:
    """:func:`seal_stored_links` in its own transaction, once the tables exist; a process
    calls it when it starts, after the migrations."""
    if not db.transaction(lambda s: inspect(s.connection()).has_table(orm.server_metadata.name)):
        return
    # IntegrityError: another process starting at once sealed them and set the flag.
    with suppress(IntegrityError):
        db.transaction(seal_stored_links)


def unsealed_view(payload: dict[str, Any], box: SecretBox) -> ContractView:
    """The view of an outbox payload, its signature link decrypted with the container's
    box; ``ValueError`` when the row is unreadable (e.g. sealed under another key)."""
    view = ContractView.from_json(payload["view"])
    sealed = payload.get(SEALED_LINK)
    if sealed is None:
        return view
    return replace(view, signature_link=box.decrypt(sealed))


SCHEDULED_NAMES = tuple(t.value for t in SCHEDULED_TYPES)

# Statements run with every contract change (settings lookup, one notifications
# row per message) are built once, with bind parameters: building them per call
# cost several times what executing them does.
_UNIT_PATH = select(orm.organization_units.c.path).where(
    orm.organization_units.c.id == bindparam("unit_id")
)
_SETTINGS_OF_CHAIN = select(notification_settings).where(
    notification_settings.c.organization_unit_id.in_(bindparam("chain", expanding=True))
)
_INSERT_NOTIFICATION = notifications.insert()
_RECORD_SKIPPED = (
    update(notifications)
    .where(notifications.c.outbox_id == bindparam("b_outbox_id"))
    .values(skipped_reason=bindparam("b_reason", type_=notifications.c.skipped_reason.type))
)

# --- organization settings -------------------------------------------------------------


def load_settings(session: Session, unit_id: str) -> OrgNotificationSettings:
    """The settings in force for ``unit_id``: its own overrides, then its ancestors', then
    the factory defaults (notifications.md §4)."""
    path = session.execute(_UNIT_PATH, {"unit_id": unit_id}).scalar_one_or_none()
    chain = [p for p in (path or f"/{unit_id}/").split("/") if p]
    rows = {
        r.organization_unit_id: r for r in session.execute(_SETTINGS_OF_CHAIN, {"chain": chain})
    }
    result = OrgNotificationSettings()
    for ancestor in chain:  # root first, so the nearest unit wins
        row = rows.get(ancestor)
        if row is None:
            continue
        defaults = result.defaults
        if row.defaults:
            defaults = {t: dict(c) for t, c in result.defaults.items()}
            for type_name, cells in json.loads(row.defaults).items():
                defaults.setdefault(type_name, {}).update(cells)
        result = replace(
            result,
            defaults=defaults,
            start_reminder_lead=_seconds(
                row.start_reminder_lead_seconds, result.start_reminder_lead
            ),
            end_reminder_lead=_seconds(row.end_reminder_lead_seconds, result.end_reminder_lead),
            timezone=row.timezone or result.timezone,
            sender_name=row.sender_name or result.sender_name,
            sms_sender_id=row.sms_sender_id or result.sms_sender_id,
            reply_to=row.reply_to or result.reply_to,
            admin_email=row.admin_email or result.admin_email,
            overdue_after=_seconds(row.overdue_after_seconds, result.overdue_after),
            guest_overdue_reminders=_flag(
                row.guest_overdue_reminders, result.guest_overdue_reminders
            ),
        )
    return result


def _flag(value: bool | None, fallback: bool) -> bool:
    return fallback if value is None else bool(value)


def _seconds(value: int | None, fallback: timedelta) -> timedelta:
    return fallback if value is None else timedelta(seconds=value)


@dataclass(frozen=True, slots=True)
class SettingsOverride:
    """What one unit overrides; None inherits. ``defaults`` lists only overridden cells."""

    defaults: Matrix | None = None
    start_reminder_lead: timedelta | None = None
    end_reminder_lead: timedelta | None = None
    timezone: str | None = None
    sender_name: str | None = None
    sms_sender_id: str | None = None
    reply_to: str | None = None
    admin_email: str | None = None
    overdue_after: timedelta | None = None
    guest_overdue_reminders: bool | None = None


def read_override(session: Session, unit_id: str) -> SettingsOverride:
    row = session.execute(
        select(notification_settings).where(notification_settings.c.organization_unit_id == unit_id)
    ).first()
    if row is None:
        return SettingsOverride()
    return SettingsOverride(
        defaults=json.loads(row.defaults) if row.defaults else None,
        start_reminder_lead=_maybe_seconds(row.start_reminder_lead_seconds),
        end_reminder_lead=_maybe_seconds(row.end_reminder_lead_seconds),
        timezone=row.timezone,
        sender_name=row.sender_name,
        sms_sender_id=row.sms_sender_id,
        reply_to=row.reply_to,
        admin_email=row.admin_email,
        overdue_after=_maybe_seconds(row.overdue_after_seconds),
        guest_overdue_reminders=row.guest_overdue_reminders,
    )


def _maybe_seconds(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def set_override(
    session: Session, unit_id: str, override: SettingsOverride, *, now: datetime
) -> None:
    """Replace what ``unit_id`` overrides (validated); descendants inherit it."""
    _validate_override(override)
    values: dict[str, Any] = {
        "defaults": json.dumps(override.defaults) if override.defaults else None,
        "start_reminder_lead_seconds": _lead(override.start_reminder_lead, "startReminderLead"),
        "end_reminder_lead_seconds": _lead(override.end_reminder_lead, "endReminderLead"),
        "timezone": override.timezone,
        "sender_name": override.sender_name,
        "sms_sender_id": override.sms_sender_id,
        "reply_to": override.reply_to,
        "admin_email": None
        if override.admin_email is None
        else normalise_email(override.admin_email, "adminEmail"),
        "overdue_after_seconds": _lead(override.overdue_after, "overdueAfterMinutes"),
        "guest_overdue_reminders": override.guest_overdue_reminders,
        "updated_at": now,
    }
    changed = session.execute(
        update(notification_settings)
        .where(notification_settings.c.organization_unit_id == unit_id)
        .values(values)
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        session.execute(
            notification_settings.insert().values(organization_unit_id=unit_id, **values)
        )


def _lead(value: timedelta | None, field: str) -> int | None:
    if value is None:
        return None
    seconds = int(value.total_seconds())
    if seconds < 0 or seconds > 30 * 86400:
        raise InvalidInput(field, "must be between 0 and 30 days")
    return seconds


def _validate_override(override: SettingsOverride) -> None:
    if override.timezone is not None:
        time_zone(override.timezone, "timezone")
    if override.reply_to is not None:
        normalise_email(override.reply_to, "replyTo")
    known = {t.value for t in NOTIFICATION_TYPES}
    for type_name, cells in (override.defaults or {}).items():
        if type_name not in known:
            raise InvalidInput(f"defaults.{type_name}", "is not a notification type")
        for channel, flag in cells.items():
            if channel not in CHANNELS or not isinstance(flag, bool):
                raise InvalidInput(f"defaults.{type_name}.{channel}", "must be a boolean channel")


# --- conditions of scheduled messages --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """Whether a scheduled message still applies when it fires, and which keys it lists.

    ``missing_key_ids`` names the keys still out / not returned (for the end
    reminder and the keys-not-returned notice); None means "all of the view's keys".
    """

    holds: bool
    missing_key_ids: tuple[str, ...] | None = None
    reason: str | None = None


HOLDS = Condition(holds=True)


def check_condition(session: Session, view: ContractView, type_: NotificationType) -> Condition:
    """The contract code of the view's kind answers "does this reminder still apply?"
    (``Wiring.condition_checkers``). Without a checker for a kind, every condition
    holds: reminders fire at their time, listing all of the view's keys."""
    checker = wiring_of(session).condition_checkers.get(view.kind.value)
    result = HOLDS if checker is None else checker(session, view, type_)
    assert isinstance(result, Condition)
    return result


# --- producer API ----------------------------------------------------------------------


def _immediate_ref(contract_id: str) -> str:
    return f"contract:{contract_id}"


def _reminder_ref(contract_id: str) -> str:
    return f"contract:{contract_id}:reminders"


def _enqueue(
    session: Session,
    view: ContractView,
    type_: NotificationType,
    channel: Channel,
    *,
    now: datetime,
    due_at: datetime | None,
    key_id: str | None,
    ref: str,
    idempotency_key: str | None,
) -> int | None:
    assert view.contact is not None
    recipient = view.contact.address(channel)
    assert recipient is not None
    stored_view, sealed_link = sealed_payload_view(session, view)
    payload: dict[str, Any] = {
        "type": type_.value,
        "channel": channel,
        "keyId": key_id,
        "view": stored_view,
    }
    if sealed_link is not None:
        payload[SEALED_LINK] = sealed_link
    message_id = outbox.enqueue(
        session,
        KIND,
        payload,
        now=now,
        due_at=due_at,
        ref=ref,
        idempotency_key=idempotency_key,
    )
    if message_id is not None:
        record_message(
            session,
            outbox_id=message_id,
            organization_unit_id=view.organization_unit_id,
            contract_id=view.contract_id,
            key_id=key_id,
            type_=type_.value,
            channel=channel,
            recipient=recipient,
            language=view.contact.effective_language,
            now=now,
        )
    return message_id


def record_message(
    session: Session,
    *,
    outbox_id: int,
    organization_unit_id: str,
    contract_id: str | None,
    key_id: str | None,
    type_: str,
    channel: Channel,
    recipient: str,
    language: str,
    now: datetime,
) -> None:
    """The admin view's row of a message just queued as outbox row ``outbox_id``."""
    session.execute(
        _INSERT_NOTIFICATION,
        {
            "outbox_id": outbox_id,
            "organization_unit_id": organization_unit_id,
            "contract_id": contract_id,
            "key_id": key_id,
            "type": type_,
            "channel": channel,
            "recipient": recipient,
            "language": language,
            "created_at": now,
        },
    )


def notify(
    session: Session,
    view: ContractView,
    type_: NotificationType,
    *,
    now: datetime,
    key_id: str | None = None,
    event: str | None = None,
) -> list[int]:
    """Queue ``type_`` for the contract's contact on every channel it resolves to now.

    One row per channel, each at most once per ``(contract, key, type, channel,
    event)``: a device that re-sends a fetch does not message the user twice.
    ``contractUpdated`` is once per update, so its ``event`` defaults to ``now``;
    pass ``event`` for other types that may legitimately repeat (a signature
    requested again after verification was switched off and on). Channels
    without an address are skipped silently (notifications.md §1). Returns the
    ids of the rows written.
    """
    if type_ in SCHEDULED_TYPES:
        raise ValueError(f"{type_} is scheduled: use schedule_reminders()")
    contact = view.contact
    if contact is None or not applies_to(type_, view):
        return []
    if event is None and type_ is NotificationType.CONTRACT_UPDATED:
        event = now.isoformat()
    org = load_settings(session, view.organization_unit_id)
    channels = [c for c in CHANNELS if effective(contact, type_, c, org)]
    ref = _immediate_ref(view.contract_id)
    return _once_per_channel(session, view, type_, channels, now, now, key_id, ref, event)


def _once_per_channel(
    session: Session,
    view: ContractView,
    type_: NotificationType,
    channels: list[Channel],
    now: datetime,
    due_at: datetime,
    key_id: str | None,
    ref: str,
    event: str | None,
) -> list[int]:
    """One row per channel with an address, each at most once per ``(contract, key, type,
    channel, event)``; the ids of the rows written."""
    assert view.contact is not None
    written: list[int] = []
    for channel in channels:
        if view.contact.address(channel) is None:
            continue
        key = ":".join(
            ["notification", view.contract_id, key_id or "-", type_.value, channel, event or "-"]
        )
        message_id = _enqueue(
            session,
            view,
            type_,
            channel,
            now=now,
            due_at=due_at,
            key_id=key_id,
            ref=ref,
            idempotency_key=key,
        )
        if message_id is not None:
            written.append(message_id)
    return written


def schedule_reminders(session: Session, view: ContractView, *, now: datetime) -> list[int]:
    """Write the contract's future scheduled messages (start/end reminder, keys not returned).

    Rows are written for every channel the contact's own settings do not rule
    out; the organization defaults in force when a row fires decide the rest,
    and the condition checker decides whether it still applies. Lead times are
    read from the organization settings now; a change of them applies to
    contracts scheduled afterwards (or rescheduled).
    """
    contact = view.contact
    if contact is None:
        return []
    org = load_settings(session, view.organization_unit_id)
    written: list[int] = []
    for reminder in plan_reminders(view, org, now):
        for channel in CHANNELS:
            if contact.address(channel) is None or not contact.may_want(reminder.type, channel):
                continue
            message_id = _enqueue(
                session,
                view,
                reminder.type,
                channel,
                now=now,
                due_at=reminder.due_at,
                key_id=None,
                ref=_reminder_ref(view.contract_id),
                # Cancel-then-write under the contract's own transaction keeps one
                # pending row per reminder; a key here would block re-planning.
                idempotency_key=None,
            )
            if message_id is not None:
                written.append(message_id)
    return written


def remind(
    session: Session, view: ContractView, type_: NotificationType, *, now: datetime, occasion: str
) -> list[int]:
    """A scheduled type the contract code decides to send now (an overdue reminder), once
    per ``occasion``: written like :func:`schedule_reminders` rows (due now, cancelled
    with the contract's reminders), so its condition is checked again when it is sent."""
    if type_ not in SCHEDULED_TYPES:
        raise ValueError(f"{type_} is not scheduled: use notify()")
    contact = view.contact
    if contact is None:
        return []
    channels = [c for c in CHANNELS if contact.may_want(type_, c)]
    ref = _reminder_ref(view.contract_id)
    return _once_per_channel(session, view, type_, channels, now, now, None, ref, occasion)


def cancel_reminders(session: Session, contract_id: str) -> int:
    """Cancel the contract's pending scheduled messages (on delete, or before re-planning)."""
    return outbox.cancel(session, ref=_reminder_ref(contract_id), kinds=[KIND])


def reschedule(session: Session, view: ContractView, *, now: datetime) -> list[int]:
    """Re-plan after ``start``/``end``/contact/keys changed: cancel what is pending, plan anew.

    A reminder whose moment has already passed is not planned again, so a
    change after a reminder fired does not repeat it unless the new period
    moves it into the future.
    """
    cancel_reminders(session, view.contract_id)
    return schedule_reminders(session, view, now=now)


# --- admin view --------------------------------------------------------------------------

STATE_OF_STATUS = {
    outbox.PENDING: "queued",
    outbox.IN_FLIGHT: "sending",
    outbox.DONE: "sent",
    outbox.FAILED: "failed",
    outbox.CANCELLED: "cancelled",
}
STATES = ("queued", "sending", "sent", "skipped", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    id: int
    organization_unit_id: str
    contract_id: str | None
    key_id: str | None
    type: str
    channel: str
    recipient: str
    language: str
    state: str
    attempts: int
    reason: str | None
    due_at: datetime
    created_at: datetime
    finished_at: datetime | None


def list_notifications(
    session: Session,
    principal: Principal,
    *,
    contract_id: str | None = None,
    state: str | None = None,
    type_: str | None = None,
    after_id: int = 0,
    before_id: int | None = None,
    limit: int = 100,
) -> list[NotificationRecord]:
    """Messages in the caller's organization subtree, oldest first after ``after_id`` (the
    API); newest first below ``before_id`` (the console's log)."""
    n, o = notifications, orm.outbox
    stmt = (
        select(n, o.c.status, o.c.attempts, o.c.last_error, o.c.due_at, o.c.finished_at)
        .join(o, o.c.id == n.c.outbox_id)
        .where(in_scope(n.c.organization_unit_id, principal))
    )
    if before_id is not None:
        stmt = stmt.where(n.c.outbox_id < before_id)
    else:
        stmt = stmt.where(n.c.outbox_id > after_id)
    if contract_id is not None:
        stmt = stmt.where(n.c.contract_id == contract_id)
    if type_ is not None:
        stmt = stmt.where(n.c.type == type_)
    if state is not None:
        if state not in STATES:
            raise InvalidInput("status", f"must be one of {', '.join(STATES)}")
        if state == "skipped":
            stmt = stmt.where(o.c.status == outbox.DONE, n.c.skipped_reason.is_not(None))
        else:
            status = next(s for s, st in STATE_OF_STATUS.items() if st == state)
            stmt = stmt.where(o.c.status == status)
            if state == "sent":
                stmt = stmt.where(n.c.skipped_reason.is_(None))
    order = n.c.outbox_id.desc() if before_id is not None else n.c.outbox_id
    rows = session.execute(stmt.order_by(order).limit(limit)).all()
    return [_record(r) for r in rows]


def _record(r: Any) -> NotificationRecord:
    state = STATE_OF_STATUS.get(r.status, r.status)
    reason = r.last_error
    if r.status == outbox.DONE and r.skipped_reason:
        state, reason = "skipped", r.skipped_reason
    return NotificationRecord(
        id=r.outbox_id,
        organization_unit_id=r.organization_unit_id,
        contract_id=r.contract_id,
        key_id=r.key_id,
        type=r.type,
        channel=r.channel,
        recipient=r.recipient,
        language=r.language,
        state=state,
        attempts=r.attempts,
        reason=reason,
        due_at=r.due_at,
        created_at=r.created_at,
        finished_at=r.finished_at,
    )


def resend(
    session: Session, principal: Principal, contract_id: str, message_id: int, *, now: datetime
) -> int:
    """Send one of a contract's messages again, as it was written (the same text, codes
    and signature link, to the same address), as a new message due now; its id. A
    message still queued is refused: it goes on its own.

    Operators only. The organization's defaults and a reminder's condition are asked
    again when it is sent, like for any message: a resend does not override them.
    """
    principal.require_operator()
    n, o = notifications, orm.outbox
    row = session.execute(
        select(n, o.c.payload, o.c.status)
        .join(o, o.c.id == n.c.outbox_id)
        .where(
            n.c.outbox_id == message_id,
            n.c.contract_id == contract_id,
            in_scope(n.c.organization_unit_id, principal),
        )
    ).first()
    if row is None:
        raise NotFound("Notification")
    if row.status in outbox.UNFINISHED:
        raise InvalidInput("messageId", "is still queued; it will be sent without help")
    new_id = outbox.enqueue(
        session, KIND, json.loads(row.payload), now=now, ref=_immediate_ref(contract_id)
    )
    assert new_id is not None  # no idempotency key: always stored
    record_message(
        session,
        outbox_id=new_id,
        organization_unit_id=row.organization_unit_id,
        contract_id=contract_id,
        key_id=row.key_id,
        type_=row.type,
        channel="sms" if row.channel == "sms" else "email",
        recipient=row.recipient,
        language=row.language,
        now=now,
    )
    return new_id


def record_skipped(session: Session, message_id: int, reason: str) -> None:
    session.execute(_RECORD_SKIPPED, {"b_outbox_id": message_id, "b_reason": reason[:500]})


def scoped_unit(session: Session, principal: Principal, unit_id: str) -> OrganizationUnit:
    unit = session.get(OrganizationUnit, unit_id)
    if unit is None or not principal.sees(unit.path):
        raise NotFound("Organization unit")
    return unit


def contact_response(
    session: Session, unit_id: str, contact: Contact | None
) -> dict[str, Any] | None:
    """The response shape of a stored contact (endpoints.md §2.4, gaps.md H3), resolved
    against the organization defaults in force now."""
    if contact is None:
        return None
    return contact_to_wire(contact, load_settings(session, unit_id))
