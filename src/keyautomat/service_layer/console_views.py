"""What the console's pages read that no API route does: the dashboard's figures, who holds
each locker, an automat's recent events (docs/console.md).

Reads only, each scoped to the caller's subtree like every API read; the pages
call the same use cases as the API for everything else (``automats``, ``devices``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    or_,
    select,
    union,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, aliased

from keyautomat.adapters import orm
from keyautomat.adapters.orm_console import console_users
from keyautomat.adapters.orm_contracts import contract_keys, contract_reservations, contracts
from keyautomat.adapters.orm_devices import automat_events, device_alarms, device_links
from keyautomat.adapters.orm_iloq import iloq_keys
from keyautomat.adapters.orm_mechanical import mechanical_contracts, mechanical_keys
from keyautomat.adapters.orm_mechanical import mechanical_keys as mk
from keyautomat.adapters.orm_notify import notifications
from keyautomat.adapters.orm_webhooks import webhook_attempts, webhook_subscriptions
from keyautomat.contracts import rules
from keyautomat.contracts.model import Contract, ListFilters
from keyautomat.contracts.rules import KeyStatus
from keyautomat.contracts.store import SqlContractStore, period_condition
from keyautomat.domain.devices import AutomatEventType
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.mechanical import check_signature_image
from keyautomat.domain.model import LifecycleState
from keyautomat.domain.notifications import AutomatView
from keyautomat.service_layer import outbox, webhooks
from keyautomat.service_layer.automats import get_automat
from keyautomat.service_layer.devices import online_condition
from keyautomat.service_layer.notifications import list_notifications, load_settings
from keyautomat.service_layer.pagination import Page, PageRequest
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


# Contract ids per statement when counting today's keys (bound parameters stay few).
TODAY_CHUNK = 500


def _today(session: Session, principal: Principal, now: datetime) -> tuple[int, int]:
    """Keys of the caller's contracts fetched and returned since midnight where the automat
    stands: one pair of counts per time zone of the automats (usually one)."""
    zones = session.scalars(
        select(a.c.timezone).where(in_scope(a.c.organization_unit_id, principal)).distinct()
    ).all()
    fetched = returned = 0
    for zone in zones:
        since = _midnight(now, zone)

        def since_midnight(column: Any, since: datetime = since, zone: str = zone) -> int:
            # First the keys of today alone, a range of the column's own index (they are
            # few), then which of them count here. One query joining everything let
            # SQLite start from the units and read every contract key: a second at
            # 100k contracts (it has no statistics to know better).
            today = session.scalars(
                select(contract_keys.c.contract_id).where(column >= since).distinct()
            ).all()
            total = 0
            for start in range(0, len(today), TODAY_CHUNK):
                total += int(
                    session.scalar(
                        select(func.count())
                        .select_from(contract_keys)
                        .join(contracts, contracts.c.id == contract_keys.c.contract_id)
                        .join(a, a.c.id == contract_keys.c.automat_id)
                        .where(
                            contract_keys.c.contract_id.in_(today[start : start + TODAY_CHUNK]),
                            column >= since,
                            a.c.timezone == zone,
                            in_scope(contracts.c.organization_unit_id, principal),
                        )
                    )
                    or 0
                )
            return total

        fetched += since_midnight(contract_keys.c.fetched_at)
        returned += since_midnight(contract_keys.c.returned_at)
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


# === contracts (docs/console.md, "Contracts") =============================================
# The contract pages call the contract use cases (contracts/service.py) for every change and
# for one contract; what they read besides is here: both kinds in one list with a search,
# the names and places around a contract, and its timeline.


@dataclass(frozen=True, slots=True)
class ContractSearch:
    """The contract list's filters: the API's period filters (gaps.md C14) and a search of
    the guest's name, email and phone, the keys, and (``codes``) the pincodes."""

    periods: ListFilters = field(default_factory=ListFilters)
    text: str | None = None
    codes: bool = False


@dataclass(frozen=True, slots=True)
class ContractRow:
    contract: Contract
    state: str  # rules.period_state
    timezone: str
    key_names: dict[str, str | None]  # by stored key id


