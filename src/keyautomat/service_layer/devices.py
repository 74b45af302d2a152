"""Use cases of the device link: binding, applying device events once, syncing
pincodes, alarms and online status (docs/device-protocol.md, gaps.md D1-D3, D6-D8).

Every function takes a ``Session`` and flushes; the gateway runs each in one
transaction, and acknowledges a device event only after that transaction has
committed, so an event is never lost and, with the inbox's unique constraint,
never applied twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import ColumnElement, Row, and_, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.db import PlainQuery, Statements, mark_changed
from keyautomat.adapters.device_protocol import (
    AlarmEvent,
    CodeEntered,
    Data,
    Hello,
    KeyEvent,
    KeypadLocked,
    KeyProgrammed,
    LockerEvent,
    LockerInventory,
    Message,
    PincodeEntry,
    RejectReason,
    Sync,
)
from keyautomat.adapters.orm_devices import (
    automat_events,
    device_alarms,
    device_inbox,
    device_links,
    device_pincodes,
)
from keyautomat.contracts.rules import check_pincode
from keyautomat.domain.devices import (
    AutomatEvent,
    AutomatEventType,
    PincodePurpose,
    clock_suspect,
    inventory_problem,
    keyed_hash,
    keyed_hash_matches,
    new_device_token,
    secret_hash,
    secret_matches,
)
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.ids import new_object_id
from keyautomat.domain.model import LifecycleState
from keyautomat.service_layer import lockers
from keyautomat.service_layer.automats import bind_hardware, find_automat, get_automat
from keyautomat.service_layer.principal import Principal
from keyautomat.service_layer.wiring import wiring_of

log = logging.getLogger(__name__)

# Features follow device events and locker inventories through the handlers they
# registered on the container (service_layer/wiring.py), each inside the
# transaction that applies the event, so what it writes commits with it.

DISCONNECTED_ALARM = "DEVICE_DISCONNECTED"
# The server's own security alarms (docs/webhooks.md, "Alarm types"): each is raised
# and ended at once, so every occurrence is one alarm and one pair of deliveries.
BOUND_ALARM = "DEVICE_BOUND"  # hardware received a device token
BIND_FAILURES_ALARM = "DEVICE_BIND_FAILURES"  # wrong installation pincodes on its topic
KEYPAD_LOCKED_ALARM = "DEVICE_KEYPAD_LOCKED"  # the keypad locked after wrong codes
# A lasting state rather: the automat's locker report was refused, so what the server
# shows of its lockers may be stale. Ends when a locker-inventory is accepted.
BAD_INVENTORY_ALARM = "DEVICE_BAD_INVENTORY"

# The one answer to every hello whose pincode does not bind (reason
# ``wrong-installation-code``, with this text): a wrong code, the wrong product, an
# expired code, hardware bound elsewhere, a closed re-bind all look alike, so that
# no answer confirms a code or names an automat.
INSTALLATION_REFUSED = "installation pincode not accepted"

# Statements run with every contract's pincode (and every device event) are
# built once, with bind parameters: building them per call cost several times
# what executing them does. Those whose SQL differs by dialect (ON CONFLICT)
# are built on first use, once per dialect and table.
_insert_ignoring: dict[tuple[str, str], Any] = {}
_NEW_LINK = {"connected": False, "desired_version": 0, "synced_version": 0}


def _bump_version_stmt(dialect: Any) -> Any:
    """The automat's sync link, made at version 1 or moved one version on: one statement
    (an upsert), where a plain insert-if-missing and an update took two round trips."""
    upsert = dialect.insert(device_links).values(
        automat_id=bindparam("automat_id"),
        connected=False,
        desired_version=1,
        synced_version=0,
    )
    return upsert.on_conflict_do_update(
        index_elements=[device_links.c.automat_id],
        set_={"desired_version": device_links.c.desired_version + 1},
    ).returning(device_links.c.desired_version)


# Run with every contract's creation: on the driver's cursor (adapters/db.py, PlainQuery).
_BUMP_VERSION = {
    "postgresql": PlainQuery(_bump_version_stmt(postgresql)),
    "sqlite": PlainQuery(_bump_version_stmt(sqlite)),
}
_PINCODE_CLASHES = PlainQuery(
    select(device_pincodes.c.valid_from, device_pincodes.c.valid_until).where(
        device_pincodes.c.automat_id == bindparam("automat_id"),
        device_pincodes.c.code == bindparam("code"),
        device_pincodes.c.removed.is_(False),
    )
)
_INSERT_PINCODE = PlainQuery(insert(device_pincodes))
_REMOVE_PINCODE = (
    update(device_pincodes)
    .where(
        device_pincodes.c.id == bindparam("b_id"),
        device_pincodes.c.automat_id == bindparam("b_automat_id"),
    )
    .values(removed=True, version=bindparam("b_version", type_=device_pincodes.c.version.type))
)


def _on_conflict_do_nothing(session: Session, table: Any, *, returning: bool) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` into ``table`` for the session's dialect."""
    dialect = session.get_bind().dialect.name
    cache_key = (dialect, table.name if returning else f"{table.name}:plain")
    stmt = _insert_ignoring.get(cache_key)
    if stmt is None:
        if dialect == "postgresql":
            stmt = postgresql.insert(table).on_conflict_do_nothing()
        else:
            stmt = sqlite.insert(table).on_conflict_do_nothing()
        if returning:
            stmt = stmt.returning(next(iter(table.primary_key.columns)))
        _insert_ignoring[cache_key] = stmt
    return stmt


