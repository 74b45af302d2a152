"""iLOQ key contracts: create, read, change, delete (spec endpoints §3, gaps.md C1-C18).

The reservation machinery is the shared contract core (``contracts.py``); this
module adds what is iLOQ's own: access rights, the three contract types, the
location methods, and the keys of the iLOQ registry. Progress at the automats
and just-in-time programming are in ``iloq_progress.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.orm_contracts import contract_keys, contract_reservations, contracts
from keyautomat.adapters.orm_iloq import iloq_keys
from keyautomat.domain import webhooks as wh
from keyautomat.domain.contact import parse_contact
from keyautomat.domain.contracts import (
    MAX_KEYS_PER_CONTRACT,
    ContractType,
    check_pincode,
    delete_refusal,
    pincode_purpose,
    pincode_window,
    reservation_until,
)
from keyautomat.domain.errors import Conflict, InvalidInput, NotFound
from keyautomat.domain.ids import is_object_id, new_object_id
from keyautomat.domain.iloq import check_key_id
from keyautomat.domain.model import GroupType, LifecycleState, Product
from keyautomat.domain.notifications import (
    AutomatView,
    Contact,
    ContractKind,
    ContractView,
    KeyView,
    NotificationType,
)
from keyautomat.domain.notifications import ContractType as NotifyContractType
from keyautomat.domain.times import parse_time
from keyautomat.service_layer import contract_steps, devices, notifications
from keyautomat.service_layer import contracts as core
from keyautomat.service_layer import iloq_keys as registry
from keyautomat.service_layer.contract_steps import schedule_end
from keyautomat.service_layer.contracts import Slot
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal, in_scope, in_scope_bound, scope_params

KIND = ContractKind.ILOQ.value
WIPE_KIND = "iloq-wipe"

c = contracts
ck = contract_keys


# --- input --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewContract:
    """A create request after validation of its shape (endpoints.md §3.3, gaps.md C1-C4)."""

    contract_type: ContractType
    start: datetime
    end: datetime | None
    access_right_ids: list[str] | None
    number_of_keys: int | None
    key_ids: list[str] | None
    key_automat_id: str | None
    group_id: str | None
    pincodes: list[str] | None
    contact: Contact | None
    iloq_person_id: str | None
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def key_count(self) -> int:
        if self.key_ids is not None:
            return len(self.key_ids)
        assert self.number_of_keys is not None
        return self.number_of_keys


def _string_list(value: Any, name: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise InvalidInput(name, "must be a non-empty array of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidInput(f"{name}.{index}", "must be a non-empty string")
    return list(value)


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(name, "must be a non-empty string")
    return value


def unwrap(body: Any) -> Mapping[str, Any]:
    """The contract fields: under ``input`` as documented, or at the top level (C1)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("input", "must be an object")
    inner = body.get("input")
    if isinstance(inner, Mapping):
        return inner
    if inner is None and "contractType" in body:
        return body
    raise InvalidInput("input", 'is required: wrap the contract in {"input": {...}}')