# What a contract's keys are called and where they are: names by stored id.
_ILOQ_NAMES = select(iloq_keys.c.id, iloq_keys.c.name).where(
    iloq_keys.c.id.in_(bindparam("ids", expanding=True))
)
_MECHANICAL_NAMES = select(mk.c.object_id, mk.c.name).where(
    mk.c.object_id.in_(bindparam("ids", expanding=True))
)
# A phone number as people type it: digits, spaces, "+", "-" and brackets.
_PHONE_LIKE = re.compile(r"[0-9 +()\-]+")
MAX_SEARCH = 100


def key_names(session: Session, found: Sequence[Contract]) -> dict[str, str | None]:
    """Display names of the contracts' keys, by stored key id (iLOQ: the key register's
    name; mechanical: the key's own name)."""
    names: dict[str, str | None] = {}
    for kind, stmt in (("iloq", _ILOQ_NAMES), ("mechanical", _MECHANICAL_NAMES)):
        ids = sorted({k.stored_id for c in found if c.kind == kind for k in c.keys})
        if ids:
            names.update((row[0], row[1]) for row in session.execute(stmt, {"ids": ids}))
    return names


def contract_timezone(
    session: Session, contract: Contract, automats: dict[str, AutomatView]
) -> str:
    """Where a contract's times are shown: its first key's automat, else the time zone of
    its unit's notifications (manual-storage keys have no automat)."""
    for key in contract.keys:
        if key.automat_id and key.automat_id in automats:
            return automats[key.automat_id].timezone
    return load_settings(session, contract.organization_unit_id).timezone


def _contact_field(session: Session, name: str) -> ColumnElement[str]:
    if session.get_bind().dialect.name == "postgresql":
        text: ColumnElement[str] = cast(contracts.c.contact, JSONB)[name].astext
        return text
    return func.json_extract(contracts.c.contact, f"$.{name}")


def _ascii_lower(text: str) -> str:
    """``text`` as SQLite's ``lower()`` leaves it: only ASCII letters change case."""
    return "".join(ch.lower() if ch.isascii() else ch for ch in text)


def _matching(session: Session, text: str, *, codes: bool) -> ColumnElement[bool]:
    """Contracts whose guest, key or (``codes``) pincode matches ``text``, in any case (on
    SQLite, whose ``lower()`` knows only ASCII, non-ASCII letters match in their case).

    One set of ids, the union of a subquery per way to match: each is read once (the
    contacts in one pass over the table, the keys through their index), where the same
    conditions ORed in the list's own query were tried row by row in the list's order."""
    needles = sorted({text.lower(), _ascii_lower(text)})
    ck, c = contract_keys, contracts

    def containing(column: ColumnElement[str], values: list[str]) -> ColumnElement[bool]:
        lowered = func.lower(column)
        return or_(*(lowered.contains(v, autoescape=True) for v in values))

    # The contact is stored as JSON text (non-ASCII escaped): a cheap test of the text
    # comes first, and only rows that pass it are parsed for the fields themselves.
    stored = containing(c.c.contact, [json.dumps(n)[1:-1] for n in needles])
    fields = [containing(_contact_field(session, f), needles) for f in ("name", "email")]
    ids: list[Select[Any]] = [select(c.c.id).where(stored, or_(*fields))]
    digits = re.sub(r"\D", "", text)
    if _PHONE_LIKE.fullmatch(text) and len(digits) >= 5:
        # 040 123 4567 finds +358401234567: the national prefix 0 (or 00) is left out.
        # The last four digits stand together however the number was written: a cheap
        # test of the stored text before the number itself is read.
        national = digits.removeprefix("00").removeprefix("0")
        phone = func.replace(_contact_field(session, "phoneNumber"), " ", "")
        ids.append(
            select(c.c.id).where(
                c.c.contact.contains(digits[-4:], autoescape=True),
                phone.contains(national, autoescape=True),
            )
        )
    named = (
        select(iloq_keys.c.id).where(containing(iloq_keys.c.name, needles)),
        select(mk.c.object_id).where(
            or_(containing(mk.c.id, needles), containing(mk.c.name, needles))
        ),
    )
    ids.append(select(ck.c.contract_id).where(ck.c.key_id == text))
    ids += [select(ck.c.contract_id).where(ck.c.key_id.in_(keys)) for keys in named]
    if codes and rules.check_pincode(text) is None:
        ids.append(select(ck.c.contract_id).where(ck.c.pincode == text))
    return c.c.id.in_(union(*ids))


