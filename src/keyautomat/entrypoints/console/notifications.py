"""Notifications: a unit's defaults and lead times (what it overrides and what is in force),
and the message log with each message's state and reason (docs/console.md,
"Notifications"). Admins only, like the API's ``/admin/notifications`` and
``/admin/organizationunits/{id}/notification-settings``, whose use cases these pages call
(``service_layer/notifications.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.notifications import (
    CHANNELS,
    NOTIFICATION_TYPES,
    OrgNotificationSettings,
)
from keyautomat.entrypoints.console.forms import form_errors
from keyautomat.entrypoints.console.web import (
    PREFIX,
    SignedIn,
    Submission,
    Submitted,
    console_of,
    form_text,
    notice_text,
    render,
    see_other,
)
from keyautomat.service_layer import console_views, notifications
from keyautomat.service_layer.console_views import Choice
from keyautomat.service_layer.notifications import STATES, NotificationRecord, SettingsOverride
from keyautomat.service_layer.pagination import MAX_URL_DIGITS, small_natural
from keyautomat.service_layer.principal import Principal

router = APIRouter(prefix="/notifications", include_in_schema=False)

LOG_SIZE = 50
NOTICES = ("notifications.saved",)
TYPES = tuple(t.value for t in NOTIFICATION_TYPES)
# The API's names of the settings, as the form names them.
FIELDS = {
    "startReminderLead": "start_lead",
    "endReminderLead": "end_lead",
    "timezone": "timezone",
    "replyTo": "reply_to",
    "adminEmail": "admin_email",
    "defaults": "defaults",
}
TEXT_SETTINGS = ("timezone", "sender_name", "sms_sender_id", "reply_to", "admin_email")


@dataclass(frozen=True, slots=True)
class SettingsPage:
    unit_id: str
    units: list[Choice]
    override: SettingsOverride
    effective: OrgNotificationSettings
    log: list[NotificationRecord]
    older: int | None  # the id to page on from, when older messages exist
    contracts: dict[str, tuple[str, str]]


def _minutes(value: timedelta | None) -> str:
    return "" if value is None else str(int(value.total_seconds() // 60))


def _values(override: SettingsOverride) -> dict[str, str]:
    """The form's fields for what a unit overrides ("" inherits)."""
    values = {
        "start_lead": _minutes(override.start_reminder_lead),
        "end_lead": _minutes(override.end_reminder_lead),
        **{name: getattr(override, name) or "" for name in TEXT_SETTINGS},
    }
    for type_name, cells in (override.defaults or {}).items():
        for channel, flag in cells.items():
            values[f"d.{type_name}.{channel}"] = "on" if flag else "off"
    return values


async def _page(
    request: Request,
    principal: Principal,
    *,
    unit: str | None = None,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    principal.require_admin()
    container = console_of(request).container
    query = request.query_params
    state = form_text(dict(query), "state", max_length=16)
    if state is not None and state not in STATES:
        state = None
    type_ = query.get("type") if query.get("type") in TYPES else None
    before = small_natural(query.get("before", "")) if query.get("before") else None

    def work(session: Session) -> SettingsPage:
        units, _ = console_views.install_choices(session, principal)
        unit_id = unit or query.get("unit") or principal.organization_unit_id
        notifications.scoped_unit(session, principal, unit_id)
        log = notifications.list_notifications(
            session,
            principal,
            state=state,
            type_=type_,
            before_id=before if before is not None else 10**MAX_URL_DIGITS,
            limit=LOG_SIZE + 1,
        )
        more = log[LOG_SIZE - 1].id if len(log) > LOG_SIZE else None
        shown = log[:LOG_SIZE]
        return SettingsPage(
            unit_id,
            units,
            notifications.read_override(session, unit_id),
            notifications.load_settings(session, unit_id),
            shown,
            more,
            console_views.contract_pages(session, [m.contract_id for m in shown]),
        )

    page = await container.db.run(work)
    return render(
        request,
        "notifications.html",
        status=status,
        section="notifications",
        p=page,
        values=values if values is not None else _values(page.override),
        errors=errors or {},
        types=TYPES,
        channels=CHANNELS,
        states=STATES,
        state=state or "",
        type_=type_ or "",
        contract_path=lambda kind, public_id: (
            f"{PREFIX}/contracts/{kind}/{quote(public_id, safe='')}"
        ),
        notice=notice_text(query.get("notice"), NOTICES),
    )


@router.get("")
async def notifications_page(request: Request, me: SignedIn) -> HTMLResponse:
    return await _page(request, me.principal)


def _lead(submitted: Submission, field: str) -> timedelta | None:
    value = submitted.text(field, max_length=6)
    if value is None:
        return None
    number = small_natural(value)
    if number is None:
        raise InvalidInput(field, "must be a whole number of minutes")
    return timedelta(minutes=number)


def _override(submitted: Submission) -> SettingsOverride:
    """The form as what the unit overrides: empty fields and "inherit" cells inherit."""
    defaults: dict[str, dict[str, bool]] = {}
    for type_name in TYPES:
        for channel in CHANNELS:
            chosen = submitted.form.get(f"d.{type_name}.{channel}", "")
            if chosen in ("on", "off"):
                defaults.setdefault(type_name, {})[channel] = chosen == "on"
    texts = {name: submitted.text(name, max_length=254) for name in TEXT_SETTINGS}
    return SettingsOverride(
        defaults=defaults or None,
        start_reminder_lead=_lead(submitted, "start_lead"),
        end_reminder_lead=_lead(submitted, "end_lead"),
        timezone=texts["timezone"],
        sender_name=texts["sender_name"],
        sms_sender_id=texts["sms_sender_id"],
        reply_to=texts["reply_to"],
        admin_email=texts["admin_email"],
    )


@router.post("/settings/{unit_id}")
async def save_settings(request: Request, unit_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    principal.require_admin()
    container = console_of(request).container
    now = container.clock.now()
    try:
        override = _override(submitted)

        def work(session: Session) -> None:
            notifications.scoped_unit(session, principal, unit_id)
            # The form does not show the overdue-key settings (docs/contracts.md): they
            # stay what the unit has.
            kept = notifications.read_override(session, unit_id)
            whole = replace(
                override,
                overdue_after=kept.overdue_after,
                guest_overdue_reminders=kept.guest_overdue_reminders,
            )
            notifications.set_override(session, unit_id, whole, now=now)

        await container.db.run(work)
    except InvalidInput as exc:
        values = {k: v for k, v in submitted.form.items() if k != "csrf"}
        errors = form_errors(exc, FIELDS)
        return await _page(
            request, principal, unit=unit_id, values=values, errors=errors, status=400
        )
    return see_other(
        f"{PREFIX}/notifications?unit={quote(unit_id, safe='')}", notice="notifications.saved"
    )