class DeviceRejected(Exception):
    """A device message the server refuses; it changes nothing. The device is told the
    ``reason`` (one of the protocol's set) and, for a human, the ``detail``."""

    def __init__(self, reason: RejectReason, detail: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


class EventRefused(DeviceRejected):
    """An event of an authenticated device that breaks a rule of the protocol (a locker it
    does not have, an inventory that is not exactly its lockers): refused with ``reason``,
    nothing of it applied, not recorded in the inbox. ``alarm``, when set, is raised in a
    transaction of its own (:func:`record_refusal`), since the event's own rolls back."""

    def __init__(
        self, reason: RejectReason, *, automat_id: str, detail: str, alarm: str | None = None
    ) -> None:
        super().__init__(reason, detail)
        self.automat_id = automat_id
        self.alarm = alarm


# --- binding ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcomed:
    automat_id: str
    token: str | None  # a fresh credential, sent to the device once
    sync: Sync


@dataclass(frozen=True, slots=True)
class BindPolicy:
    """How installation pincodes bind hardware (docs/device-protocol.md, "Binding")."""

    code_key: bytes  # keys the stored hash of a bound code (derived from the secret key)
    code_ttl: timedelta  # an installation pincode binds this long after it was issued
    rebind_window: timedelta  # a lost welcome may be recovered this long after binding


def _ensure_link(session: Session, automat_id: str) -> None:
    stmt = _on_conflict_do_nothing(session, device_links, returning=False)
    session.execute(stmt, {"automat_id": automat_id, **_NEW_LINK})


def hello(
    session: Session,
    *,
    hw_id: str,
    token: str | None,
    data: Hello,
    now: datetime,
    policy: BindPolicy,
) -> Welcomed:
    """A device (re)connects: authenticate it by its credential, or bind it by the
    installation pincode (gaps.md D1-D2). Answers with a full sync."""
    if token is not None:
        credential = _authenticated(session, hw_id, token)
        if not isinstance(credential, RejectReason):
            _connected(session, credential, now, data)
            return Welcomed(credential, None, sync_at_hello(session, credential, data, now))
        if data.installation_pincode is None:
            raise _unauthenticated(credential)
    if data.installation_pincode is None:
        raise DeviceRejected(RejectReason.UNAUTHENTICATED, "unknown device: bind it with a code")
    return _bind(session, hw_id, data, now, policy)


def _refuse(hw_id: str, why: str) -> NoReturn:
    # The reason goes to the log for the operator, never to the device.
    log.warning("refused the installation pincode of %s: %s", hw_id, why)
    raise DeviceRejected(RejectReason.WRONG_INSTALLATION_CODE, INSTALLATION_REFUSED)


def _bind(session: Session, hw_id: str, data: Hello, now: datetime, policy: BindPolicy) -> Welcomed:
    code = data.installation_pincode
    assert code is not None
    automat = find_automat(
        session,
        orm.automats.c.installation_pincode == code,
        orm.automats.c.lifecycle_state == LifecycleState.WAITING_FOR_INSTALL,
    )
    if automat is None:
        return _rebind_after_lost_welcome(session, hw_id, code, data, now, policy)
    issued_at = automat.installation_pincode_issued_at
    if issued_at is None or now - issued_at >= policy.code_ttl:
        _refuse(hw_id, f"the pincode of automat {automat.id} has expired; replace issues a new one")
    if automat.product != data.product:
        _refuse(hw_id, f"automat {automat.id} is a {automat.product}, not a {data.product}")
    holder = session.scalar(select(orm.automats.c.id).where(orm.automats.c.hw_id == hw_id))
    if holder is not None:
        _refuse(hw_id, f"the hardware is bound to automat {holder}; replace it there")
    if not bind_hardware(session, automat, hw_id, code):
        _refuse(hw_id, "wrong installation pincode, or another device bound with it first")
    token = new_device_token()
    _ensure_link(session, automat.id)
    session.execute(
        update(device_links)
        .where(device_links.c.automat_id == automat.id)
        .values(
            hw_id=hw_id,
            token_hash=secret_hash(token),
            # Kept only for a lost welcome: forgotten at the device's first message
            # with its token, and useless after the re-bind window anyway.
            bind_pincode_hash=keyed_hash(policy.code_key, code),
            bound_at=now,
            # New hardware holds nothing yet: everything must be synced again.
            synced_version=0,
        )
    )
    _connected(session, automat.id, now, data)
    _momentary_alarm(session, automat.id, BOUND_ALARM, now)
    log.warning("hardware %s bound to automat %s", hw_id, automat.id)
    return Welcomed(automat.id, token, full_sync(session, automat.id, now))


def _rebind_after_lost_welcome(
    session: Session, hw_id: str, code: str, data: Hello, now: datetime, policy: BindPolicy
) -> Welcomed:
    # The device bound but never received its welcome (the link dropped): it
    # presents the same pincode again. Only the same hardware with the same code,
    # before it ever spoke with its token and within the re-bind window, gets a
    # new credential; anyone else is refused.
    row = session.execute(
        select(device_links.c.automat_id, device_links.c.bind_pincode_hash, device_links.c.bound_at)
        .join(orm.automats, orm.automats.c.id == device_links.c.automat_id)
        .where(
            orm.automats.c.hw_id == hw_id,
            device_links.c.hw_id == hw_id,
            orm.automats.c.lifecycle_state == LifecycleState.ACTIVE,
        )
    ).first()
    if row is None:
        _refuse(hw_id, "no automat waits for this pincode")
    if row.bind_pincode_hash is None:
        _refuse(
            hw_id, f"automat {row.automat_id} is bound and its device has spoken with its token"
        )
    if row.bound_at is None or now - row.bound_at > policy.rebind_window:
        _refuse(hw_id, f"the re-bind window of automat {row.automat_id} has closed")
    if not keyed_hash_matches(policy.code_key, code, row.bind_pincode_hash):
        _refuse(hw_id, f"wrong pincode to re-bind automat {row.automat_id}")
    token = new_device_token()
    session.execute(
        update(device_links)
        .where(device_links.c.automat_id == row.automat_id)
        .values(token_hash=secret_hash(token))
    )
    _connected(session, row.automat_id, now, data)
    _momentary_alarm(session, row.automat_id, BOUND_ALARM, now)
    log.warning("hardware %s bound again to automat %s (lost welcome)", hw_id, row.automat_id)
    return Welcomed(row.automat_id, token, full_sync(session, row.automat_id, now))


def bind_failures_alarm(session: Session, hw_id: str, now: datetime) -> str | None:
    """Wrong installation pincodes keep arriving on ``hw_id``'s topic: alarm the automat
    bound to that hardware, if any. Returns its id."""
    automat_id = session.scalar(select(orm.automats.c.id).where(orm.automats.c.hw_id == hw_id))
    if automat_id is None:
        return None
    _momentary_alarm(session, automat_id, BIND_FAILURES_ALARM, now)
    return str(automat_id)


def _connected(session: Session, automat_id: str, now: datetime, data: Hello) -> None:
    session.execute(
        update(device_links)
        .where(device_links.c.automat_id == automat_id)
        .values(firmware=data.firmware, locker_count=data.locker_count)
    )
    touch(session, automat_id, now)


def _authenticated(session: Session, hw_id: str, token: str | None) -> str | RejectReason:
    """The automat the credential speaks for; else why not: ``replaced`` or ``deactivated``
    only for the credential the hardware really holds, ``unauthenticated`` for anything
    else, so that nobody without the token learns anything from the answer."""
    if token is None:
        return RejectReason.UNAUTHENTICATED
    row = session.execute(
        select(
            device_links.c.automat_id,
            device_links.c.token_hash,
            device_links.c.bind_pincode_hash,
            orm.automats.c.lifecycle_state,
        )
        .join(orm.automats, orm.automats.c.id == device_links.c.automat_id)
        .where(device_links.c.hw_id == hw_id, orm.automats.c.hw_id == hw_id)
    ).first()
    if row is None or not secret_matches(token, row.token_hash):
        return _former_link(session, hw_id, token)
    if row.lifecycle_state != LifecycleState.ACTIVE:
        return RejectReason.DEACTIVATED
    if row.bind_pincode_hash is not None:
        # The device holds its token: the installation pincode has done its job and
        # must never bind again (docs/device-protocol.md, "Binding and re-binding").
        session.execute(
            update(device_links)
            .where(device_links.c.automat_id == row.automat_id)
            .values(bind_pincode_hash=None)
        )
    return str(row.automat_id)


def _former_link(session: Session, hw_id: str, token: str) -> RejectReason:
    """Why a credential that no automat bound to ``hw_id`` accepts fails: ``replaced`` when
    it is that of an automat whose hardware was replaced (its link still names this
    hardware until new hardware binds), else ``unauthenticated``.

    Only reached by a failed credential: device_links has no index on hw_id, and the
    scan is cheap next to the traffic of devices that authenticate."""
    rows = session.execute(
        select(device_links.c.token_hash, orm.automats.c.lifecycle_state)
        .join(orm.automats, orm.automats.c.id == device_links.c.automat_id)
        .where(device_links.c.hw_id == hw_id)
    ).all()
    for row in rows:
        if secret_matches(token, row.token_hash):
            if row.lifecycle_state == LifecycleState.DEACTIVATED:
                return RejectReason.DEACTIVATED
            return RejectReason.REPLACED
    return RejectReason.UNAUTHENTICATED


_UNAUTHENTICATED_DETAIL = {
    RejectReason.UNAUTHENTICATED: "unknown device or wrong token",
    RejectReason.REPLACED: "the automat has new hardware: bind again with a new code",
    RejectReason.DEACTIVATED: "the automat was uninstalled",
}


def _unauthenticated(reason: RejectReason) -> DeviceRejected:
    return DeviceRejected(reason, _UNAUTHENTICATED_DETAIL[reason])


def authenticate(session: Session, hw_id: str, token: str | None) -> str:
    """The automat a bound device speaks for. Refused: ``replaced`` (its automat has other
    hardware now, or waits for it), ``deactivated`` (its automat was uninstalled), and
    ``unauthenticated`` for an unknown or unbound device and a wrong credential."""
    credential = _authenticated(session, hw_id, token)
    if isinstance(credential, RejectReason):
        raise _unauthenticated(credential)
    return credential


# --- presence ---------------------------------------------------------------------------


def touch(session: Session, automat_id: str, now: datetime) -> str:
    """The device was heard from: it is online, and a disconnection alarm ends."""
    session.execute(
        update(orm.automats).where(orm.automats.c.id == automat_id).values(last_seen_at=now)
    )
    result = session.execute(
        update(device_links)
        .where(device_links.c.automat_id == automat_id, device_links.c.connected.is_(False))
        .values(connected=True)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        _clear_alarm(session, automat_id, DISCONNECTED_ALARM, now, now, source_message_id=None)
    return automat_id


def disconnected(session: Session, automat_id: str) -> None:
    """The device said goodbye: offline, but no alarm (it left on purpose)."""
    session.execute(
        update(device_links).where(device_links.c.automat_id == automat_id).values(connected=False)
    )


def mark_silent_devices_offline(session: Session, now: datetime, offline_after: float) -> list[str]:
    """Devices not heard from for ``offline_after`` seconds go offline with an alarm."""
    cutoff = now - timedelta(seconds=offline_after)
    rows = session.execute(
        select(device_links.c.automat_id, orm.automats.c.last_seen_at)
        .join(orm.automats, orm.automats.c.id == device_links.c.automat_id)
        .where(
            device_links.c.connected.is_(True),
            (orm.automats.c.last_seen_at < cutoff) | orm.automats.c.last_seen_at.is_(None),
        )
    ).all()
    for row in rows:
        session.execute(
            update(device_links)
            .where(device_links.c.automat_id == row.automat_id)
            .values(connected=False)
        )
        _raise_alarm(
            session, row.automat_id, DISCONNECTED_ALARM, row.last_seen_at or now, now, None
        )
    return [str(r.automat_id) for r in rows]


def is_online(
    link: Row[Any] | None, last_seen_at: datetime | None, now: datetime, offline_after: float
) -> bool:
    if link is None or not link.connected or last_seen_at is None:
        return False
    return now - last_seen_at < timedelta(seconds=offline_after)


def online_condition(now: datetime, offline_after: float) -> ColumnElement[bool]:
    """:func:`is_online` as SQL over ``automats`` joined with ``device_links``: the same
    rule for many automats at once (the console's lists and counts)."""
    a = orm.automats
    return and_(
        device_links.c.connected.is_(True),
        device_links.c.hw_id == a.c.hw_id,
        a.c.last_seen_at > now - timedelta(seconds=offline_after),
    )


# --- events -----------------------------------------------------------------------------


def insert_ignoring_duplicates(session: Session, table: Any, values: dict[str, Any]) -> bool:
    """Insert unless the unique key exists already; True when a row was written."""
    # RETURNING rather than rowcount: psycopg reports a rowcount of 1 for an
    # INSERT ... ON CONFLICT DO NOTHING that SQLAlchemy rendered with RETURNING.
    stmt = _on_conflict_do_nothing(session, table, returning=True)
    return session.execute(stmt, values).first() is not None


def apply_event(
    session: Session, automat_id: str, message: Message, now: datetime, *, clock_skew: timedelta
) -> bool:
    """Apply one device event exactly once; False when it was applied before (a resend).

    Raises :class:`EventRefused`, having written nothing, for an event naming a locker the
    automat does not have or an inventory that is not exactly its lockers. An event whose
    time is more than ``clock_skew`` ahead of ``now`` (its receipt) is stored as reported,
    flagged, and its effects take ``now`` (docs/device-protocol.md, "Lockers", "Clock")."""
    data = message.data
    _check_lockers(session, automat_id, data)
    fresh = insert_ignoring_duplicates(
        session,
        device_inbox,
        {
            "automat_id": automat_id,
            "message_id": message.id,
            "type": message.type,
            "occurred_at": message.occurred_at,
            "received_at": now,
        },
    )
    touch(session, automat_id, now)
    if not fresh:
        return False
    at = message.occurred_at
    suspect = clock_suspect(at, now, clock_skew)
    if suspect:
        log.warning(
            "%s %s of automat %s claims %s, received %s: clock suspect, effects at receipt",
            message.type,
            message.id,
            automat_id,
            at.isoformat(),
            now.isoformat(),
        )
    if isinstance(data, LockerInventory):
        _apply_inventory(session, automat_id, data, now)
        _clear_alarm(session, automat_id, BAD_INVENTORY_ALARM, at, now, message.id, suspect)
    elif isinstance(data, CodeEntered):
        record_event(
            session,
            automat_id,
            AutomatEventType.CODE_ENTERED,
            at,
            now,
            locker_index=data.locker_index,
            key_id=data.key_id,
            code=data.code,
            source_message_id=message.id,
            data=data.model_dump(mode="json", by_alias=True),
            clock_suspect=suspect,
        )
    elif isinstance(data, KeyEvent):
        inside = message.type == "key-inserted"
        lockers.report_key(
            session,
            automat_id,
            data.locker_index,
            inside=inside,
            key_id=data.key_id,
            key_name=data.key_name,
            rfid=data.rfid,
        )
        record_event(
            session,
            automat_id,
            AutomatEventType.KEY_INSERTED if inside else AutomatEventType.KEY_REMOVED,
            at,
            now,
            locker_index=data.locker_index,
            key_id=data.key_id,
            source_message_id=message.id,
            data=data.model_dump(mode="json", by_alias=True),
            clock_suspect=suspect,
        )
    elif isinstance(data, AlarmEvent):
        if message.type == "alarm-raised":
            _raise_alarm(session, automat_id, data.alarm_type, at, now, message.id, suspect)
        else:
            _clear_alarm(session, automat_id, data.alarm_type, at, now, message.id, suspect)
    elif isinstance(data, KeypadLocked):
        # Someone is guessing pincodes at the keypad: make it visible.
        _momentary_alarm(session, automat_id, KEYPAD_LOCKED_ALARM, at, now, message.id, suspect)
    return True


def _locker_named(data: Data) -> int | None:
    """The locker an event is about, if it names one."""
    if isinstance(data, LockerEvent | KeyEvent | KeyProgrammed | CodeEntered):
        return data.locker_index
    return None


def _check_lockers(session: Session, automat_id: str, data: Data) -> None:
    """Refuse an event about a locker the automat does not have, and an inventory that is
    not exactly its lockers: the lockers are ``0 … lockerCount-1``, ``lockerCount`` as the
    device said in its latest hello (docs/device-protocol.md, "Lockers")."""
    inventory = isinstance(data, LockerInventory)
    index = None if inventory else _locker_named(data)
    if not inventory and index is None:
        return
    count = session.scalar(
        select(device_links.c.locker_count).where(device_links.c.automat_id == automat_id)
    )
    if count is None:
        return  # never said hello with its count: nothing to check against
    if isinstance(data, LockerInventory):
        problem = inventory_problem([locker.locker_index for locker in data.lockers], count)
        if problem is not None:
            raise EventRefused(
                RejectReason.BAD_INVENTORY,
                automat_id=automat_id,
                detail=problem,
                alarm=BAD_INVENTORY_ALARM,
            )
    elif index is not None and index >= count:
        raise EventRefused(
            RejectReason.UNKNOWN_LOCKER,
            automat_id=automat_id,
            detail=f"locker {index} of lockerCount {count}",
        )


def record_refusal(session: Session, refused: EventRefused, now: datetime) -> None:
    """What the operator must see of a refused event, in a transaction of its own (the
    event's own was rolled back): its alarm, if it has one."""
    if refused.alarm is not None:
        _raise_alarm(session, refused.automat_id, refused.alarm, now, now, None)


def record_event(
    session: Session,
    automat_id: str,
    type_: str,
    occurred_at: datetime,
    now: datetime,
    *,
    locker_index: int | None = None,
    key_id: str | None = None,
    code: str | None = None,
    source_message_id: str | None = None,
    data: dict[str, Any] | None = None,
    clock_suspect: bool = False,
) -> AutomatEvent:
    """Store a domain event and pass it to the features' handlers. With ``clock_suspect``
    the device's ``occurred_at`` is stored as reported and flagged, and the handlers see
    ``now``, the time the server received it (docs/device-protocol.md, "Clock")."""
    payload = data or {}
    event_id = session.execute(
        insert(automat_events)
        .values(
            automat_id=automat_id,
            type=str(type_),
            occurred_at=occurred_at,
            recorded_at=now,
            clock_suspect=clock_suspect,
            locker_index=locker_index,
            key_id=key_id,
            code=code,
            source_message_id=source_message_id,
            data=json.dumps(payload, separators=(",", ":")),
        )
        .returning(automat_events.c.id)
    ).scalar_one()
    event = AutomatEvent(
        id=int(event_id),
        automat_id=automat_id,
        type=str(type_),
        occurred_at=now if clock_suspect else occurred_at,
        locker_index=locker_index,
        key_id=key_id,
        code=code,
        data=payload,
        recorded_at=now,
    )
    for handler in wiring_of(session).device_event_handlers:
        handler(session, event)
    return event


def _apply_inventory(
    session: Session, automat_id: str, data: LockerInventory, now: datetime
) -> None:
    lockers.report_inventory(
        session, automat_id, data.lockers, lockers_in_use(session, automat_id, now)
    )
    for handler in wiring_of(session).inventory_handlers:
        handler(session, automat_id, data)


_LIVE_PINCODE_LOCKERS = (
    select(device_pincodes.c.locker_index)
    .where(
        device_pincodes.c.automat_id == bindparam("automat_id"),
        device_pincodes.c.removed.is_(False),
        device_pincodes.c.valid_until.is_(None)
        | (
            device_pincodes.c.valid_until
            > bindparam("now", type_=device_pincodes.c.valid_until.type)
        ),
    )
    .distinct()
)


def lockers_in_use(session: Session, automat_id: str, now: datetime) -> set[int]:
    """The automat's lockers something still needs, now or later: a pincode the automat
    must honour, or what a feature holds (a contract's reservation, ``Wiring.locker_holds``).
    No device report deletes them or unassigns their key."""
    held = set(session.scalars(_LIVE_PINCODE_LOCKERS, {"automat_id": automat_id, "now": now}))
    for holds in wiring_of(session).locker_holds:
        held.update(holds(session, automat_id, now))
    return held


# --- alarms -----------------------------------------------------------------------------


def _open_alarm(session: Session, automat_id: str, alarm_type: str) -> Row[Any] | None:
    return session.execute(
        select(device_alarms).where(
            device_alarms.c.automat_id == automat_id,
            device_alarms.c.alarm_type == alarm_type,
            device_alarms.c.ended_at.is_(None),
        )
    ).first()


def _alarm_data(row: Row[Any] | dict[str, Any], state: str) -> dict[str, Any]:
    values = dict(row._mapping) if isinstance(row, Row) else row
    return {
        "alarmId": values["id"],
        "alarmType": values["alarm_type"],
        "state": state,
        "deviceId": values["automat_id"],
        "start": values["started_at"].isoformat(),
        "end": values["ended_at"].isoformat() if values.get("ended_at") else None,
        "acknowledged": values.get("acknowledged_at") is not None,
    }


def _raise_alarm(
    session: Session,
    automat_id: str,
    alarm_type: str,
    at: datetime,
    now: datetime,
    source_message_id: str | None,
    clock_suspect: bool = False,
) -> None:
    """Open an alarm from ``at`` (``now`` when ``at`` is a device time too far ahead)."""
    if _open_alarm(session, automat_id, alarm_type) is not None:
        return  # already active: raising it again changes nothing
    values = {
        "id": new_object_id(now.timestamp()),
        "automat_id": automat_id,
        "alarm_type": alarm_type,
        "started_at": now if clock_suspect else at,
        "ended_at": None,
        "acknowledged_at": None,
    }
    session.execute(insert(device_alarms).values(values))
    record_event(
        session,
        automat_id,
        AutomatEventType.DEVICE_ALARM,
        at,
        now,
        source_message_id=source_message_id,
        data=_alarm_data(values, "activated"),
        clock_suspect=clock_suspect,
    )


def _momentary_alarm(
    session: Session,
    automat_id: str,
    alarm_type: str,
    at: datetime,
    now: datetime | None = None,
    source_message_id: str | None = None,
    clock_suspect: bool = False,
) -> None:
    """An alarm about something that happened rather than a lasting state: raised and
    ended at ``at``, so each occurrence is its own alarm (to acknowledge) and webhook."""
    now = now or at
    _raise_alarm(session, automat_id, alarm_type, at, now, source_message_id, clock_suspect)
    _clear_alarm(session, automat_id, alarm_type, at, now, source_message_id, clock_suspect)


def raise_alarm(
    session: Session, automat_id: str, alarm_type: str, at: datetime, now: datetime
) -> None:
    """Raise an alarm on the server's own account (e.g. repeated programming failures)."""
    _raise_alarm(session, automat_id, alarm_type, at, now, None)


def _clear_alarm(
    session: Session,
    automat_id: str,
    alarm_type: str,
    at: datetime,
    now: datetime,
    source_message_id: str | None,
    clock_suspect: bool = False,
) -> None:
    """End the open alarm at ``at``, or at ``now`` when ``at`` is a device time too far
    ahead; never before it started (a device clock set back meanwhile): then at the
    receive time, so that no alarm ends before it starts."""
    row = _open_alarm(session, automat_id, alarm_type)
    if row is None:
        return
    end = now if clock_suspect else at
    if end < row.started_at:
        end, clock_suspect = max(now, row.started_at), True
    session.execute(update(device_alarms).where(device_alarms.c.id == row.id).values(ended_at=end))
    values = {**row._mapping, "ended_at": end}
    record_event(
        session,
        automat_id,
        AutomatEventType.DEVICE_ALARM,
        at,
        now,
        source_message_id=source_message_id,
        data=_alarm_data(values, "deactivated"),
        clock_suspect=clock_suspect,
    )


@dataclass(frozen=True, slots=True)
class AlarmView:
    id: str
    alarm_type: str
    started_at: datetime
    ended_at: datetime | None
    acknowledged_at: datetime | None


def list_alarms(
    session: Session, principal: Principal, automat_id: str, limit: int | None = None
) -> list[AlarmView]:
    """The automat's alarms, latest first; the ``limit`` latest when given."""
    get_automat(session, principal, automat_id)
    rows = session.execute(
        select(device_alarms)
        .where(device_alarms.c.automat_id == automat_id)
        .order_by(device_alarms.c.started_at.desc(), device_alarms.c.id)
        .limit(limit)
    ).all()
    return [
        AlarmView(r.id, r.alarm_type, r.started_at, r.ended_at, r.acknowledged_at) for r in rows
    ]


def acknowledge_alarm(
    session: Session, principal: Principal, automat_id: str, alarm_id: str, now: datetime
) -> AlarmView:
    principal.require_operator()
    get_automat(session, principal, automat_id)
    row = session.execute(
        select(device_alarms).where(
            device_alarms.c.id == alarm_id, device_alarms.c.automat_id == automat_id
        )
    ).first()
    if row is None:
        raise NotFound("Alarm")
    if row.acknowledged_at is None:
        session.execute(
            update(device_alarms)
            .where(device_alarms.c.id == alarm_id)
            .values(acknowledged_at=now, acknowledged_by=principal.service_account_id)
        )
        values = {**row._mapping, "acknowledged_at": now}
        state = "activated" if row.ended_at is None else "deactivated"
        record_event(
            session,
            automat_id,
            AutomatEventType.DEVICE_ALARM,
            now,
            now,
            data=_alarm_data(values, state),
        )
        row = session.execute(select(device_alarms).where(device_alarms.c.id == alarm_id)).one()
    return AlarmView(row.id, row.alarm_type, row.started_at, row.ended_at, row.acknowledged_at)


# --- status -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    automat_id: str
    hw_id: str | None
    lifecycle_state: str
    online: bool
    last_seen_at: datetime | None
    firmware: str | None
    locker_count: int | None
    desired_version: int
    synced_version: int


def device_status(
    session: Session, principal: Principal, automat_id: str, now: datetime, offline_after: float
) -> DeviceStatus:
    automat = get_automat(session, principal, automat_id)
    link = session.execute(
        select(device_links).where(device_links.c.automat_id == automat_id)
    ).first()
    bound = link is not None and link.hw_id == automat.hw_id and automat.hw_id is not None
    return DeviceStatus(
        automat_id=automat.id,
        hw_id=automat.hw_id,
        lifecycle_state=automat.lifecycle_state,
        online=bound and is_online(link, automat.last_seen_at, now, offline_after),
        last_seen_at=automat.last_seen_at,
        firmware=link.firmware if link is not None else None,
        locker_count=link.locker_count if link is not None else None,
        desired_version=int(link.desired_version) if link is not None else 0,
        synced_version=int(link.synced_version) if link is not None else 0,
    )


@dataclass(frozen=True, slots=True)
class CommandTarget:
    automat_id: str
    hw_id: str | None
    online: bool
    # What the automat must honour now, and what it has acknowledged: a code sent to
    # it must be in a version it has (sendPincode waits for the sync first).
    desired_version: int = 0
    synced_version: int = 0


def command_target(
    session: Session, principal: Principal, automat_id: str, now: datetime, offline_after: float
) -> CommandTarget:
    """Where a command for the automat goes: 404 out of scope, 400 unless active (D6)."""
    automat = get_automat(session, principal, automat_id)
    if not automat.is_active:
        raise InvalidInput(
            "id", f"automat is not active (lifecycleState {automat.lifecycle_state})"
        )
    return _target(session, automat.id, automat.hw_id, automat.last_seen_at, now, offline_after)


def command_target_of(
    session: Session, automat_id: str, now: datetime, offline_after: float
) -> CommandTarget:
    """The target of a command an API process already allowed (routed to this gateway);
    an automat that stopped being active meanwhile counts as offline."""
    automat = session.execute(
        select(orm.automats.c.hw_id, orm.automats.c.last_seen_at).where(
            orm.automats.c.id == automat_id,
            orm.automats.c.lifecycle_state == LifecycleState.ACTIVE,
        )
    ).first()
    if automat is None:
        return CommandTarget(automat_id, None, False)
    return _target(session, automat_id, automat.hw_id, automat.last_seen_at, now, offline_after)


def _target(
    session: Session,
    automat_id: str,
    hw_id: str | None,
    last_seen_at: datetime | None,
    now: datetime,
    offline_after: float,
) -> CommandTarget:
    link = session.execute(
        select(device_links).where(device_links.c.automat_id == automat_id)
    ).first()
    online = (
        link is not None
        and link.hw_id == hw_id
        and is_online(link, last_seen_at, now, offline_after)
    )
    if link is None:
        return CommandTarget(automat_id, hw_id, online)
    return CommandTarget(
        automat_id, hw_id, online, int(link.desired_version), int(link.synced_version)
    )


# --- pincode store and sync -------------------------------------------------------------


def _bump_version(session: Session, automat_id: str) -> int:
    """A new version of what the automat must honour; pushed to it right after the commit."""
    plain = Statements.of(session)
    version = plain.scalar(_BUMP_VERSION[plain.dialect_name], automat_id=automat_id)
    mark_changed(session, automat_id)
    return int(version)


def add_pincode(
    session: Session,
    automat_id: str,
    *,
    code: str,
    locker_index: int,
    valid_from: datetime,
    valid_until: datetime | None,
    purpose: PincodePurpose | str,
    key_id: str | None = None,
    reference: str | None = None,
    program_first: bool = False,
    checked: bool = False,
) -> str:
    """Make the automat honour ``code`` for ``locker_index`` inside the window.

    The gateway pushes the change to the device (the sync outbox); the contract
    feature calls this in the transaction that creates the contract. ``checked``:
    the caller has just asked for a clash over this window in this transaction
    (contracts.service.code_taken), so the clash is not looked up again.
    """
    reason = check_pincode(code)
    if reason is not None:
        raise InvalidInput("pincode", reason)
    if valid_until is not None and valid_until <= valid_from:
        raise InvalidInput("end", "must be after start")
    purpose = PincodePurpose(purpose)
    plain = Statements.of(session)
    clashes = () if checked else plain.rows(_PINCODE_CLASHES, automat_id=automat_id, code=code)
    for other_from, other_until in clashes:
        if (valid_until is None or other_from < valid_until) and (
            other_until is None or valid_from < other_until
        ):
            raise InvalidInput("pincode", "Pincode already in use")
    version = _bump_version(session, automat_id)
    pincode_id = new_object_id()
    plain.execute(
        _INSERT_PINCODE,
        id=pincode_id,
        automat_id=automat_id,
        code=code,
        locker_index=locker_index,
        valid_from=valid_from,
        valid_until=valid_until,
        purpose=str(purpose),
        key_id=key_id,
        reference=reference,
        version=version,
        removed=False,
        program_first=program_first,
    )
    return pincode_id


def remove_pincode(session: Session, automat_id: str, pincode_id: str) -> None:
    version = _bump_version(session, automat_id)
    session.execute(
        _REMOVE_PINCODE, {"b_id": pincode_id, "b_automat_id": automat_id, "b_version": version}
    )


def _entry(row: Row[Any]) -> PincodeEntry:
    return PincodeEntry(
        id=row.id,
        code=row.code,
        locker_index=row.locker_index,
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        purpose=row.purpose,
        key_id=row.key_id,
        program_first=bool(row.program_first),
    )


def full_sync(session: Session, automat_id: str, now: datetime) -> Sync:
    version = session.scalar(
        select(device_links.c.desired_version).where(device_links.c.automat_id == automat_id)
    )
    rows = session.execute(
        select(device_pincodes).where(
            device_pincodes.c.automat_id == automat_id,
            device_pincodes.c.removed.is_(False),
            device_pincodes.c.valid_until.is_(None) | (device_pincodes.c.valid_until > now),
        )
    ).all()
    return Sync(full=True, version=int(version or 0), pincodes=[_entry(r) for r in rows])


def sync_at_hello(session: Session, automat_id: str, data: Hello, now: datetime) -> Sync:
    """What a reconnecting device gets after its ``welcome``: only the changes since the
    version it holds, when that is the version it last acknowledged to the server (its
    store is the server's at that version); else everything (it lost its store, or the
    server's database was restored to an older state)."""
    acked = session.scalar(
        select(device_links.c.synced_version).where(device_links.c.automat_id == automat_id)
    )
    if data.sync_version is not None and data.sync_version > 0 and data.sync_version == acked:
        return incremental_sync(session, automat_id, data.sync_version)
    return full_sync(session, automat_id, now)


def incremental_sync(session: Session, automat_id: str, since: int) -> Sync:
    version = session.scalar(
        select(device_links.c.desired_version).where(device_links.c.automat_id == automat_id)
    )
    rows = session.execute(
        select(device_pincodes).where(
            device_pincodes.c.automat_id == automat_id, device_pincodes.c.version > since
        )
    ).all()
    return Sync(
        full=False,
        version=int(version or 0),
        since=since,
        pincodes=[_entry(r) for r in rows if not r.removed],
        removed=[r.id for r in rows if r.removed],
    )


@dataclass(frozen=True, slots=True)
class PendingSync:
    automat_id: str
    hw_id: str
    sync: Sync


def pending_syncs(
    session: Session,
    automat_ids: list[str] | None = None,
    wanted: Callable[[str], bool] | None = None,
) -> list[PendingSync]:
    """Connected, bound devices behind on their pincodes, with what brings each up to date;
    only those whose hwId ``wanted`` accepts (the gateway's own devices) when it is given."""
    stmt = (
        select(device_links.c.automat_id, device_links.c.hw_id, device_links.c.synced_version)
        .join(orm.automats, orm.automats.c.id == device_links.c.automat_id)
        .where(
            device_links.c.connected.is_(True),
            device_links.c.desired_version > device_links.c.synced_version,
            orm.automats.c.hw_id == device_links.c.hw_id,
            orm.automats.c.lifecycle_state == LifecycleState.ACTIVE,
        )
    )
    if automat_ids is not None:
        stmt = stmt.where(device_links.c.automat_id.in_(automat_ids))
    return [
        PendingSync(
            r.automat_id, r.hw_id, incremental_sync(session, r.automat_id, r.synced_version)
        )
        for r in session.execute(stmt).all()
        if wanted is None or wanted(r.hw_id)
    ]


def synced_version(session: Session, automat_id: str) -> int:
    """The newest sync version the automat acknowledged (0: none)."""
    version = session.scalar(
        select(device_links.c.synced_version).where(device_links.c.automat_id == automat_id)
    )
    return int(version or 0)


def record_synced(session: Session, automat_id: str, version: int) -> None:
    session.execute(
        update(device_links)
        .where(device_links.c.automat_id == automat_id, device_links.c.synced_version < version)
        .values(synced_version=version)
    )
