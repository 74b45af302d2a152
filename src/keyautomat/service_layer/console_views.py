"""What the console's pages read that no API route does: the dashboard's figures, who holds
each locker, an automat's recent events (docs/console.md).

Reads only, each scoped to the caller's subtree like every API read; the pages
call the same use cases as the API for everything else (``automats``, ``devices``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from keyautomat.adapters import orm
from keyautomat.adapters.orm_contracts import contract_keys, contract_reservations, contracts
from keyautomat.adapters.orm_devices import automat_events, device_alarms, device_links
from keyautomat.adapters.orm_iloq import iloq_keys
from keyautomat.adapters.orm_mechanical import mechanical_contracts, mechanical_keys
from keyautomat.adapters.orm_notify import notifications
from keyautomat.adapters.orm_webhooks import webhook_attempts, webhook_subscriptions
from keyautomat.contracts.rules import KeyStatus
from keyautomat.domain.model import LifecycleState
from keyautomat.service_layer import outbox, webhooks
from keyautomat.service_layer.automats import get_automat
from keyautomat.service_layer.devices import online_condition
from keyautomat.service_layer.principal import Principal, in_scope

a = orm.automats
# Failed deliveries are counted over this window: older ones were dealt with or never will be.
FAILURE_WINDOW = timedelta(days=7)
RECENT_ALARMS = 10
OVERDUE_LINES = 10


@dataclass(frozen=True, slots=True)
class OverdueKey:
    """A key still out after its contract's end: one line of the dashboard."""

    contract_id: str  # as the API names it (the caller's id of a mechanical contract)
    kind: str
    key_id: str  # as the API names it
    key_name: str | None
    automat_id: str | None  # None: a manual-storage key
    automat_name: str | None
    locker_index: int | None
    timezone: str | None
    end: datetime
    contact_name: str | None
    # Another contract waits for the key: its code is held until the key is back.
    next_waiting: bool


@dataclass(frozen=True, slots=True)
class OpenAlarm:
    id: str
    automat_id: str
    automat_name: str
    timezone: str
    alarm_type: str
    started_at: datetime
    ongoing: bool


@dataclass(frozen=True, slots=True)
class Dashboard:
    online: int
    offline: int
    waiting: int
    open_alarms: int
    recent_alarms: list[OpenAlarm]
    fetched_today: int
    returned_today: int
    overdue: int
    failed_notifications: int
    failed_webhooks: int
    # The longest overdue keys still out, one dashboard line each (overdue_keys).
    overdue_keys: list[OverdueKey]


def dashboard(
    session: Session, principal: Principal, now: datetime, offline_after: float
) -> Dashboard:
    scope = in_scope(a.c.organization_unit_id, principal)
    online = online_condition(now, offline_after)
    active = a.c.lifecycle_state == LifecycleState.ACTIVE
    counts = session.execute(
        select(
            func.sum(case((and_(active, online), 1), else_=0)),
            func.sum(case((and_(active, ~online), 1), else_=0)),
            func.sum(case((a.c.lifecycle_state == LifecycleState.WAITING_FOR_INSTALL, 1), else_=0)),
        )
        .select_from(a.outerjoin(device_links, device_links.c.automat_id == a.c.id))
        .where(scope)
    ).one()
    # Open: still on, or over but not yet acknowledged by anyone.
    open_ = or_(device_alarms.c.ended_at.is_(None), device_alarms.c.acknowledged_at.is_(None))
    alarms = select(device_alarms).join(a, a.c.id == device_alarms.c.automat_id).where(scope, open_)
    open_count = session.scalar(select(func.count()).select_from(alarms.subquery())) or 0
    recent = session.execute(
        select(
            device_alarms.c.id,
            device_alarms.c.automat_id,
            a.c.name,
            a.c.timezone,
            device_alarms.c.alarm_type,
            device_alarms.c.started_at,
            device_alarms.c.ended_at,
        )
        .join(a, a.c.id == device_alarms.c.automat_id)
        .where(scope, open_)
        .order_by(device_alarms.c.started_at.desc(), device_alarms.c.id)
        .limit(RECENT_ALARMS)
    ).all()
    fetched, returned = _today(session, principal, now)
    return Dashboard(
        online=int(counts[0] or 0),
        offline=int(counts[1] or 0),
        waiting=int(counts[2] or 0),
        open_alarms=int(open_count),
        recent_alarms=[
            OpenAlarm(
                r.id,
                r.automat_id,
                r.name,
                r.timezone,
                r.alarm_type,
                r.started_at,
                r.ended_at is None,
            )
            for r in recent
        ],
        fetched_today=fetched,
        returned_today=returned,
        overdue=_overdue(session, principal),
        failed_notifications=_failed_notifications(session, principal, now - FAILURE_WINDOW),
        failed_webhooks=_failed_webhooks(session, principal, now - FAILURE_WINDOW),
        overdue_keys=overdue_keys(session, principal, limit=OVERDUE_LINES),
    )


