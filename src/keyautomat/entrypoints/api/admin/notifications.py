"""``/admin/notifications`` (each message's state) and the organization notification settings
(``/admin/organizationunits/{id}/notification-settings``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field
from sqlalchemy.orm import Session

from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, StrictBool, StrictInt, UtcDatetime
from keyautomat.service_layer import notifications
from keyautomat.service_layer.notifications import NotificationRecord, SettingsOverride
from keyautomat.service_layer.pagination import PageRequest

router = APIRouter(tags=["admin: notifications"])


class Notification(ApiModel):
    id: str
    organization_unit_id: str
    contract_id: str | None  # null for notices to the unit's admins
    key_id: str | None
    type: str
    channel: str
    recipient: str
    language: str
    status: str  # queued, sending, sent, skipped, failed, cancelled
    attempts: int
    reason: str | None
    due_at: UtcDatetime
    created_at: UtcDatetime
    finished_at: UtcDatetime | None

    @classmethod
    def of(cls, r: NotificationRecord) -> Notification:
        return cls(
            id=str(r.id),
            organization_unit_id=r.organization_unit_id,
            contract_id=r.contract_id,
            key_id=r.key_id,
            type=r.type,
            channel=r.channel,
            recipient=r.recipient,
            language=r.language,
            status=r.state,
            attempts=r.attempts,
            reason=r.reason,
            due_at=r.due_at,
            created_at=r.created_at,
            finished_at=r.finished_at,
        )


class NotificationList(ApiModel):
    """Keyset pages: pass ``after`` back to get the next page."""

    after: str | None
    limit: int
    has_next: bool
    data: list[Notification]


@router.get("/notifications", operation_id="AdminNotifications_list")
async def list_notifications(
    caller: Caller,
    services: Services,
    contract_id: Annotated[str | None, Query(alias="contractId")] = None,
    status: str | None = None,
    type: str | None = None,  # noqa: A002 - the query parameter's name
    after: str | None = None,
    limit: str | None = None,
) -> NotificationList:
    request = PageRequest.parse(after, limit, default_limit=50)
    after_id, size = request.offset, request.limit

    def work(session: Session) -> list[NotificationRecord]:
        return notifications.list_notifications(
            session,
            caller,
            contract_id=contract_id,
            state=status,
            type_=type,
            after_id=after_id,
            limit=size + 1,
        )

    records = await services.db.run(work)
    page = records[:size]
    return NotificationList(
        after=str(page[-1].id) if page else None,
        limit=size,
        has_next=len(records) > size,
        data=[Notification.of(r) for r in page],
    )


class ChannelDefaults(ApiModel):
    sms: StrictBool | None = None
    email: StrictBool | None = None


class NotificationSettingsDto(ApiModel):
    """What one unit overrides; null or absent inherits from the parent unit."""

    defaults: dict[str, ChannelDefaults] | None = None
    start_reminder_lead_minutes: StrictInt | None = Field(default=None, ge=0, le=43200)
    end_reminder_lead_minutes: StrictInt | None = Field(default=None, ge=0, le=43200)
    timezone: str | None = None
    sender_name: str | None = None
    sms_sender_id: str | None = None
    reply_to: str | None = None
    # Notices to the unit's admins (a webhook subscription disabled); unset: replyTo.
    admin_email: str | None = None
    # A device key still out this long after its contract's end is overdue: the unit's
    # admins are told (docs/contracts.md, "Overdue keys").
    overdue_after_minutes: StrictInt | None = Field(default=None, ge=0, le=43200)
    # The contact is reminded of overdue keys too.
    guest_overdue_reminders: StrictBool | None = None


class EffectiveSettings(ApiModel):
    defaults: dict[str, dict[str, bool]]
    start_reminder_lead_minutes: int
    end_reminder_lead_minutes: int
    timezone: str
    sender_name: str | None
    sms_sender_id: str | None
    reply_to: str | None
    admin_email: str | None
    overdue_after_minutes: int
    guest_overdue_reminders: bool


class NotificationSettingsView(ApiModel):
    organization_unit_id: str
    override: NotificationSettingsDto
    effective: EffectiveSettings


def _minutes(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds() // 60)


def _view(session: Session, unit_id: str) -> NotificationSettingsView:
    own = notifications.read_override(session, unit_id)
    org = notifications.load_settings(session, unit_id)
    return NotificationSettingsView(
        organization_unit_id=unit_id,
        override=NotificationSettingsDto(
            defaults={t: ChannelDefaults(**c) for t, c in (own.defaults or {}).items()}
            if own.defaults
            else None,
            start_reminder_lead_minutes=_minutes(own.start_reminder_lead),
            end_reminder_lead_minutes=_minutes(own.end_reminder_lead),
            timezone=own.timezone,
            sender_name=own.sender_name,
            sms_sender_id=own.sms_sender_id,
            reply_to=own.reply_to,
            admin_email=own.admin_email,
            overdue_after_minutes=_minutes(own.overdue_after),
            guest_overdue_reminders=own.guest_overdue_reminders,
        ),
        effective=EffectiveSettings(
            defaults=org.defaults,
            start_reminder_lead_minutes=_minutes(org.start_reminder_lead) or 0,
            end_reminder_lead_minutes=_minutes(org.end_reminder_lead) or 0,
            timezone=org.timezone,
            sender_name=org.sender_name,
            sms_sender_id=org.sms_sender_id,
            reply_to=org.reply_to,
            admin_email=org.admin_email,
            overdue_after_minutes=_minutes(org.overdue_after) or 0,
            guest_overdue_reminders=org.guest_overdue_reminders,
        ),
    )


SETTINGS_PATH = "/organizationunits/{id}/notification-settings"


@router.get(SETTINGS_PATH, operation_id="AdminNotificationSettings_get")
async def get_settings(id: str, caller: Caller, services: Services) -> NotificationSettingsView:  # noqa: A002
    def work(session: Session) -> NotificationSettingsView:
        notifications.scoped_unit(session, caller, id)
        return _view(session, id)

    return await services.db.run(work)


@router.put(SETTINGS_PATH, operation_id="AdminNotificationSettings_put")
async def put_settings(
    id: str,  # noqa: A002
    body: NotificationSettingsDto,
    caller: Caller,
    services: Services,
) -> NotificationSettingsView:
    now = services.clock.now()

    def lead(minutes: int | None) -> timedelta | None:
        return None if minutes is None else timedelta(minutes=minutes)

    override = SettingsOverride(
        defaults={
            t: {ch: v for ch, v in c.model_dump().items() if v is not None}
            for t, c in body.defaults.items()
        }
        if body.defaults
        else None,
        start_reminder_lead=lead(body.start_reminder_lead_minutes),
        end_reminder_lead=lead(body.end_reminder_lead_minutes),
        timezone=body.timezone,
        sender_name=body.sender_name,
        sms_sender_id=body.sms_sender_id,
        reply_to=body.reply_to,
        admin_email=body.admin_email,
        overdue_after=lead(body.overdue_after_minutes),
        guest_overdue_reminders=body.guest_overdue_reminders,
    )

    def work(session: Session) -> NotificationSettingsView:
        notifications.scoped_unit(session, caller, id)
        notifications.set_override(session, id, override, now=now)
        return _view(session, id)

    return await services.db.run(work)