def contract_list(
    session: Session,
    principal: Principal,
    page: PageRequest,
    search: ContractSearch,
    now: datetime,
) -> Page[ContractRow]:
    """Contracts of both kinds in the caller's subtree, newest first."""
    stmt = select(contracts.c.id).where(
        contracts.c.deleted_at.is_(None), in_scope(contracts.c.organization_unit_id, principal)
    )
    period = period_condition(search.periods, now)
    if period is not None:
        stmt = stmt.where(period)
    if search.text:
        if len(search.text) > MAX_SEARCH:
            raise InvalidInput("q", f"must be at most {MAX_SEARCH} characters long")
        stmt = stmt.where(_matching(session, search.text, codes=search.codes))
    stmt = (
        stmt.order_by(contracts.c.created_at.desc(), contracts.c.id.desc())
        .offset(page.offset)
        .limit(page.limit + 1)
    )
    ids = list(session.scalars(stmt))
    store = SqlContractStore(session)
    found = store.load_many(ids[: page.limit])
    automats = store.automat_views({k.automat_id for c in found for k in c.keys if k.automat_id})
    names = key_names(session, found)
    rows = [
        ContractRow(
            contract,
            rules.period_state(contract.start, contract.end, contract.completed_at, now),
            contract_timezone(session, contract, automats),
            names,
        )
        for contract in found
    ]
    return Page(rows, page.offset + len(rows), page.limit, len(ids) > page.limit)


# --- one contract -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    """A mechanical contract's signature (gaps.md F3); ``image`` only when it is still a
    PNG or JPEG data URL (it is shown as an image)."""

    name: str | None
    image: str | None
    signed_at: datetime


@dataclass(frozen=True, slots=True)
class Delivered:
    """One webhook delivery of a timeline event, to a subscription the caller sees."""

    subscription_id: str
    subscription_name: str
    delivery_id: int
    status: str
    attempts: int


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One thing that happened to a contract; ``what`` names it (strings.py ``timeline.*``),
    the other fields say what the kind of entry has to say."""

    at: datetime
    what: str
    key_id: str | None = None
    automat_id: str | None = None
    locker_index: int | None = None
    detail: str | None = None
    message_id: int | None = None
    channel: str | None = None
    recipient: str | None = None
    state: str | None = None
    reason: str | None = None
    deliveries: tuple[Delivered, ...] = ()


@dataclass(frozen=True, slots=True)
class ContractDetail:
    contract: Contract
    kind: str
    state: str
    timezone: str
    automats: dict[str, AutomatView]
    key_names: dict[str, str | None]  # by stored key id
    key_labels: dict[str, str]  # what to call each key, by its id on the wire
    signature: Signature | None
    timeline: list[TimelineEntry]
    created_at: datetime


# Each source of a timeline is read up to this many rows: a long-running contract's page
# stays bounded (the notification and webhook logs have pages of their own).
TIMELINE_ROWS = 200
_EVENT_WHAT = {
    AutomatEventType.CODE_ENTERED: "code-entered",
    AutomatEventType.KEY_REMOVED: "key-fetched",
    AutomatEventType.KEY_INSERTED: "key-returned",
}


def contract_detail(
    session: Session, principal: Principal, contract: Contract, now: datetime
) -> ContractDetail:
    """What a contract's page shows besides the contract (read by ``service.get``, in
    scope): names, places, the signature, and the timeline."""
    store = SqlContractStore(session)
    automats = store.automat_views(k.automat_id for k in contract.keys if k.automat_id)
    row = session.execute(
        select(
            contracts.c.created_at,
            mechanical_contracts.c.signature_name,
            mechanical_contracts.c.signature_data,
        )
        .outerjoin(mechanical_contracts, mechanical_contracts.c.contract_id == contracts.c.id)
        .where(contracts.c.id == contract.id)
    ).one()
    signature = None
    if contract.signed_at is not None:
        image = row.signature_data
        try:
            check_signature_image(image or "")
        except InvalidInput:
            image = None
        signature = Signature(row.signature_name, image, contract.signed_at)
    names = key_names(session, [contract])
    return ContractDetail(
        contract=contract,
        kind=contract.kind,
        state=rules.period_state(contract.start, contract.end, contract.completed_at, now),
        timezone=contract_timezone(session, contract, automats),
        automats=automats,
        key_names=names,
        key_labels={k.key_id: names.get(k.stored_id) or k.key_id for k in contract.keys},
        signature=signature,
        timeline=timeline(session, principal, contract, row.created_at),
        created_at=row.created_at,
    )