def _midnight(now: datetime, timezone: str) -> datetime:
    try:
        zone = ZoneInfo(timezone)
    except (ValueError, KeyError, OSError):
        zone = ZoneInfo("UTC")
    local = now.astimezone(zone)
    return datetime.combine(local.date(), time(), tzinfo=zone)


def _today(session: Session, principal: Principal, now: datetime) -> tuple[int, int]:
    """Keys of the caller's contracts fetched and returned since midnight where the automat
    stands: one pair of counts per time zone of the automats (usually one)."""
    zones = session.scalars(
        select(a.c.timezone).where(in_scope(a.c.organization_unit_id, principal)).distinct()
    ).all()
    fetched = returned = 0
    for zone in zones:
        since = _midnight(now, zone)
        base = (
            select(
                func.sum(case((contract_keys.c.fetched_at >= since, 1), else_=0)),
                func.sum(case((contract_keys.c.returned_at >= since, 1), else_=0)),
            )
            .join(contracts, contracts.c.id == contract_keys.c.contract_id)
            .join(a, a.c.id == contract_keys.c.automat_id)
            .where(
                a.c.timezone == zone,
                in_scope(contracts.c.organization_unit_id, principal),
                or_(contract_keys.c.fetched_at >= since, contract_keys.c.returned_at >= since),
            )
        )
        row = session.execute(base).one()
        fetched += int(row[0] or 0)
        returned += int(row[1] or 0)
    return fetched, returned


def _overdue(session: Session, principal: Principal) -> int:
    """Keys whose contract ended while they were out (``key-not-returned``, gaps.md C12)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(contract_keys)
            .join(contracts, contracts.c.id == contract_keys.c.contract_id)
            .where(
                contract_keys.c.status == KeyStatus.NOT_RETURNED,
                contracts.c.deleted_at.is_(None),
                in_scope(contracts.c.organization_unit_id, principal),
            )
        )
        or 0
    )


def overdue_keys(session: Session, principal: Principal, limit: int = 50) -> list[OverdueKey]:
    """Keys of the caller's contracts still out after their contract's end (``key-not-returned``
    and not back), the longest overdue first: what staff should chase (docs/contracts.md,
    "Overdue keys")."""
    ck, c = contract_keys, contracts
    held = aliased(contract_keys)
    waiting = exists().where(
        held.c.key_id == ck.c.key_id,
        held.c.held_since.is_not(None),
        held.c.in_history.is_(False),
    )
    rows = session.execute(
        select(
            c.c.id,
            c.c.kind,
            c.c.end,
            c.c.contact,
            mechanical_contracts.c.public_id,
            ck.c.key_id,
            ck.c.automat_id,
            ck.c.locker_index,
            mechanical_keys.c.id.label("mechanical_id"),
            func.coalesce(mechanical_keys.c.name, iloq_keys.c.name).label("key_name"),
            a.c.name.label("automat_name"),
            a.c.timezone,
            waiting.label("next_waiting"),
        )
        .join(c, c.c.id == ck.c.contract_id)
        .outerjoin(mechanical_contracts, mechanical_contracts.c.contract_id == c.c.id)
        .outerjoin(mechanical_keys, mechanical_keys.c.object_id == ck.c.key_id)
        .outerjoin(iloq_keys, iloq_keys.c.id == ck.c.key_id)
        .outerjoin(a, a.c.id == ck.c.automat_id)
        .where(
            ck.c.status == KeyStatus.NOT_RETURNED,
            ck.c.in_history.is_(False),
            c.c.deleted_at.is_(None),
            in_scope(c.c.organization_unit_id, principal),
        )
        .order_by(c.c.end, c.c.id, ck.c.position)
        .limit(limit)
    ).all()
    return [
        OverdueKey(
            contract_id=r.public_id or r.id,
            kind=r.kind,
            key_id=r.mechanical_id or r.key_id,
            key_name=r.key_name,
            automat_id=r.automat_id,
            automat_name=r.automat_name,
            locker_index=r.locker_index,
            timezone=r.timezone,
            end=r.end,
            contact_name=_contact_name(r.contact),
            next_waiting=bool(r.next_waiting),
        )
        for r in rows
    ]


def _contact_name(stored: str | None) -> str | None:
    try:
        name = json.loads(stored or "null")["name"]
    except (ValueError, TypeError, KeyError):
        return None
    return name if isinstance(name, str) else None


def _failed_notifications(session: Session, principal: Principal, since: datetime) -> int:
    box = orm.outbox
    return int(
        session.scalar(
            select(func.count())
            .select_from(notifications)
            .join(box, box.c.id == notifications.c.outbox_id)
            .where(
                box.c.status == outbox.FAILED,
                box.c.finished_at >= since,
                in_scope(notifications.c.organization_unit_id, principal),
            )
        )
        or 0
    )


def _failed_webhooks(session: Session, principal: Principal, since: datetime) -> int:
    """Webhook deliveries that gave up, to subscriptions in the caller's subtree."""
    box = orm.outbox
    ours = (
        select(webhook_attempts.c.id)
        .join(
            webhook_subscriptions,
            webhook_subscriptions.c.id == webhook_attempts.c.subscription_id,
        )
        .where(
            webhook_attempts.c.outbox_id == box.c.id,
            in_scope(webhook_subscriptions.c.organization_unit_id, principal),
        )
    )
    return int(
        session.scalar(
            select(func.count())
            .select_from(box)
            .where(
                box.c.kind == webhooks.KIND,
                box.c.status == outbox.FAILED,
                box.c.finished_at >= since,
                exists(ours),
            )
        )
        or 0
    )


