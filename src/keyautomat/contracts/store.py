"""Every statement on the contract tables, behind one interface the use cases and kinds call.

:class:`ContractStore` is what the contract pipeline, the device-event path and
the kinds need from the outside world: the ``contracts``, ``contract_keys``,
``contract_reservations`` and ``mechanical_contracts`` tables, the pincodes the
automats honour, and the effects that leave with the transaction (webhooks,
notifications, outbox jobs). :class:`SqlContractStore` is the real one, on one
session; ``tests/unit/contracts/fakes.py`` keeps the same in memory, so the
rules and each kind's hooks are tested without a database.

Statements run on hot paths (creation, device events) are built once, with bind
parameters, and only executed afterwards: building one (expressions, cache key)
costs SQLAlchemy several times what executing it does (bench/contracts.py).
Reads of the contract tables are Core, and so is every write (docs/persistence.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    delete,
    false,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyautomat import metrics
from keyautomat.adapters import orm
from keyautomat.adapters.db import PlainQuery, Statements
from keyautomat.adapters.orm_contracts import contract_keys, contract_reservations, contracts
from keyautomat.adapters.orm_devices import automat_events, device_pincodes
from keyautomat.adapters.orm_mechanical import mechanical_contracts, strong_auth_units
from keyautomat.adapters.orm_mechanical import mechanical_keys as mk
from keyautomat.contracts import allocation
from keyautomat.contracts.model import CodeGrant, Contract, ContractKey, ListFilters, Slot
from keyautomat.contracts.rules import OPEN_END, ContractType, KeyStatus
from keyautomat.domain import webhooks as wh
from keyautomat.domain.devices import secret_hash
from keyautomat.domain.errors import Conflict
from keyautomat.domain.notifications import (
    AutomatView,
    Contact,
    ContractView,
    NotificationType,
    OrgNotificationSettings,
)
from keyautomat.service_layer import admin_notices, devices, notifications, outbox, webhooks
from keyautomat.service_layer.pagination import PageRequest
from keyautomat.service_layer.principal import Principal, in_scope_bound, scope_params

c = contracts
ck = contract_keys
r = contract_reservations
mc = mechanical_contracts

# The end evaluation (C12) of every kind is an outbox row due at ``end``: indexed, and
# run once; the one job answers every kind (progress.py).
END_KIND = "contract-end"
_END_KINDS = (END_KIND,)


def end_ref(contract_id: str) -> str:
    return f"contract:{contract_id}:end"


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What a contract reads of a mechanical key in the register."""

    name: str | None
    shared: bool
    rfid_hex: str | None
    stored_automat_id: str | None
    stored_locker_index: int | None
    selected_manual_info: str | None


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A contract key found by a device event."""

    contract_id: str
    position: int


class ContractStore(Protocol):
    """What the contract core and its kinds read and write; see the module docstring."""

    # --- contracts -----------------------------------------------------------------------
    def load(self, contract_id: str, *, for_update: bool = False) -> Contract | None: ...
    def find(
        self,
        kind: str,
        public_id: str,
        principal: Principal,
        root_unit_id: str | None,
        *,
        for_update: bool = False,
    ) -> Contract | None: ...
    def list_page(
        self,
        kind: str,
        principal: Principal,
        page: PageRequest,
        filters: ListFilters,
        root_unit_id: str | None,
        now: datetime,
    ) -> tuple[list[Contract], bool]: ...
    def public_id_taken(self, root_unit_id: str, public_id: str) -> bool: ...
    def insert(self, contract: Contract, *, root_unit_id: str | None, now: datetime) -> None: ...
    def insert_keys(self, contract: Contract) -> None: ...
    def insert_key(self, contract: Contract, key: ContractKey) -> None: ...
    def update(self, contract: Contract, values: dict[str, Any]) -> None: ...
    def update_terms(self, contract_id: str, values: dict[str, Any]) -> None: ...
    def set_key(self, contract_id: str, position: int, **values: Any) -> None: ...
    def clear_codes(self, contract_id: str) -> None: ...
    def claim_end(self, contract_id: str, now: datetime) -> bool: ...
    def complete_if_done(self, contract_id: str, at: datetime) -> None: ...
    def key_with_code(self, pincode_id: str) -> KeyRef | None: ...
    def key_to_fetch(self, automat_id: str, locker_index: int) -> KeyRef | None: ...
    def key_to_return(self, automat_id: str, locker_index: int) -> KeyRef | None: ...
    def key_refs(self, stored_id: str) -> list[KeyRef]: ...
    def live_keys(
        self, kind: str, stored_ids: Sequence[str], now: datetime
    ) -> list[tuple[str, ContractKey]]: ...
    def key_booked(
        self,
        kind: str,
        stored_id: str,
        start: datetime,
        end: datetime | None,
        *,
        ignore_contract: str | None,
    ) -> bool: ...
    def unsynced_code_taken(
        self,
        automat_id: str,
        code: str,
        start: datetime,
        end: datetime | None,
        *,
        ignore_contract: str | None = None,
    ) -> bool: ...
    def held_code_taken(
        self,
        automat_id: str,
        code: str,
        start: datetime,
        end: datetime | None,
        *,
        ignore_contract: str | None = None,
    ) -> bool: ...
    def code_taken(
        self,
        automat_id: str,
        code: str,
        start: datetime,
        end: datetime | None,
        *,
        unsynced: bool,
        ignore_contract: str | None = None,
    ) -> bool: ...
    def deleted(self, contract_id: str) -> bool | None: ...
    def count_program_failure(self, contract_id: str, position: int) -> int: ...
    def reprogrammed_since(self, key_id: str, at: datetime) -> bool: ...
    def key_facts(self, stored_ids: Iterable[str]) -> dict[str, KeyFacts]: ...
    def link_event(self, event_id: int, contract_id: str) -> None: ...

    # --- reservations --------------------------------------------------------------------
    def lock_automats(self, automat_ids: Iterable[str | None]) -> None: ...
    def reserve(
        self, contract_id: str, position: int, slot: Slot, start: datetime, until: datetime
    ) -> None: ...
    def slot_is_free(
        self, slot: Slot, start: datetime, until: datetime, *, ignore_contract: str | None
    ) -> bool: ...
    def release(self, contract_id: str, position: int | None, at: datetime) -> None: ...
    def hold_until(self, contract_id: str, position: int, until: datetime) -> None: ...
    def move_key(self, contract_id: str, position: int, locker_index: int) -> None: ...
    def move_reservations(self, contract_id: str, start: datetime, until: datetime) -> None: ...
    def close_ended(self, contract_id: str, now: datetime) -> None: ...

    # --- the automats' pincodes ----------------------------------------------------------
    def add_pincode(self, grant: CodeGrant, *, checked: bool = False) -> str: ...
    def remove_pincode(self, automat_id: str, pincode_id: str) -> None: ...
    def pincode_in_use(
        self,
        automat_id: str,
        code: str,
        valid_from: datetime,
        valid_until: datetime | None,
    ) -> bool: ...

    # --- effects that commit with the change ---------------------------------------------
    def publish(
        self,
        unit_id: str,
        event_type: str,
        data: dict[str, Any],
        at: datetime,
        *,
        once: str | None = None,
    ) -> None: ...
    def automat_views(self, automat_ids: Iterable[str]) -> dict[str, AutomatView]: ...
    def notify(
        self,
        view: ContractView,
        type_: NotificationType,
        *,
        now: datetime,
        key_id: str | None = None,
        event: str | None = None,
    ) -> None: ...
    def schedule_reminders(self, view: ContractView, now: datetime) -> None: ...
    def remind(
        self, view: ContractView, type_: NotificationType, *, now: datetime, occasion: str
    ) -> None: ...
    def unit_settings(self, unit_id: str) -> OrgNotificationSettings: ...
    def reschedule_reminders(self, view: ContractView, now: datetime) -> None: ...
    def cancel_reminders(self, contract_id: str) -> None: ...
    def schedule_end(self, contract: Contract, now: datetime, *, fresh: bool = False) -> None: ...
    def cancel_end(self, contract_id: str) -> None: ...
    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        now: datetime,
        ref: str,
        due_at: datetime | None = None,
        once: str | None = None,
    ) -> None: ...
    def notice(
        self, unit_id: str, notice: str, *, occasion: str, facts: dict[str, Any], now: datetime
    ) -> None: ...


# --- statements ---------------------------------------------------------------------------

_CONTRACT_COLUMNS = (
    c,
    mc.c.public_id,
    mc.c.free_locker_after_fetch,
    mc.c.user_verification,
    mc.c.pick_up_info,
    mc.c.signed_at,
    mc.c.verification_link_expires_at,
)
_CONTRACT = (
    select(*_CONTRACT_COLUMNS)
    .outerjoin(mc, mc.c.contract_id == c.c.id)
    .where(c.c.id == bindparam("id"), c.c.deleted_at.is_(None))
)
_CONTRACT_FOR_UPDATE = _CONTRACT.with_for_update(of=c)
_CONTRACTS = (
    select(*_CONTRACT_COLUMNS)
    .outerjoin(mc, mc.c.contract_id == c.c.id)
    .where(c.c.id.in_(bindparam("ids", expanding=True)))
)
_KEYS_OF = (
    select(ck)
    .where(ck.c.contract_id.in_(bindparam("ids", expanding=True)))
    .order_by(ck.c.contract_id, ck.c.position)
)
_BY_ID = select(c.c.id).where(
    c.c.id == bindparam("public_id"),
    c.c.kind == bindparam("kind"),
    c.c.deleted_at.is_(None),
    in_scope_bound(c.c.organization_unit_id),
)
_BY_PUBLIC_ID = (
    select(c.c.id)
    .join(mc, mc.c.contract_id == c.c.id)
    .where(
        mc.c.root_unit_id == bindparam("root"),
        mc.c.public_id == bindparam("public_id"),
        c.c.kind == bindparam("kind"),
        c.c.deleted_at.is_(None),
        in_scope_bound(c.c.organization_unit_id),
    )
)
_PUBLIC_ID_TAKEN = select(mc.c.contract_id).where(
    mc.c.root_unit_id == bindparam("root"), mc.c.public_id == bindparam("public_id")
)
# The creation's own writes run on the driver's cursor (adapters/db.py, PlainQuery).
_INSERT_CONTRACT = PlainQuery(insert(c))
_INSERT_TERMS = insert(mc)
_INSERT_FRESH_TERMS = PlainQuery(_INSERT_TERMS)
_INSERT_KEYS = PlainQuery(insert(ck))
_SET_KEY_WHERE = update(ck).where(
    ck.c.contract_id == bindparam("b_contract_id"), ck.c.position == bindparam("b_position")
)
_CLEAR_CODES = (
    update(ck)
    .where(ck.c.contract_id == bindparam("b_contract_id"))
    .values(pincode=None, pincode_id=None)
)
_OPEN_KEY = select(ck.c.position).where(
    ck.c.contract_id == bindparam("contract_id"), ck.c.in_history.is_(False)
)
_COMPLETE = (
    update(c)
    .where(c.c.id == bindparam("b_contract_id"), c.c.completed_at.is_(None))
    .values(completed_at=bindparam("b_at", type_=c.c.completed_at.type))
)
_CLAIM_END = (
    update(c)
    .where(
        c.c.id == bindparam("b_contract_id"),
        c.c.end_evaluated_at.is_(None),
        c.c.deleted_at.is_(None),
    )
    .values(end_evaluated_at=bindparam("b_now", type_=c.c.end_evaluated_at.type))
)
_DELETED = select(c.c.deleted_at).where(c.c.id == bindparam("id"))
# A device event that moved a contract names it, for the contract's timeline.
_LINK_EVENT = (
    update(automat_events)
    .where(automat_events.c.id == bindparam("b_event_id"))
    .values(contract_id=bindparam("b_contract_id"))
)
_PROGRAM_FAILED = (
    update(ck)
    .where(ck.c.contract_id == bindparam("b_contract_id"), ck.c.position == bindparam("b_position"))
    .values(program_failures=ck.c.program_failures + 1)
    .returning(ck.c.program_failures)
)
_REPROGRAMMED = select(ck.c.contract_id).where(
    ck.c.key_id == bindparam("key_id"),
    ck.c.programmed_at > bindparam("at", type_=ck.c.programmed_at.type),
)


def _live_key(*conditions: ColumnElement[bool], first: Any = None) -> Select[Any]:
    """The first (by ``first``, then start) live contract key matching ``conditions``."""
    order = [c.c.start] if first is None else [first, c.c.start]
    return (
        select(ck.c.contract_id, ck.c.position)
        .join(c, c.c.id == ck.c.contract_id)
        .where(c.c.deleted_at.is_(None), ck.c.in_history.is_(False), *conditions)
        .order_by(*order)
        .limit(1)
    )


_AT_LOCKER = (
    ck.c.automat_id == bindparam("automat_id"),
    ck.c.locker_index == bindparam("locker_index"),
)
DEFAULT, FETCH, RETURN = (int(t) for t in ContractType)
_KEY_WITH_CODE = _live_key(ck.c.pincode_id == bindparam("pincode_id"))
# rules.fetchable, as SQL: a key its contract's code released, waiting or back.
_KEY_TO_FETCH = _live_key(
    *_AT_LOCKER,
    c.c.contract_type.in_([DEFAULT, FETCH]),
    ck.c.programmed_at.is_not(None),
    ck.c.status.is_(None) | (ck.c.status == KeyStatus.RETURNED.value),
)
_OUT = [KeyStatus.FETCHED.value, KeyStatus.NOT_RETURNED.value]
# rules.awaiting_return, as SQL. A key of a contract that freed its locker at the fetch
# comes back into any locker of its automat: it is found by what the key register
# says went into this locker (the mechanical key's object id is ``contract_keys.key_id``).
_PLACED_HERE = ck.c.key_id.in_(
    select(mk.c.object_id).where(
        mk.c.stored_automat_id == bindparam("automat_id"),
        mk.c.stored_locker_index == bindparam("locker_index"),
    )
)
_KEY_TO_RETURN = _live_key(
    or_(and_(*_AT_LOCKER), and_(ck.c.automat_id == bindparam("automat_id"), _PLACED_HERE)),
    or_(
        and_(c.c.contract_type == DEFAULT, ck.c.status.in_(_OUT)),
        and_(
            c.c.contract_type == RETURN,
            ck.c.status.is_(None) | (ck.c.status == KeyStatus.NOT_RETURNED.value),
        ),
    ),
    # The key the register just placed here comes first: another contract's key that
    # belongs in this locker but is still out must not hide the one that came back.
    first=case((_PLACED_HERE, 0), else_=1),
)
# Every live use of one key (its contracts, past the end or not, deleted ones aside).
_KEY_REFS = (
    select(ck.c.contract_id, ck.c.position)
    .join(c, c.c.id == ck.c.contract_id)
    .where(ck.c.key_id == bindparam("stored_id"), ck.c.in_history.is_(False))
    .where(c.c.deleted_at.is_(None))
    .order_by(c.c.start, c.c.id, ck.c.position)
)
_LIVE_KEY_CONTRACTS = (
    select(ck, c.c.request)
    .join(c, c.c.id == ck.c.contract_id)
    .where(
        ck.c.key_id.in_(bindparam("ids", expanding=True)),
        ck.c.in_history.is_(False),
        c.c.kind == bindparam("kind"),
        c.c.deleted_at.is_(None),
        c.c.completed_at.is_(None),
        or_(c.c.end.is_(None), c.c.end > bindparam("now", type_=c.c.end.type)),
    )
    .order_by(c.c.start, c.c.id)
)


def _booking(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """A live contract key over an overlapping period (``:start``, optional ``:end``)."""
    return and_(
        ck.c.in_history.is_(False),
        c.c.deleted_at.is_(None),
        or_(c.c.end.is_(None), c.c.end > bindparam("start", type_=c.c.end.type)),
        *conditions,
    )


def _overlap_stmt(*conditions: ColumnElement[bool], bounded: bool, ignoring: bool) -> Any:
    extra = list(conditions)
    if bounded:
        extra.append(c.c.start < bindparam("end", type_=c.c.start.type))
    if ignoring:
        extra.append(c.c.id != bindparam("ignore"))
    return (
        select(ck.c.contract_id)
        .join(c, c.c.id == ck.c.contract_id)
        .where(_booking(*extra))
        .limit(1)
    )


def _overlap_variants(*conditions: ColumnElement[bool]) -> dict[tuple[bool, bool], Any]:
    """:func:`_overlap_stmt` for each (bounded, ignoring), built once."""
    return {
        (bounded, ignoring): _overlap_stmt(*conditions, bounded=bounded, ignoring=ignoring)
        for bounded in (False, True)
        for ignoring in (False, True)
    }


_KEY_BOOKED = _overlap_variants(
    ck.c.key_id == bindparam("stored_id"),
    c.c.kind == bindparam("kind"),
    c.c.completed_at.is_(None),
)
# Codes of contracts waiting for a signature are not on the automat yet, but taken.
_UNSYNCED_CODE = _overlap_variants(
    ck.c.automat_id == bindparam("automat_id"),
    ck.c.pincode == bindparam("code"),
    ck.c.pincode_id.is_(None),
)

# Held codes (back to back) are not on their automat but taken; a partial index finds them.
_HELD_CODE = _overlap_variants(
    ck.c.automat_id == bindparam("automat_id"),
    ck.c.pincode == bindparam("code"),
    ck.c.held_since.is_not(None),
)

_RESERVE = insert(r)
_CLOSE_ENDED = (
    update(r)
    .where(
        r.c.contract_id == bindparam("b_contract_id"),
        r.c.counted.is_(True),
        r.c.until <= bindparam("b_now", type_=r.c.until.type),
    )
    .values(counted=False)
)
_HOLD_UNTIL = (
    update(r)
    .where(r.c.contract_id == bindparam("b_contract_id"), r.c.position == bindparam("b_position"))
    .values(until=bindparam("b_until", type_=r.c.until.type), counted=True)
)
_MOVE_KEY = (
    update(ck)
    .where(ck.c.contract_id == bindparam("b_contract_id"), ck.c.position == bindparam("b_position"))
    .values(locker_index=bindparam("b_locker_index"))
)
_MOVE_KEY_RESERVATION = (
    update(r)
    .where(
        r.c.contract_id == bindparam("b_contract_id"),
        r.c.position == bindparam("b_position"),
        r.c.counted.is_(True),
    )
    .values(locker_index=bindparam("b_locker_index"))
)
_MOVE = (
    update(r)
    .where(r.c.contract_id == bindparam("b_contract_id"), r.c.counted.is_(True))
    .values(
        start=bindparam("b_start", type_=r.c.start.type),
        until=bindparam("b_until", type_=r.c.until.type),
    )
)


def _release_stmts(by_position: bool) -> tuple[Any, Any]:
    scope = [
        r.c.contract_id == bindparam("b_contract_id"),
        r.c.until > bindparam("b_at", type_=r.c.until.type),
    ]
    if by_position:
        scope.append(r.c.position == bindparam("b_position"))
    # A reservation that had not begun yet goes away: an empty period [s, s) would
    # still look like an overlap to the half-open test.
    gone = delete(r).where(*scope, r.c.start >= bindparam("b_at", type_=r.c.start.type))
    ended = (
        update(r).where(*scope).values(until=bindparam("b_at", type_=r.c.until.type), counted=False)
    )
    return gone, ended


_RELEASE = {by_position: _release_stmts(by_position) for by_position in (False, True)}


def _slot_taken(*, with_key: bool, ignoring: bool) -> Any:
    start = bindparam("start", type_=r.c.start.type)
    until = bindparam("until", type_=r.c.until.type)
    place = and_(r.c.automat_id == bindparam("automat_id"), r.c.locker_index == bindparam("li"))
    conditions = [
        r.c.until > start,
        r.c.start < until,
        or_(place, r.c.key_id == bindparam("key_id") if with_key else false()),
    ]
    if ignoring:
        conditions.append(r.c.contract_id != bindparam("ignore"))
    return select(r.c.id).where(*conditions).limit(1)


_SLOT_TAKEN = {
    (with_key, ignoring): _slot_taken(with_key=with_key, ignoring=ignoring)
    for with_key in (False, True)
    for ignoring in (False, True)
}


def _pincode_clash(*, bounded: bool) -> Any:
    p = device_pincodes
    conditions = [
        p.c.automat_id == bindparam("automat_id"),
        p.c.code == bindparam("code"),
        p.c.removed.is_(False),
        or_(p.c.valid_until.is_(None), p.c.valid_until > bindparam("valid_from")),
    ]
    if bounded:
        conditions.append(p.c.valid_from < bindparam("valid_until"))
    return select(p.c.id).where(*conditions).limit(1)


_PINCODE_CLASH = {bounded: _pincode_clash(bounded=bounded) for bounded in (False, True)}


def _code_taken(*, bounded: bool, ignoring: bool, unsynced: bool) -> Any:
    """:data:`_PINCODE_CLASH` or (:data:`_UNSYNCED_CODE` if ``unsynced`` else
    :data:`_HELD_CODE`), asked in one statement."""
    off_automat = (_UNSYNCED_CODE if unsynced else _HELD_CODE)[bounded, ignoring]
    return select(or_(_PINCODE_CLASH[bounded].exists(), off_automat.exists()))


_CODE_TAKEN = {
    (bounded, ignoring, unsynced): PlainQuery(
        _code_taken(bounded=bounded, ignoring=ignoring, unsynced=unsynced)
    )
    for bounded in (False, True)
    for ignoring in (False, True)
    for unsynced in (False, True)
}

_AUTOMAT_VIEWS = PlainQuery(
    select(
        orm.automats.c.id,
        orm.automats.c.name,
        orm.automats.c.label,
        orm.automats.c.address,
        orm.automats.c.timezone,
    ).where(orm.automats.c.id.in_(bindparam("ids", expanding=True)))
)

_IN_USE = (
    select(r.c.contract_id)
    .join(c, c.c.id == r.c.contract_id)
    .where(
        r.c.automat_id == bindparam("automat_id"),
        c.c.deleted_at.is_(None),
        r.c.until > bindparam("now", type_=r.c.until.type),
    )
    .limit(1)
)
_LOCKERS_IN_USE = (
    select(r.c.locker_index)
    .join(c, c.c.id == r.c.contract_id)
    .where(
        r.c.automat_id == bindparam("automat_id"),
        c.c.deleted_at.is_(None),
        r.c.until > bindparam("now", type_=r.c.until.type),
    )
    .distinct()
)
_KEY_FACTS = select(
    mk.c.object_id,
    mk.c.name,
    mk.c.shared,
    mk.c.rfid_hex,
    mk.c.stored_automat_id,
    mk.c.stored_locker_index,
    mk.c.selected_manual_info,
).where(mk.c.object_id.in_(bindparam("ids", expanding=True)))
_STRONG_AUTH = select(strong_auth_units.c.organization_unit_id).where(
    strong_auth_units.c.organization_unit_id == bindparam("unit_id")
)
_FOR_TOKEN = (
    select(mc.c.contract_id)
    .join(c, c.c.id == mc.c.contract_id)
    .where(mc.c.signature_token_hash == bindparam("token_hash"), c.c.deleted_at.is_(None))
)


def _contact_json(contact: Contact | None, person: str | None, kind: str) -> str | None:
    if contact is None:
        return None
    stored = contact.to_json()
    if kind == "iloq":
        stored["iloqPersonId"] = person
    return json.dumps(stored, separators=(",", ":"))


def _contract_of(row: Any) -> Contract:
    contact = person = None
    if row.contact:
        stored = json.loads(row.contact)
        person = stored.pop("iloqPersonId", None)
        contact = Contact.from_json(stored)
    return Contract(
        id=row.id,
        kind=row.kind,
        public_id=row.public_id or row.id,
        organization_unit_id=row.organization_unit_id,
        contract_type=ContractType(row.contract_type),
        start=row.start,
        end=row.end,
        contact=contact,
        request=json.loads(row.request),
        end_evaluated_at=row.end_evaluated_at,
        completed_at=row.completed_at,
        iloq_person_id=person,
        free_locker_after_fetch=bool(row.free_locker_after_fetch),
        user_verification=row.user_verification or "0",
        pick_up_info=row.pick_up_info,
        signed_at=row.signed_at,
        link_expires_at=row.verification_link_expires_at,
    )


def _asked(request: dict[str, Any], position: int) -> dict[str, Any]:
    """What the caller named for the key at ``position``: mechanical contracts keep the
    caller's key ids (and manual places) in the request; contract_keys holds the keys'
    object ids."""
    asked = request.get("keys") or ()
    return asked[position] if position < len(asked) else {}


def _key_of(row: Any, asked: dict[str, Any]) -> ContractKey:
    return ContractKey(
        position=row.position,
        key_id=asked.get("id", row.key_id),
        stored_id=row.key_id,
        automat_id=row.automat_id,
        locker_index=row.locker_index,
        manual_info=asked.get("manualStorageInfo"),
        pincode=row.pincode,
        pincode_id=row.pincode_id,
        status=row.status,
        in_history=bool(row.in_history),
        opened_at=row.programmed_at,
        held_since=row.held_since,
    )


def _key_row(contract: Contract, key: ContractKey) -> dict[str, Any]:
    return {
        "contract_id": contract.id,
        "position": key.position,
        "key_id": key.stored_id,
        "automat_id": key.automat_id,
        "locker_index": key.locker_index,
        "pincode": key.pincode,
        "pincode_id": key.pincode_id,
        "status": key.status,
        "in_history": key.in_history,
        "programmed_at": key.opened_at,
        "program_failures": 0,
        "held_since": key.held_since,
    }


class SqlContractStore:
    """The contract tables on one session (one unit of work)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    @property
    def plain(self) -> Statements:
        """The hot statements' way to the database, in the session's transaction."""
        return Statements.of(self.session)

    # --- contracts -----------------------------------------------------------------------

    def _with_keys(self, rows: list[Contract]) -> list[Contract]:
        if not rows:
            return rows
        by_id = {row.id: row for row in rows}
        for key in self.session.execute(_KEYS_OF, {"ids": list(by_id)}).all():
            contract = by_id[key.contract_id]
            contract.keys.append(_key_of(key, _asked(contract.request, key.position)))
        return rows

    def load(self, contract_id: str, *, for_update: bool = False) -> Contract | None:
        stmt = _CONTRACT_FOR_UPDATE if for_update and self.postgres else _CONTRACT
        row = self.session.execute(stmt, {"id": contract_id}).first()
        return None if row is None else self._with_keys([_contract_of(row)])[0]

    def find(
        self,
        kind: str,
        public_id: str,
        principal: Principal,
        root_unit_id: str | None,
        *,
        for_update: bool = False,
    ) -> Contract | None:
        params = {"kind": kind, "public_id": public_id, **scope_params(principal)}
        if root_unit_id is None:
            found = self.session.scalar(_BY_ID, params)
        else:
            found = self.session.scalar(_BY_PUBLIC_ID, {**params, "root": root_unit_id})
        return None if found is None else self.load(found, for_update=for_update)

    def list_page(
        self,
        kind: str,
        principal: Principal,
        page: PageRequest,
        filters: ListFilters,
        root_unit_id: str | None,
        now: datetime,
    ) -> tuple[list[Contract], bool]:
        stmt = select(c.c.id).where(
            c.c.kind == kind,
            c.c.deleted_at.is_(None),
            in_scope_bound(c.c.organization_unit_id),
        )
        if root_unit_id is not None:
            stmt = stmt.where(
                c.c.id.in_(select(mc.c.contract_id).where(mc.c.root_unit_id == root_unit_id))
            )
        period = period_condition(filters, now)
        if period is not None:
            stmt = stmt.where(period)
        if filters.key_id:
            stmt = stmt.where(
                select(ck.c.contract_id)
                .join(mk, mk.c.object_id == ck.c.key_id)
                .where(ck.c.contract_id == c.c.id, mk.c.id == filters.key_id)
                .exists()
            )
        stmt = stmt.order_by(c.c.created_at, c.c.id).offset(page.offset).limit(page.limit + 1)
        ids = list(self.session.scalars(stmt, scope_params(principal)))
        return self.load_many(ids[: page.limit]), len(ids) > page.limit

    def load_many(self, contract_ids: Sequence[str]) -> list[Contract]:
        """These contracts with their keys, in the order given (ids read in scope already)."""
        rows = {
            row.id: _contract_of(row)
            for row in self.session.execute(_CONTRACTS, {"ids": list(contract_ids)})
        }
        return self._with_keys([rows[i] for i in contract_ids if i in rows])

    def public_id_taken(self, root_unit_id: str, public_id: str) -> bool:
        params = {"root": root_unit_id, "public_id": public_id}
        return self.session.scalar(_PUBLIC_ID_TAKEN, params) is not None

    def insert(self, contract: Contract, *, root_unit_id: str | None, now: datetime) -> None:
        """The contract's row, and its kind's terms when it has any (ids per root). Of a
        signature token only its hash is stored (docs/security.md)."""
        token = contract.signature_token
        metrics.contract_created(self.session, contract.kind)
        self.plain.execute(
            _INSERT_CONTRACT,
            id=contract.id,
            kind=contract.kind,
            organization_unit_id=contract.organization_unit_id,
            contract_type=int(contract.contract_type),
            start=contract.start,
            end=contract.end,
            contact=_contact_json(contract.contact, contract.iloq_person_id, contract.kind),
            request=json.dumps(contract.request, separators=(",", ":")),
            created_at=now,
            updated_at=now,
        )
        if root_unit_id is None:
            return
        terms = {
            "contract_id": contract.id,
            "root_unit_id": root_unit_id,
            "public_id": contract.public_id,
            "free_locker_after_fetch": contract.free_locker_after_fetch,
            "user_verification": contract.user_verification,
            "pick_up_info": contract.pick_up_info,
            "signature_token_hash": secret_hash(token) if token else None,
            "verification_link_expires_at": contract.link_expires_at,
        }
        if contract.public_id == contract.id:
            self.plain.execute(_INSERT_FRESH_TERMS, **terms)  # a fresh id: nobody else has it
            return
        try:
            # The unique (root, public id) is the final guard when two creations race.
            with self.session.begin_nested():
                self.session.execute(_INSERT_TERMS, terms)
        except IntegrityError:
            raise Conflict(
                f"A contract with the id {contract.public_id!r} already exists"
            ) from None

    def insert_keys(self, contract: Contract) -> None:
        self.plain.execute_many(_INSERT_KEYS, [_key_row(contract, key) for key in contract.keys])

    def insert_key(self, contract: Contract, key: ContractKey) -> None:
        """One key more in a contract (a replacement for a lost one)."""
        self.plain.execute(_INSERT_KEYS, **_key_row(contract, key))

    def update(self, contract: Contract, values: dict[str, Any]) -> None:
        stored = dict(values)
        if "contact" in stored or "iloq_person_id" in stored:
            stored["contact"] = _contact_json(
                contract.contact, contract.iloq_person_id, contract.kind
            )
            stored.pop("iloq_person_id", None)
        self.session.execute(update(c).where(c.c.id == contract.id).values(stored))

    def update_terms(self, contract_id: str, values: dict[str, Any]) -> None:
        self.session.execute(update(mc).where(mc.c.contract_id == contract_id).values(values))

    _set_key: dict[tuple[str, ...], Any] = {}  # noqa: RUF012 - statements, built once

    def set_key(self, contract_id: str, position: int, **values: Any) -> None:
        if "opened_at" in values:
            values["programmed_at"] = values.pop("opened_at")
        columns = tuple(sorted(values))
        stmt = self._set_key.get(columns)
        if stmt is None:
            stmt = _SET_KEY_WHERE.values({name: bindparam(f"v_{name}") for name in columns})
            self._set_key[columns] = stmt
        params = {f"v_{name}": value for name, value in values.items()}
        self.session.execute(stmt, {**params, "b_contract_id": contract_id, "b_position": position})

    def clear_codes(self, contract_id: str) -> None:
        self.session.execute(_CLEAR_CODES, {"b_contract_id": contract_id})

    def link_event(self, event_id: int, contract_id: str) -> None:
        self.session.execute(_LINK_EVENT, {"b_event_id": event_id, "b_contract_id": contract_id})

    def claim_end(self, contract_id: str, now: datetime) -> bool:
        claimed = self.session.execute(_CLAIM_END, {"b_contract_id": contract_id, "b_now": now})
        return bool(claimed.rowcount)  # type: ignore[attr-defined]

    def complete_if_done(self, contract_id: str, at: datetime) -> None:
        if self.session.execute(_OPEN_KEY, {"contract_id": contract_id}).first() is None:
            self.session.execute(_COMPLETE, {"b_contract_id": contract_id, "b_at": at})

    def _ref(self, stmt: Any, params: dict[str, Any]) -> KeyRef | None:
        row = self.session.execute(stmt, params).first()
        return None if row is None else KeyRef(row.contract_id, row.position)

    def key_with_code(self, pincode_id: str) -> KeyRef | None:
        return self._ref(_KEY_WITH_CODE, {"pincode_id": pincode_id})

    def key_to_fetch(self, automat_id: str, locker_index: int) -> KeyRef | None:
        return self._ref(_KEY_TO_FETCH, {"automat_id": automat_id, "locker_index": locker_index})

    def key_to_return(self, automat_id: str, locker_index: int) -> KeyRef | None:
        return self._ref(_KEY_TO_RETURN, {"automat_id": automat_id, "locker_index": locker_index})

    def key_refs(self, stored_id: str) -> list[KeyRef]:
        """Every contract key of this key not yet done with, by its contract's start."""
        rows = self.session.execute(_KEY_REFS, {"stored_id": stored_id})
        return [KeyRef(row.contract_id, row.position) for row in rows]

    def live_keys(
        self, kind: str, stored_ids: Sequence[str], now: datetime
    ) -> list[tuple[str, ContractKey]]:
        """(contract id, key) of these keys in live contracts of ``kind``, by start; one
        statement, no contract loaded."""
        rows = self.session.execute(
            _LIVE_KEY_CONTRACTS, {"ids": list(stored_ids), "kind": kind, "now": now}
        )
        return [
            (row.contract_id, _key_of(row, _asked(json.loads(row.request), row.position)))
            for row in rows
        ]

    def _overlaps(
        self,
        stmts: dict[tuple[bool, bool], Any],
        params: dict[str, Any],
        end: datetime | None,
        ignore_contract: str | None,
    ) -> bool:
        if end is not None:
            params["end"] = end
        if ignore_contract is not None:
            params["ignore"] = ignore_contract
        stmt = stmts[end is not None, ignore_contract is not None]
        return self.session.execute(stmt, params).first() is not None

    def key_booked(
        self,
        kind: str,
        stored_id: str,
        start: datetime,
        end: datetime | None,
        *,
        ignore_contract: str | None,
    ) -> bool:
        """F6: another live contract of ``kind`` holds this key at an overlapping time."""
        params = {"stored_id": stored_id, "kind": kind, "start": start}
        return self._overlaps(_KEY_BOOKED, params, end, ignore_contract)

    def unsynced_code_taken(
        self,
        automat_id: str,
        code: str,
        start: datetime,
        end: datetime | None,
        *,
        ignore_contract: str | None = None,
    ) -> bool:
        params = {"automat_id": automat_id, "code": code, "start": start}
        return self._overlaps(_UNSYNCED_CODE, params, end, ignore_contract)

    def held_code_taken(
        self,
        automat_id: str,
        code: str,
        start: datetime,
        end: datetime | None,
        *,
        ignore_contract: str | None = None,
    ) -> bool:
        """A code held back from this automat (its key is out) at an overlapping time."""
        params = {"automat_id": automat_id, "code": code, "start": start}
        return self._overlaps(_HELD_CODE, params, end, ignore_contract)

    def code_taken(
        self,
        automat_id: str,
        code: str,
        start: datetime,
        end: datetime | None,
        *,
        unsynced: bool,
        ignore_contract: str | None = None,
    ) -> bool:
        """:meth:`pincode_in_use` or (:meth:`unsynced_code_taken` if ``unsynced`` else
        :meth:`held_code_taken`), in one round trip."""
        params: dict[str, Any] = {
            "automat_id": automat_id,
            "code": code,
            "start": start,
            "valid_from": start,
        }
        if end is not None:
            params["end"] = params["valid_until"] = end
        if ignore_contract is not None:
            params["ignore"] = ignore_contract
        stmt = _CODE_TAKEN[end is not None, ignore_contract is not None, unsynced]
        return bool(self.plain.scalar(stmt, **params))

    def deleted(self, contract_id: str) -> bool | None:
        """Whether the contract was deleted; None when there is no such contract."""
        row = self.session.execute(_DELETED, {"id": contract_id}).first()
        return None if row is None else row.deleted_at is not None

    def count_program_failure(self, contract_id: str, position: int) -> int:
        """One more failed programming of this key; how many in a row now."""
        params = {"b_contract_id": contract_id, "b_position": position}
        return int(self.session.execute(_PROGRAM_FAILED, params).scalar_one())

    def reprogrammed_since(self, key_id: str, at: datetime) -> bool:
        """The key was programmed for a contract after ``at``."""
        return self.session.execute(_REPROGRAMMED, {"key_id": key_id, "at": at}).first() is not None

    def key_facts(self, stored_ids: Iterable[str]) -> dict[str, KeyFacts]:
        ids = sorted(set(stored_ids))
        if not ids:
            return {}
        return {
            row.object_id: KeyFacts(
                name=row.name,
                shared=bool(row.shared),
                rfid_hex=row.rfid_hex,
                stored_automat_id=row.stored_automat_id,
                stored_locker_index=row.stored_locker_index,
                selected_manual_info=row.selected_manual_info,
            )
            for row in self.session.execute(_KEY_FACTS, {"ids": ids})
        }

    def automat_in_use(self, automat_id: str, now: datetime) -> str | None:
        """A contract that still reserves this automat now or later, or None."""
        return self.session.scalar(_IN_USE, {"automat_id": automat_id, "now": now})

    def lockers_in_use(self, automat_id: str, now: datetime) -> set[int]:
        """The automat's lockers a contract reserves now or later."""
        params = {"automat_id": automat_id, "now": now}
        return set(self.session.scalars(_LOCKERS_IN_USE, params))

    def strong_auth(self, unit_id: str) -> bool:
        return self.session.scalar(_STRONG_AUTH, {"unit_id": unit_id}) is not None

    def contract_for_token_hash(self, token_hash: str) -> str | None:
        return self.session.scalar(_FOR_TOKEN, {"token_hash": token_hash})

    # --- reservations --------------------------------------------------------------------

    def lock_automats(self, automat_ids: Iterable[str | None]) -> None:
        allocation.lock_automats(self.session, [a for a in automat_ids if a])

    def reserve(
        self, contract_id: str, position: int, slot: Slot, start: datetime, until: datetime
    ) -> None:
        self.session.execute(
            _RESERVE,
            {
                "contract_id": contract_id,
                "position": position,
                "automat_id": slot.automat_id,
                "locker_index": slot.locker_index,
                "key_id": slot.key_id,
                "start": start,
                "until": until,
            },
        )

    def slot_is_free(
        self, slot: Slot, start: datetime, until: datetime, *, ignore_contract: str | None
    ) -> bool:
        """Neither the locker nor the key is reserved by another contract over the period."""
        params: dict[str, Any] = {
            "automat_id": slot.automat_id,
            "li": slot.locker_index,
            "start": start,
            "until": until,
        }
        if slot.key_id is not None:
            params["key_id"] = slot.key_id
        if ignore_contract is not None:
            params["ignore"] = ignore_contract
        stmt = _SLOT_TAKEN[slot.key_id is not None, ignore_contract is not None]
        return self.session.execute(stmt, params).first() is None

    def release(self, contract_id: str, position: int | None, at: datetime) -> None:
        """Free the key and locker from ``at`` on; never extends a reservation."""
        gone, ended = _RELEASE[position is not None]
        params: dict[str, Any] = {"b_contract_id": contract_id, "b_at": at}
        if position is not None:
            params["b_position"] = position
        self.session.execute(gone, params)
        self.session.execute(ended, params)

    def hold_until(self, contract_id: str, position: int, until: datetime) -> None:
        """Keep (or extend) what the key at ``position`` blocks; counted as open again:
        close_ended() clears it once the contract's end has passed."""
        params = {"b_contract_id": contract_id, "b_position": position, "b_until": until}
        self.session.execute(_HOLD_UNTIL, params)

    def move_key(self, contract_id: str, position: int, locker_index: int) -> None:
        """The key is kept in another locker of its automat now: the contract key and what
        it still reserves follow it."""
        params = {
            "b_contract_id": contract_id,
            "b_position": position,
            "b_locker_index": locker_index,
        }
        self.session.execute(_MOVE_KEY, params)
        self.session.execute(_MOVE_KEY_RESERVATION, params)

    def move_reservations(self, contract_id: str, start: datetime, until: datetime) -> None:
        """A PATCH of the period: every unreleased reservation takes the new period (one
        already released, a key returned or fetched from a freed locker, stays released)."""
        params = {"b_contract_id": contract_id, "b_start": start, "b_until": until}
        self.session.execute(_MOVE, params)

    def close_ended(self, contract_id: str, now: datetime) -> None:
        """Stop counting the contract's reservations that are over (its end evaluation), so
        that its automats rank as free again (allocation.rank_automats)."""
        self.session.execute(_CLOSE_ENDED, {"b_contract_id": contract_id, "b_now": now})

    # --- the automats' pincodes ----------------------------------------------------------

    def add_pincode(self, grant: CodeGrant, *, checked: bool = False) -> str:
        # Not dataclasses.asdict: it deep-copies each value (~50 µs a grant).
        fields = {name: getattr(grant, name) for name in CodeGrant.__slots__}
        return devices.add_pincode(self.session, **fields, checked=checked)

    def remove_pincode(self, automat_id: str, pincode_id: str) -> None:
        devices.remove_pincode(self.session, automat_id, pincode_id)

    def pincode_in_use(
        self,
        automat_id: str,
        code: str,
        valid_from: datetime,
        valid_until: datetime | None,
    ) -> bool:
        """Another code valid on this automat at an overlapping time (gaps.md C8)."""
        params: dict[str, Any] = {"automat_id": automat_id, "code": code, "valid_from": valid_from}
        if valid_until is not None:
            params["valid_until"] = valid_until
        stmt = _PINCODE_CLASH[valid_until is not None]
        return self.session.execute(stmt, params).first() is not None

    # --- effects -------------------------------------------------------------------------

    def publish(
        self,
        unit_id: str,
        event_type: str,
        data: dict[str, Any],
        at: datetime,
        *,
        once: str | None = None,
    ) -> None:
        if event_type == wh.EventType.KEY_STATUS:
            # Every key status change passes here (progress.publish_status): counted once
            # the transaction commits.
            metrics.handover(self.session, data["state"])
        webhooks.publish(
            self.session,
            organization_unit_id=unit_id,
            event_type=event_type,
            data=data,
            occurred_at=at,
            now=at,
            once=once,
        )

    def automat_views(self, automat_ids: Iterable[str]) -> dict[str, AutomatView]:
        ids = sorted(set(automat_ids))
        if not ids:
            return {}
        # (id, name, label, address, timezone)
        return {row[0]: AutomatView(*row) for row in self.plain.rows(_AUTOMAT_VIEWS, ids=ids)}

    def notify(
        self,
        view: ContractView,
        type_: NotificationType,
        *,
        now: datetime,
        key_id: str | None = None,
        event: str | None = None,
    ) -> None:
        notifications.notify(self.session, view, type_, now=now, key_id=key_id, event=event)

    def schedule_reminders(self, view: ContractView, now: datetime) -> None:
        notifications.schedule_reminders(self.session, view, now=now)

    def remind(
        self, view: ContractView, type_: NotificationType, *, now: datetime, occasion: str
    ) -> None:
        notifications.remind(self.session, view, type_, now=now, occasion=occasion)

    def unit_settings(self, unit_id: str) -> OrgNotificationSettings:
        """The unit's notification settings in force (inherited, factory defaults)."""
        return notifications.load_settings(self.session, unit_id)

    def reschedule_reminders(self, view: ContractView, now: datetime) -> None:
        notifications.reschedule(self.session, view, now=now)

    def cancel_reminders(self, contract_id: str) -> None:
        notifications.cancel_reminders(self.session, contract_id)

    def schedule_end(self, contract: Contract, now: datetime, *, fresh: bool = False) -> None:
        """(Re)plan the end evaluation at ``end``; nothing for an open end or one done.
        ``fresh``: the contract was created in this transaction, so no plan to cancel."""
        if not fresh:
            self.cancel_end(contract.id)
        if contract.end is not None and contract.end_evaluated_at is None:
            outbox.enqueue(
                self.session,
                END_KIND,
                {"contractId": contract.id},
                now=now,
                due_at=contract.end,
                ref=end_ref(contract.id),
            )

    def cancel_end(self, contract_id: str) -> None:
        outbox.cancel(self.session, ref=end_ref(contract_id), kinds=_END_KINDS)

    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        now: datetime,
        ref: str,
        due_at: datetime | None = None,
        once: str | None = None,
    ) -> None:
        """An outbox job, due now or at ``due_at``; with ``once``, at most one per name."""
        outbox.enqueue(
            self.session, kind, payload, now=now, due_at=due_at, ref=ref, idempotency_key=once
        )

    def notice(
        self, unit_id: str, notice: str, *, occasion: str, facts: dict[str, Any], now: datetime
    ) -> None:
        """An email to the unit's admins, once per occasion (service_layer/admin_notices.py)."""
        admin_notices.queue(
            self.session,
            organization_unit_id=unit_id,
            notice=notice,
            occasion=occasion,
            facts=facts,
            now=now,
        )


def period_condition(filters: ListFilters, now: datetime) -> ColumnElement[bool] | None:
    """The list filters of gaps.md C14 on the ``contracts`` table (``rules.period_state`` is
    the same rule for one contract).

    None given: no condition (all contracts). Several true: their union. All
    given as false: a condition nothing satisfies.
    """
    ongoing, ended, future = filters.ongoing, filters.ended, filters.future
    if ongoing is None and ended is None and future is None:
        return None
    parts: list[ColumnElement[bool]] = []
    if future:
        parts.append(c.c.start > now)
    if ongoing:
        parts.append(
            and_(
                c.c.start <= now, or_(c.c.end.is_(None), c.c.end > now), c.c.completed_at.is_(None)
            )
        )
    if ended:
        parts.append(or_(c.c.end <= now, c.c.completed_at.is_not(None)))
    return or_(*parts) if parts else false()


__all__ = ["END_KIND", "OPEN_END", "ContractStore", "KeyRef", "SqlContractStore"]