def timeline(
    session: Session, principal: Principal, contract: Contract, created_at: datetime
) -> list[TimelineEntry]:
    """What happened to the contract, oldest first: its own rows' times, the device events
    that moved it, its messages and the webhook deliveries that reported it."""
    entries = [TimelineEntry(created_at, "created")]
    entries += _device_entries(session, contract)
    entries += _key_entries(session, contract, {(e.what, e.key_id) for e in entries})
    if contract.signed_at is not None:
        entries.append(TimelineEntry(contract.signed_at, "signed"))
    if contract.end_evaluated_at is not None:
        outcomes = [k for k in contract.keys if k.status in _END_STATES]
        entries += [
            TimelineEntry(contract.end or contract.end_evaluated_at, k.status or "", k.key_id)
            for k in outcomes
        ]
        entries.append(TimelineEntry(contract.end or contract.end_evaluated_at, "ended"))
    if contract.completed_at is not None:
        entries.append(TimelineEntry(contract.completed_at, "completed"))
    entries += _message_entries(session, principal, contract)
    entries += _webhook_entries(session, principal, contract)
    return sorted(entries, key=lambda e: e.at)


_END_STATES = (KeyStatus.NOT_FETCHED.value, KeyStatus.NOT_RETURNED.value)


def _device_entries(session: Session, contract: Contract) -> list[TimelineEntry]:
    """The device events that moved the contract (typed codes are never shown)."""
    e = automat_events
    rows = session.execute(
        select(e.c.occurred_at, e.c.type, e.c.automat_id, e.c.locker_index)
        .where(e.c.contract_id == contract.id)
        .order_by(e.c.id)
        .limit(TIMELINE_ROWS)
    ).all()
    entries = []
    for r in rows:
        key = next(
            (
                k
                for k in contract.keys
                if k.automat_id == r.automat_id and k.locker_index == r.locker_index
            ),
            contract.keys[0] if len(contract.keys) == 1 else None,
        )
        entries.append(
            TimelineEntry(
                r.occurred_at,
                _EVENT_WHAT.get(r.type, r.type),
                key.key_id if key else None,
                r.automat_id,
                r.locker_index,
            )
        )
    return entries


def _key_entries(
    session: Session, contract: Contract, seen: set[tuple[str, str | None]]
) -> list[TimelineEntry]:
    """What the contract's key rows record: iLOQ programming, and a fetch or return no
    device event shows (a staff handover, or an event stored before the link existed)."""
    ck = contract_keys
    rows = session.execute(
        select(ck.c.position, ck.c.programmed_at, ck.c.fetched_at, ck.c.returned_at).where(
            ck.c.contract_id == contract.id
        )
    ).all()
    entries = []
    for r in rows:
        key = contract.key_at(r.position)
        if contract.kind == "iloq" and r.programmed_at is not None:
            entries.append(TimelineEntry(r.programmed_at, "key-programmed", key.key_id))
        for what, at in (("key-fetched", r.fetched_at), ("key-returned", r.returned_at)):
            if at is not None and (what, key.key_id) not in seen:
                entries.append(TimelineEntry(at, what, key.key_id, detail=key.manual_info))
    return entries


def _message_entries(
    session: Session, principal: Principal, contract: Contract
) -> list[TimelineEntry]:
    """The contract's messages (the notification log's use case), by when they were queued,
    or are due when scheduled."""
    return [
        TimelineEntry(
            max(m.created_at, m.due_at),
            "notification",
            m.key_id,
            detail=m.type,
            message_id=m.id,
            channel=m.channel,
            recipient=m.recipient,
            state=m.state,
            reason=m.reason,
        )
        for m in list_notifications(
            session, principal, contract_id=contract.id, limit=TIMELINE_ROWS
        )
    ]