# --- one automat ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holder:
    """The contract that holds a locker now, or holds it next."""

    contract_id: str | None  # None: a contract of a unit the caller does not see
    kind: str
    start: datetime


def locker_holders(
    session: Session, principal: Principal, automat_id: str, now: datetime
) -> dict[int, Holder]:
    """By locker index: the contract reserving it now, else the next one to."""
    get_automat(session, principal, automat_id)
    r = contract_reservations
    rows = session.execute(
        select(
            r.c.locker_index,
            r.c.contract_id,
            r.c.start,
            contracts.c.kind,
            contracts.c.organization_unit_id,
        )
        .join(contracts, contracts.c.id == r.c.contract_id)
        .where(r.c.automat_id == automat_id, r.c.until > now, contracts.c.deleted_at.is_(None))
        .order_by(r.c.locker_index, r.c.start)
    ).all()
    visible = _visible_units(session, principal, {row.organization_unit_id for row in rows})
    holders: dict[int, Holder] = {}
    for row in rows:
        if row.locker_index not in holders:
            shown = row.contract_id if row.organization_unit_id in visible else None
            holders[row.locker_index] = Holder(shown, row.kind, row.start)
    return holders


def _visible_units(session: Session, principal: Principal, unit_ids: set[str]) -> set[str]:
    if not unit_ids:
        return set()
    ou = orm.organization_units
    return set(
        session.scalars(select(ou.c.id).where(ou.c.id.in_(unit_ids), in_scope(ou.c.id, principal)))
    )


@dataclass(frozen=True, slots=True)
class EventView:
    occurred_at: datetime
    type: str
    locker_index: int | None
    key_id: str | None
    detail: str | None


def recent_events(
    session: Session, principal: Principal, automat_id: str, limit: int = 20
) -> list[EventView]:
    """The automat's latest events, newest first. Typed codes are never shown: a pincode
    opens a home, and the console has viewers."""
    get_automat(session, principal, automat_id)
    rows = session.execute(
        select(
            automat_events.c.occurred_at,
            automat_events.c.type,
            automat_events.c.locker_index,
            automat_events.c.key_id,
            automat_events.c.data,
        )
        .where(automat_events.c.automat_id == automat_id)
        .order_by(automat_events.c.id.desc())
        .limit(limit)
    ).all()
    return [
        EventView(r.occurred_at, r.type, r.locker_index, r.key_id, _detail(r.data)) for r in rows
    ]


def _detail(data: str) -> str | None:
    """The one word worth showing of an event's data (an alarm's type and state)."""
    try:
        fields = json.loads(data)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    words = [str(fields[k]) for k in ("alarmType", "state") if isinstance(fields.get(k), str)]
    return " ".join(words) or None


def online_automats(
    session: Session, automat_ids: Sequence[str], now: datetime, offline_after: float
) -> set[str]:
    """Which of these automats (already read in scope) are online now."""
    if not automat_ids:
        return set()
    return set(
        session.scalars(
            select(a.c.id)
            .join(device_links, device_links.c.automat_id == a.c.id)
            .where(a.c.id.in_(list(automat_ids)), online_condition(now, offline_after))
        )
    )


@dataclass(frozen=True, slots=True)
class Choice:
    id: str
    name: str


def install_choices(session: Session, principal: Principal) -> tuple[list[Choice], list[Choice]]:
    """The units and device groups an install form offers: the caller's subtree, by name
    (at most 500 of each; the id can still be typed for the rest)."""
    ou, g = orm.organization_units, orm.groups
    units = session.execute(
        select(ou.c.id, ou.c.name)
        .where(in_scope(ou.c.id, principal))
        .order_by(ou.c.path)
        .limit(500)
    ).all()
    groups = session.execute(
        select(g.c.id, g.c.name)
        .where(in_scope(g.c.organization_unit_id, principal), g.c.type == 1)
        .order_by(g.c.name, g.c.id)
        .limit(500)
    ).all()
    return [Choice(u.id, u.name) for u in units], [Choice(x.id, x.name) for x in groups]