def parse_contact_input(value: Any) -> tuple[Contact | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        raise InvalidInput("contact", "must be an object")
    person = value.get("iloqPersonId")
    if person is not None and (not isinstance(person, str) or not person):
        raise InvalidInput("contact.iloqPersonId", "must be a non-empty string")
    return parse_contact(value), person


def parse_new_contract(body: Any, now: datetime) -> NewContract:  # noqa: PLR0912, PLR0915
    # One rule after another, in the order of endpoints.md §3.3; splitting it would scatter them.
    data = unwrap(body)
    raw_type = data.get("contractType")
    if isinstance(raw_type, bool) or raw_type not in (1, 2, 3):
        raise InvalidInput("contractType", "must be 1 (default), 2 (fetch) or 3 (return)")
    ctype = ContractType(raw_type)
    returning = ctype is ContractType.RETURN

    access_right_ids = None
    if not returning:  # return contracts carry none (C3)
        if data.get("accessRightIds") is None:
            raise InvalidInput("accessRightIds", "is required")
        access_right_ids = _string_list(data["accessRightIds"], "accessRightIds")

    if data.get("start") is None:
        if not returning:
            raise InvalidInput("start", "is required")
        start = now  # return contracts start now unless told otherwise
    else:
        start = parse_time(data["start"], "start")

    end = None
    if ctype is ContractType.DEFAULT:
        if data.get("end") is None:
            raise InvalidInput("end", "is required for default contracts")
        end = parse_time(data["end"], "end")
    elif returning and data.get("end") is not None:  # optional deadline (C2); fetch: ignored (C3)
        end = parse_time(data["end"], "end")
    if end is not None:
        if end <= start:
            raise InvalidInput("end", "must be after start")
        if end <= now:
            raise InvalidInput("end", "must be in the future")

    key_ids = None
    if data.get("keyIds") is not None:
        key_ids = _string_list(data["keyIds"], "keyIds")
        if len(key_ids) > MAX_KEYS_PER_CONTRACT:
            raise InvalidInput("keyIds", f"must hold at most {MAX_KEYS_PER_CONTRACT} key ids")
        for index, key_id in enumerate(key_ids):
            check_key_id(key_id, f"keyIds.{index}")
            if key_id in key_ids[:index]:
                raise InvalidInput(f"keyIds.{index}", "repeats a key id given earlier")
    elif returning:
        raise InvalidInput("keyIds", "is required for return contracts")
    key_automat_id = _optional_str(data, "keyAutomatId")
    group_id = _optional_str(data, "groupId")

    number_of_keys = None
    if not returning:
        raw_number = data.get("numberOfKeys")
        if raw_number is not None:
            if (
                isinstance(raw_number, bool)
                or not isinstance(raw_number, int)
                or not 1 <= raw_number <= MAX_KEYS_PER_CONTRACT
            ):
                raise InvalidInput(
                    "numberOfKeys", f"must be an integer from 1 to {MAX_KEYS_PER_CONTRACT}"
                )
            number_of_keys = raw_number
        if key_ids is not None:
            if number_of_keys is not None and number_of_keys != len(key_ids):
                raise InvalidInput("numberOfKeys", "must equal the number of keyIds")
        elif key_automat_id is not None or group_id is not None:
            if number_of_keys is None:
                raise InvalidInput("numberOfKeys", "is required with keyAutomatId or groupId")
        else:
            raise InvalidInput("keyAutomatId", "one of keyIds, keyAutomatId or groupId is required")
    elif key_automat_id is None and group_id is None:
        raise InvalidInput("keyAutomatId", "a return contract needs keyAutomatId or groupId")

    count = len(key_ids) if key_ids is not None else (number_of_keys or 0)
    pincodes = None
    if data.get("pincodes") is not None:
        pincodes = _string_list(data["pincodes"], "pincodes", allow_empty=True)
        if len(pincodes) != count:
            raise InvalidInput("pincodes", f"must hold one pincode per key ({count})")
        for index, code in enumerate(pincodes):
            reason = check_pincode(code)
            if reason is not None:
                raise InvalidInput(f"pincodes.{index}", reason)

    contact, person = parse_contact_input(data.get("contact"))
    request = {
        "accessRightIds": access_right_ids,
        "numberOfKeys": number_of_keys,
        "keyIds": key_ids,
        "keyAutomatId": key_automat_id,
        "groupId": group_id,
    }
    return NewContract(
        contract_type=ctype,
        start=start,
        end=end,
        access_right_ids=access_right_ids,
        number_of_keys=number_of_keys,
        key_ids=key_ids,
        key_automat_id=key_automat_id,
        group_id=group_id,
        pincodes=pincodes,
        contact=contact,
        iloq_person_id=person,
        request=request,
    )


# --- stored contracts ---------------------------------------------------------------------


@dataclass(slots=True)
class KeyRow:
    position: int
    key_id: str
    automat_id: str | None
    locker_index: int | None
    pincode: str | None
    pincode_id: str | None
    status: str | None
    in_history: bool
    programmed_at: datetime | None


@dataclass(slots=True)
class ContractRow:
    id: str
    organization_unit_id: str
    contract_type: ContractType
    start: datetime
    end: datetime | None
    contact: Contact | None
    iloq_person_id: str | None
    request: dict[str, Any]
    end_evaluated_at: datetime | None
    completed_at: datetime | None
    keys: list[KeyRow] = field(default_factory=list)

    @property
    def access_right_ids(self) -> list[str]:
        return list(self.request.get("accessRightIds") or [])


def _contact_json(contact: Contact | None, person: str | None) -> str | None:
    if contact is None:
        return None
    return json.dumps({**contact.to_json(), "iloqPersonId": person}, separators=(",", ":"))


def _contract_of(row: Any) -> ContractRow:
    contact = person = None
    if row.contact:
        stored = json.loads(row.contact)
        person = stored.pop("iloqPersonId", None)
        contact = Contact.from_json(stored)
    return ContractRow(
        id=row.id,
        organization_unit_id=row.organization_unit_id,
        contract_type=ContractType(row.contract_type),
        start=row.start,
        end=row.end,
        contact=contact,
        iloq_person_id=person,
        request=json.loads(row.request),
        end_evaluated_at=row.end_evaluated_at,
        completed_at=row.completed_at,
    )


def _key_of(row: Any) -> KeyRow:
    return KeyRow(
        position=row.position,
        key_id=row.key_id,
        automat_id=row.automat_id,
        locker_index=row.locker_index,
        pincode=row.pincode,
        pincode_id=row.pincode_id,
        status=row.status,
        in_history=bool(row.in_history),
        programmed_at=row.programmed_at,
    )


_KEYS_OF = (
    select(ck)
    .where(ck.c.contract_id.in_(bindparam("ids", expanding=True)))
    .order_by(ck.c.contract_id, ck.c.position)
)
_CONTRACT = select(c).where(c.c.id == bindparam("id"), c.c.kind == KIND, c.c.deleted_at.is_(None))
_CONTRACT_FOR_UPDATE = _CONTRACT.with_for_update()


def _attach_keys(session: Session, rows: list[ContractRow]) -> list[ContractRow]:
    if not rows:
        return rows
    by_id = {row.id: row for row in rows}
    for key in session.execute(_KEYS_OF, {"ids": list(by_id)}).all():
        by_id[key.contract_id].keys.append(_key_of(key))
    return rows


def load_contract(session: Session, contract_id: str, *, for_update: bool = False) -> ContractRow:
    locking = for_update and session.get_bind().dialect.name == "postgresql"
    row = session.execute(
        _CONTRACT_FOR_UPDATE if locking else _CONTRACT, {"id": contract_id}
    ).first()
    if row is None:
        raise NotFound("Contract")
    return _attach_keys(session, [_contract_of(row)])[0]


def scoped_contract(
    session: Session, principal: Principal, contract_id: str, *, for_update: bool = False
) -> ContractRow:
    if not is_object_id(contract_id):
        raise NotFound("Contract")
    found = session.execute(
        select(c.c.id).where(
            c.c.id == contract_id,
            c.c.kind == KIND,
            c.c.deleted_at.is_(None),
            in_scope(c.c.organization_unit_id, principal),
        )
    ).first()
    if found is None:
        raise NotFound("Contract")
    return load_contract(session, contract_id, for_update=for_update)


# --- responses ----------------------------------------------------------------------------


def to_wire(session: Session, contract: ContractRow) -> dict[str, Any]:
    """``IloqKeyContract`` (endpoints.md §3.1)."""
    request = contract.request
    contact = notifications.contact_response(
        session, contract.organization_unit_id, contract.contact
    )
    if contact is not None:
        contact["iloqPersonId"] = contract.iloq_person_id
    returning = contract.contract_type is ContractType.RETURN
    return {
        "id": contract.id,
        "accessRightIds": None if returning else request.get("accessRightIds"),
        "start": wh.format_time(contract.start),
        "end": wh.format_time(contract.end) if contract.end else None,
        "contact": contact,
        "keys": [
            {
                "id": key.key_id,
                "status": key.status,
                "storageInfo": {"deviceId": key.automat_id, "pincode": key.pincode},
                "inHistory": key.in_history,
            }
            for key in contract.keys
        ],
        "numberOfKeys": None if returning else request.get("numberOfKeys"),
        "keyIds": request.get("keyIds"),
        "keyAutomatId": request.get("keyAutomatId"),
        "groupId": request.get("groupId"),
        "contractType": int(contract.contract_type),
    }


_AUTOMAT_VIEWS = select(
    orm.automats.c.id,
    orm.automats.c.name,
    orm.automats.c.label,
    orm.automats.c.address,
    orm.automats.c.timezone,
).where(orm.automats.c.id.in_(bindparam("ids", expanding=True)))


def notification_view(session: Session, contract: ContractRow) -> ContractView:
    automat_ids = sorted({k.automat_id for k in contract.keys if k.automat_id})
    automats = {
        row.id: AutomatView(row.id, row.name, row.label, row.address, row.timezone)
        for row in session.execute(_AUTOMAT_VIEWS, {"ids": automat_ids})
    }
    return ContractView(
        kind=ContractKind.ILOQ,
        contract_id=contract.id,
        contract_type=NotifyContractType(contract.contract_type.wire_name),
        organization_unit_id=contract.organization_unit_id,
        start=contract.start,
        end=contract.end,
        contact=contract.contact,
        keys=tuple(
            KeyView(
                id=k.key_id,
                pincode=k.pincode,
                automat=automats.get(k.automat_id) if k.automat_id else None,
            )
            for k in contract.keys
            if not k.in_history
        ),
    )


def publish_contract_update(session: Session, contract: ContractRow, now: datetime) -> None:
    """One ``contract-update`` per key still in the contract (webhooks.md §5.2)."""
    contract_steps.publish_key_updates(
        session,
        organization_unit_id=contract.organization_unit_id,
        contract_type=contract.contract_type.wire_name,
        contract_id=contract.id,
        contract_object_id=contract.id,
        start=contract.start,
        end=contract.end,
        keys=[(k.key_id, k.pincode, k.automat_id) for k in contract.keys if not k.in_history],
        now=now,
    )


# --- create -------------------------------------------------------------------------------


_PROGRAMMING_AUTOMATS = select(
    orm.automats.c.id,
    orm.automats.c.product,
    orm.automats.c.lifecycle_state,
    orm.automats.c.organization_unit_id,
).where(
    orm.automats.c.id.in_(bindparam("ids", expanding=True)),
    in_scope_bound(orm.automats.c.organization_unit_id),
)


def _programming_automats(
    session: Session, principal: Principal, automat_ids: Sequence[str]
) -> dict[str, Any]:
    params = {"ids": sorted(set(automat_ids)), **scope_params(principal)}
    return {row.id: row for row in session.execute(_PROGRAMMING_AUTOMATS, params)}


def _check_usable(row: Any, name: str) -> None:
    if row.lifecycle_state != LifecycleState.ACTIVE:
        raise InvalidInput(name, f"automat {row.id} is not active")
    if not Product(row.product).programs_iloq_keys:
        raise InvalidInput(
            name, f"automat {row.id} is a {row.product}, which cannot program iLOQ keys"
        )


def _automat(session: Session, principal: Principal, automat_id: str) -> Any:
    row = _programming_automats(session, principal, [automat_id]).get(automat_id)
    if row is None:
        raise InvalidInput("keyAutomatId", "does not name an automat you can use")
    _check_usable(row, "keyAutomatId")
    return row


_GROUP = select(orm.groups.c.id, orm.groups.c.type).where(
    orm.groups.c.id == bindparam("group_id"),
    in_scope_bound(orm.groups.c.organization_unit_id),
)
_MEMBERS = core.group_members(Product.KEY20)


def _check_group(session: Session, principal: Principal, group_id: str) -> None:
    """A device group the caller can use, or the 400 that says why not."""
    group = session.execute(_GROUP, {"group_id": group_id, **scope_params(principal)}).first()
    if group is None:
        raise InvalidInput("groupId", "does not name a group you can use")
    if group.type != GroupType.DEVICE:
        raise InvalidInput("groupId", "must be a device group (type 1)")


_MEMBER = _MEMBERS.where(orm.automats.c.id == bindparam("automat_id"))


def _check_member(session: Session, principal: Principal, group_id: str, automat_id: str) -> None:
    """``keyAutomatId`` given with ``groupId`` must be one of the group's usable automats."""
    _check_group(session, principal, group_id)
    if session.execute(_MEMBER, {"group_id": group_id, "automat_id": automat_id}).first() is None:
        raise InvalidInput("keyAutomatId", f"is not in group {group_id}")


def _group_members(session: Session, principal: Principal, group_id: str) -> list[str]:
    """The ids of a group's automats that can program iLOQ keys."""
    _check_group(session, principal, group_id)
    return list(session.scalars(_MEMBERS, {"group_id": group_id}))


def _slots_for_key_ids(
    session: Session, principal: Principal, new: NewContract, until: datetime
) -> list[Slot]:
    """Default/fetch with ``keyIds``: the lockers holding those keys (C4)."""
    assert new.key_ids is not None
    lk = orm.lockers
    held = {
        row.key_id: row
        for row in session.execute(
            select(lk.c.key_id, lk.c.automat_id, lk.c.locker_index).where(
                lk.c.key_id.in_(new.key_ids)
            )
        )
    }
    blocked = set(
        session.scalars(
            select(iloq_keys.c.id).where(
                iloq_keys.c.id.in_(new.key_ids), iloq_keys.c.blocked.is_(True)
            )
        )
    )
    automats = _programming_automats(session, principal, [h.automat_id for h in held.values()])
    members = set(_group_members(session, principal, new.group_id)) if new.group_id else None
    if new.key_automat_id is not None:
        _automat(session, principal, new.key_automat_id)
    slots = []
    for index, key_id in enumerate(new.key_ids):
        name = f"keyIds.{index}"
        place = held.get(key_id)
        if place is None or place.automat_id not in automats:
            raise InvalidInput(name, "is not a key stored in an automat you can use")
        if key_id in blocked:
            raise InvalidInput(name, "is blocked")
        _check_usable(automats[place.automat_id], name)
        if new.key_automat_id is not None and place.automat_id != new.key_automat_id:
            raise InvalidInput(name, f"is not stored in automat {new.key_automat_id}")
        if members is not None and place.automat_id not in members:
            raise InvalidInput(name, f"is not stored in an automat of group {new.group_id}")
        slots.append(Slot(place.automat_id, place.locker_index, key_id))
    core.lock_automats(session, [s.automat_id for s in slots])
    for index, slot in enumerate(slots):
        if not core.slot_is_free(session, slot, new.start, until, ignore_contract=None):
            raise Conflict(
                f"keyIds.{index}: the key is reserved by another contract in this period"
            )
    return slots


RANKED_FIRST = 8


def _allocate(
    session: Session,
    candidates: list[str] | None,
    new: NewContract,
    until: datetime,
    now: datetime,
    *,
    none_in_group: str = "",
) -> list[Slot]:
    """``count`` keys (or empty lockers) of one automat among ``candidates``, or among the
    members of ``new.group_id`` when None (then ``none_in_group`` is the 409 of a group
    without a usable automat) (C5, C6)."""
    want_keys = new.contract_type is not ContractType.RETURN
    count = new.key_count
    group = (new.group_id, Product.KEY20) if candidates is None and new.group_id else None
    # Only the best few are ranked: the first that can serve under the lock is
    # taken, and all of them are ranked (exactly) only when those few turned out not to.
    for limit in (RANKED_FIRST, None):
        ranked = (
            [(candidates[0], count)]
            if candidates is not None and len(candidates) == 1
            else core.rank_automats(
                session, candidates, new.start, until, want_keys=want_keys, group=group, limit=limit
            )
        )
        if not ranked and group is not None:
            raise Conflict(none_in_group)
        able = [automat_id for automat_id, available in ranked if available >= count]
        # The ranking ran unlocked; what counts is the check made under the lock. An
        # automat another creation is allocating from right now is passed over for the
        # next best (PostgreSQL: concurrent creations would otherwise all queue on the
        # top-ranked automat's row); only when every one is busy are they waited for.
        busy = []
        for automat_id in able:
            slots = _attempt(session, automat_id, new, until, now, wait=False)
            if isinstance(slots, list):
                return slots
            if slots == BUSY:
                busy.append(automat_id)
        for automat_id in busy:
            slots = _attempt(session, automat_id, new, until, now, wait=True)
            if isinstance(slots, list):
                return slots
        # The best few are ranked from a shortlist (core.rank_automats): when they
        # all fell short, rank the whole group exactly before answering 409.
        if limit is None or len(ranked) < limit:
            break
    what = "keys" if want_keys else "free lockers"
    raise Conflict(f"No automat has {count} {what} available for the requested period")


BUSY: Final = "busy"


def _attempt(
    session: Session,
    automat_id: str,
    new: NewContract,
    until: datetime,
    now: datetime,
    *,
    wait: bool,
) -> list[Slot] | Literal["busy"] | None:
    """All the keys (or empty lockers) ``new`` asks for at this automat, checked under its
    lock; None when it has too few; :data:`BUSY` when another transaction holds it and
    ``wait`` is False.

    On PostgreSQL the lock is taken in a savepoint that is rolled back when the automat
    falls short, which releases it: a transaction then waits for an automat while holding
    no other, so two creations can never wait for each other (they did, in the group race
    test, when a creation kept the lock of an automat it had found full).
    """
    if session.get_bind().dialect.name != "postgresql":
        return _free_slots(session, automat_id, new, until, now)
    savepoint = session.begin_nested()
    if wait:
        core.lock_automats(session, [automat_id])
    elif not core.try_lock_automat(session, automat_id):
        savepoint.rollback()
        return BUSY
    slots = _free_slots(session, automat_id, new, until, now)
    if slots is None:
        savepoint.rollback()
    else:
        savepoint.commit()
    return slots


def _free_slots(
    session: Session, automat_id: str, new: NewContract, until: datetime, now: datetime
) -> list[Slot] | None:
    """All the keys (or empty lockers) ``new`` asks for at this locked automat, or None."""
    count = new.key_count
    slots = (
        core.free_keys(session, automat_id, new.start, until, now, count)
        if new.contract_type is not ContractType.RETURN
        else core.free_lockers(session, automat_id, new.start, until, count)
    )
    return slots if len(slots) == count else None


_INSERT_CONTRACT = insert(c)
_INSERT_KEYS = insert(ck)


def create_contract(
    session: Session, principal: Principal, new: NewContract, *, now: datetime
) -> ContractRow:
    until = reservation_until(new.contract_type, new.end)
    returning = new.contract_type is ContractType.RETURN
    if returning:
        assert new.key_ids is not None
        registry.check_return_key_ids(new.key_ids)
    if new.key_ids is not None and not returning:
        slots = _slots_for_key_ids(session, principal, new, until)
    elif new.key_automat_id is not None:
        if new.group_id is not None:
            _check_member(session, principal, new.group_id, new.key_automat_id)
        slots = _allocate(
            session, [_automat(session, principal, new.key_automat_id).id], new, until, now
        )
    else:
        assert new.group_id is not None
        _check_group(session, principal, new.group_id)
        able = "take the keys" if returning else "program iLOQ keys"
        slots = _allocate(
            session,
            None,
            new,
            until,
            now,
            none_in_group=f"The group has no active automat that can {able}",
        )

    contract_id = new_object_id(now.timestamp())
    session.execute(
        _INSERT_CONTRACT,
        {
            "id": contract_id,
            "kind": KIND,
            "organization_unit_id": principal.organization_unit_id,
            "contract_type": int(new.contract_type),
            "start": new.start,
            "end": new.end,
            "contact": _contact_json(new.contact, new.iloq_person_id),
            "request": json.dumps(new.request, separators=(",", ":")),
            "created_at": now,
            "updated_at": now,
        },
    )
    valid_from, valid_until = pincode_window(new.contract_type, new.start, new.end)
    taken: set[tuple[str, str]] = set()
    keys: list[KeyRow] = []
    for position, slot in enumerate(slots):
        key_id = new.key_ids[position] if returning and new.key_ids else slot.key_id
        assert key_id is not None
        given = new.pincodes[position] if new.pincodes else None
        code = core.choose_pincode(
            session,
            slot.automat_id,
            given,
            valid_from,
            valid_until,
            taken=taken,
            field=f"pincodes.{position}",
        )
        core.reserve(session, contract_id, position, slot, new.start, until)
        pincode_id = devices.add_pincode(
            session,
            slot.automat_id,
            code=code,
            locker_index=slot.locker_index,
            valid_from=valid_from,
            valid_until=valid_until,
            purpose=pincode_purpose(new.contract_type),
            key_id=key_id,
            reference=contract_id,
            program_first=not returning,
        )
        keys.append(
            KeyRow(
                position=position,
                key_id=key_id,
                automat_id=slot.automat_id,
                locker_index=slot.locker_index,
                pincode=code,
                pincode_id=pincode_id,
                status=None,
                in_history=False,
                programmed_at=None,
            )
        )
    session.execute(
        _INSERT_KEYS,
        [{"contract_id": contract_id, "program_failures": 0, **asdict(key)} for key in keys],
    )
    # What was just written, as load_contract would read it back.
    contract = ContractRow(
        id=contract_id,
        organization_unit_id=principal.organization_unit_id,
        contract_type=new.contract_type,
        start=new.start.astimezone(UTC),
        end=new.end.astimezone(UTC) if new.end else None,
        contact=new.contact,
        iloq_person_id=new.iloq_person_id,
        request=new.request,
        end_evaluated_at=None,
        completed_at=None,
        keys=keys,
    )
    publish_contract_update(session, contract, now)
    view = notification_view(session, contract)
    notifications.notify(session, view, NotificationType.CONTRACT_CREATED, now=now)
    notifications.schedule_reminders(session, view, now=now)
    schedule_end(session, contract, now)
    return contract


# --- read ---------------------------------------------------------------------------------


def list_contracts(
    session: Session,
    principal: Principal,
    page: PageRequest,
    *,
    ongoing: bool | None,
    ended: bool | None,
    future: bool | None,
    now: datetime,
) -> Page[ContractRow]:
    """Filters as gaps.md C14 defines them: none given = all, several = union."""
    stmt = select(c).where(
        c.c.kind == KIND,
        c.c.deleted_at.is_(None),
        in_scope(c.c.organization_unit_id, principal),
    )
    period = contract_steps.period_condition(ongoing=ongoing, ended=ended, future=future, now=now)
    if period is not None:
        stmt = stmt.where(period)
    stmt = stmt.order_by(c.c.created_at, c.c.id).offset(page.offset).limit(page.limit + 1)
    rows = [_contract_of(row) for row in session.execute(stmt).all()]
    has_next = len(rows) > page.limit
    items = _attach_keys(session, rows[: page.limit])
    return Page(items, page.offset + len(items), page.limit, has_next)


# --- change -------------------------------------------------------------------------------

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class ContractChange:
    start: datetime | None = None
    end: datetime | None = _UNSET
    contact: Any = _UNSET  # a (Contact | None, person) pair when given

    @property
    def changes_end(self) -> bool:
        return self.end is not _UNSET

    @property
    def changes_contact(self) -> bool:
        return self.contact is not _UNSET


def parse_change(body: Any) -> ContractChange:
    if not isinstance(body, Mapping):
        raise InvalidInput("body", "must be an object")
    start = parse_time(body["start"], "start") if body.get("start") is not None else None
    end: Any = _UNSET
    if "end" in body:
        end = None if body["end"] is None else parse_time(body["end"], "end")
    contact: Any = _UNSET
    if "contact" in body:
        contact = parse_contact_input(body["contact"])
    return ContractChange(start=start, end=end, contact=contact)


def update_contract(
    session: Session,
    principal: Principal,
    contract_id: str,
    change: ContractChange,
    *,
    now: datetime,
) -> ContractRow:
    """PATCH (endpoints.md §3.5, gaps.md C15)."""
    contract = scoped_contract(session, principal, contract_id, for_update=True)
    ctype = contract.contract_type
    start = change.start if change.start is not None else contract.start
    end = contract.end
    if change.changes_end and ctype is not ContractType.FETCH:  # fetch: no end (C3)
        if change.end is None and ctype is ContractType.DEFAULT:
            raise InvalidInput("end", "is required for default contracts")
        end = change.end
    if (
        change.start is not None
        and change.start != contract.start
        and any(k.status is not None for k in contract.keys)
    ):
        raise InvalidInput("start", "cannot change once a key has been fetched or returned")
    if end is not None and end != contract.end and end <= now:
        raise InvalidInput("end", "must be in the future")
    if end is not None and end <= start:
        raise InvalidInput("end", "must be after start")

    period_changed = start != contract.start or end != contract.end
    if period_changed:
        live = [k for k in contract.keys if not k.in_history and k.automat_id is not None]
        core.lock_automats(session, [k.automat_id for k in live if k.automat_id])
        until = reservation_until(ctype, end)
        for key in live:
            assert key.automat_id is not None
            assert key.locker_index is not None
            slot = Slot(
                key.automat_id,
                key.locker_index,
                None if ctype is ContractType.RETURN else key.key_id,
            )
            if not core.slot_is_free(session, slot, start, until, ignore_contract=contract.id):
                raise Conflict("Overlapping contract")
        if contract.end_evaluated_at is None:
            core.move_reservations(session, contract.id, start, until)
        _resync_pincodes(session, contract, start, end)
    values: dict[str, Any] = {"start": start, "end": end, "updated_at": now}
    if change.changes_contact:
        contact, person = change.contact
        values["contact"] = _contact_json(contact, person)
    session.execute(update(c).where(c.c.id == contract.id).values(values))
    updated = load_contract(session, contract.id)
    if period_changed and updated.end is not None and updated.end > now:
        session.execute(update(c).where(c.c.id == contract.id).values(end_evaluated_at=None))
        updated.end_evaluated_at = None
    publish_contract_update(session, updated, now)
    view = notification_view(session, updated)
    notifications.notify(session, view, NotificationType.CONTRACT_UPDATED, now=now)
    notifications.reschedule(session, view, now=now)
    schedule_end(session, updated, now)
    return updated


def _resync_pincodes(
    session: Session, contract: ContractRow, start: datetime, end: datetime | None
) -> None:
    """New validity for the codes still in use: the automats get them in their next sync."""
    valid_from, valid_until = pincode_window(contract.contract_type, start, end)
    for key in contract.keys:
        if key.pincode_id is None or key.pincode is None or key.automat_id is None:
            continue
        assert key.locker_index is not None
        devices.remove_pincode(session, key.automat_id, key.pincode_id)
        if core.pincode_in_use(session, key.automat_id, key.pincode, valid_from, valid_until):
            raise Conflict(f"Pincode of key {key.key_id} is in use by another contract then")
        pincode_id = devices.add_pincode(
            session,
            key.automat_id,
            code=key.pincode,
            locker_index=key.locker_index,
            valid_from=valid_from,
            valid_until=valid_until,
            purpose=pincode_purpose(contract.contract_type),
            key_id=key.key_id,
            reference=contract.id,
            program_first=contract.contract_type is not ContractType.RETURN,
        )
        session.execute(
            update(ck)
            .where(ck.c.contract_id == contract.id, ck.c.position == key.position)
            .values(pincode_id=pincode_id)
        )


def delete_contract(
    session: Session, principal: Principal, contract_id: str, *, now: datetime
) -> None:
    """DELETE (endpoints.md §3.6, gaps.md C16): refused in half-finished states."""
    contract = scoped_contract(session, principal, contract_id, for_update=True)
    reason = delete_refusal(contract.contract_type, [k.status for k in contract.keys])
    if reason is not None:
        raise InvalidInput("id", f"Contract cannot be deleted: {reason}")
    contract_steps.lock_automats_of(session, contract.keys)
    for key in contract.keys:
        if key.pincode_id is not None and key.automat_id is not None:
            devices.remove_pincode(session, key.automat_id, key.pincode_id)
    # A deleted contract blocks nothing, not even its past: the whole reservation goes.
    core.release(session, contract.id, None, contract.start)
    session.execute(
        update(ck).where(ck.c.contract_id == contract.id).values(pincode=None, pincode_id=None)
    )
    session.execute(update(c).where(c.c.id == contract.id).values(deleted_at=now, updated_at=now))
    notifications.cancel_reminders(session, contract.id)
    contract_steps.cancel_end(session, contract.id)


def automat_in_use(session: Session, automat: Any) -> str | None:
    """Uninstall guard (gaps.md D3): ongoing or future contracts still reserve this automat."""
    r = contract_reservations
    row = session.execute(
        select(r.c.contract_id)
        .join(c, c.c.id == r.c.contract_id)
        .where(
            r.c.automat_id == automat.id, c.c.deleted_at.is_(None), r.c.until > datetime.now(UTC)
        )
        .limit(1)
    ).first()
    if row is None:
        return None
    return f"contract {row.contract_id} still uses this automat"