def _webhook_entries(
    session: Session, principal: Principal, contract: Contract
) -> list[TimelineEntry]:
    """Webhook events about the contract, each with its deliveries to the subscriptions the
    caller sees (a parent unit's subscription receives them too, unseen)."""
    box, subs = orm.outbox, webhook_subscriptions
    rows = session.execute(
        select(box.c.id, box.c.payload, box.c.status, box.c.attempts, box.c.created_at)
        .where(box.c.subject == f"contract:{contract.id}", box.c.kind == webhooks.KIND)
        .order_by(box.c.id)
        .limit(TIMELINE_ROWS)
    ).all()
    payloads = [json.loads(r.payload) for r in rows]
    wanted = {p["subscriptionId"] for p in payloads}
    names = (
        dict(
            session.execute(
                select(subs.c.id, subs.c.name).where(
                    subs.c.id.in_(sorted(wanted)), in_scope(subs.c.organization_unit_id, principal)
                )
            ).all()
        )
        if wanted
        else {}
    )
    by_event: dict[str, tuple[datetime, str, str | None, list[Delivered]]] = {}
    for r, payload in zip(rows, payloads, strict=True):
        subscription_id = payload["subscriptionId"]
        if subscription_id not in names:
            continue
        data = json.loads(payload["body"]).get("data") or {}
        entry = by_event.setdefault(
            payload["webhookId"], (r.created_at, payload["eventType"], data.get("state"), [])
        )
        entry[3].append(
            Delivered(subscription_id, names[subscription_id], r.id, r.status, r.attempts)
        )
    return [
        TimelineEntry(at, "webhook", detail=event_type, state=state, deliveries=tuple(done))
        for at, event_type, state, done in by_event.values()
    ]


# --- the contract forms -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredKeyChoice:
    """A key a new contract may name: where it is now."""

    id: str
    name: str | None
    automat_name: str
    locker_index: int | None


@dataclass(frozen=True, slots=True)
class ContractChoices:
    automats: list[Choice]  # active automats of the kind's product
    groups: list[Choice]  # device groups
    keys: list[StoredKeyChoice]  # iLOQ keys in lockers of those automats


FORM_CHOICES = 200


def contract_choices(
    session: Session,
    principal: Principal,
    product: str,
    *,
    with_keys: bool,
    waiting_too: bool = False,
) -> ContractChoices:
    """What a new contract's form offers: the caller's active automats of ``product`` (and,
    ``waiting_too``, those waiting for installation: a key's home may be one), its device
    groups and (``with_keys``) the iLOQ keys in those automats' lockers, by name (at most
    200 of each; the use case checks every choice again)."""
    _, groups = install_choices(session, principal)
    states = [LifecycleState.ACTIVE]
    if waiting_too:
        states.append(LifecycleState.WAITING_FOR_INSTALL)
    automats = session.execute(
        select(a.c.id, a.c.name, a.c.label)
        .where(
            in_scope(a.c.organization_unit_id, principal),
            a.c.lifecycle_state.in_(states),
            a.c.product == product,
        )
        .order_by(a.c.name, a.c.id)
        .limit(FORM_CHOICES)
    ).all()
    keys: list[StoredKeyChoice] = []
    if with_keys:
        rows = session.execute(
            select(
                iloq_keys.c.id,
                iloq_keys.c.name,
                a.c.name.label("automat"),
                iloq_keys.c.locker_index,
            )
            .join(a, a.c.id == iloq_keys.c.automat_id)
            .where(
                in_scope(a.c.organization_unit_id, principal),
                a.c.lifecycle_state == LifecycleState.ACTIVE,
                iloq_keys.c.blocked.is_(False),
            )
            .order_by(a.c.name, iloq_keys.c.locker_index)
            .limit(FORM_CHOICES)
        ).all()
        keys = [StoredKeyChoice(r.id, r.name, r.automat, r.locker_index) for r in rows]
    return ContractChoices(
        [Choice(r.id, f"{r.name} {r.label}" if r.label else r.name) for r in automats],
        groups,
        keys,
    )


# === keys (docs/console.md, "Keys") =======================================================


@dataclass(frozen=True, slots=True)
class KeyContract:
    """The live contract a mechanical key is in now or due for next (one the caller sees)."""

    public_id: str
    status: str | None  # the key's status in it
    manual: bool  # handed over by staff, not at an automat


def key_contracts(
    session: Session, principal: Principal, object_ids: Sequence[str], now: datetime
) -> dict[str, KeyContract]:
    """By mechanical key object id: the first live contract holding it (by start)."""
    if not object_ids:
        return {}
    store = SqlContractStore(session)
    first: dict[str, tuple[str, Any]] = {}
    for contract_id, key in store.live_keys("mechanical", list(object_ids), now):
        first.setdefault(key.stored_id, (contract_id, key))
    found = {c.id: c for c in store.load_many(sorted({cid for cid, _ in first.values()}))}
    visible = _visible_units(session, principal, {c.organization_unit_id for c in found.values()})
    result = {}
    for object_id, (contract_id, key) in first.items():
        contract = found.get(contract_id)
        if contract is not None and contract.organization_unit_id in visible:
            result[object_id] = KeyContract(contract.public_id, key.status, not key.in_automat)
    return result


def automat_names(session: Session, automat_ids: Iterable[str | None]) -> dict[str, str]:
    """Names of automats already read in scope (a key's place), by id."""
    ids = sorted({i for i in automat_ids if i})
    if not ids:
        return {}
    return dict(session.execute(select(a.c.id, a.c.name).where(a.c.id.in_(ids))).all())


# === the organization (docs/console.md, "Organization") ====================================


@dataclass(frozen=True, slots=True)
class UnitNode:
    id: str
    name: str
    customer_id: str | None
    type: int
    depth: int  # below the caller's own unit
    iloq: bool  # an iLOQ system is configured on the unit itself


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: str
    name: str
    role: str
    unit_name: str
    fingerprint: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    email: str
    role: str
    unit_name: str
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class Organization:
    units: list[UnitNode]
    accounts: list[AccountRow]
    users: list[UserRow]


ORGANIZATION_ROWS = 500


def organization(session: Session, principal: Principal) -> Organization:
    """The caller's subtree (depth first, by path), its service accounts and console users
    (at most 500 of each)."""
    principal.require_admin()
    ou, sa, cu = orm.organization_units, orm.service_accounts, console_users
    base = principal.organization_unit_path.count("/")
    units = [
        UnitNode(
            r.id,
            r.name,
            r.customer_id,
            r.type,
            r.path.count("/") - base,
            r.iloq_username is not None,
        )
        for r in session.execute(
            select(ou.c.id, ou.c.name, ou.c.customer_id, ou.c.type, ou.c.path, ou.c.iloq_username)
            .where(in_scope(ou.c.id, principal))
            .order_by(ou.c.path)
            .limit(ORGANIZATION_ROWS)
        )
    ]
    accounts = [
        AccountRow(r.id, r.name, r.role, r.unit, r.fingerprint, r.created_at)
        for r in session.execute(
            select(
                sa.c.id,
                sa.c.name,
                sa.c.role,
                ou.c.name.label("unit"),
                sa.c.fingerprint,
                sa.c.created_at,
            )
            .join(ou, ou.c.id == sa.c.organization_unit_id)
            .where(in_scope(sa.c.organization_unit_id, principal))
            .order_by(ou.c.path, sa.c.created_at, sa.c.id)
            .limit(ORGANIZATION_ROWS)
        )
    ]
    users = [
        UserRow(r.id, r.email, r.role, r.unit, r.last_login_at)
        for r in session.execute(
            select(cu.c.id, cu.c.email, cu.c.role, ou.c.name.label("unit"), cu.c.last_login_at)
            .join(ou, ou.c.id == cu.c.organization_unit_id)
            .where(in_scope(cu.c.organization_unit_id, principal))
            .order_by(ou.c.path, cu.c.email_key)
            .limit(ORGANIZATION_ROWS)
        )
    ]
    return Organization(units, accounts, users)


# === notifications (docs/console.md, "Notifications") ======================================


def contract_pages(
    session: Session, contract_ids: Iterable[str | None]
) -> dict[str, tuple[str, str]]:
    """(kind, public id) of contracts named by rows already read in scope (messages), by
    internal id: what a link to a contract's page needs."""
    ids = sorted({i for i in contract_ids if i})
    if not ids:
        return {}
    return {c.id: (c.kind, c.public_id) for c in SqlContractStore(session).load_many(ids)}
