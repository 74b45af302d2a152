"""Steps every contract kind takes the same way, on the shared contract tables.

iLOQ and mechanical contracts keep their own row types; these functions ask
only for the attributes they read, so both kinds call the one implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, bindparam, false, or_, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters.orm_contracts import contract_keys, contracts
from keyautomat.domain import webhooks as wh
from keyautomat.service_layer import contracts as core
from keyautomat.service_layer import devices, outbox, webhooks

# The end evaluation (C12) of every kind is an outbox row due at ``end``:
# indexed, and run once; bootstrap routes it by the contract's kind.
END_KIND = "contract-end"
END_KINDS = (END_KIND,)

# Built once, with bind parameters: a statement built per call cost several times
# what executing it does. ``set_key`` builds one statement per set of columns it
# is asked to set, on first use.
_SET_KEY_WHERE = update(contract_keys).where(
    contract_keys.c.contract_id == bindparam("b_contract_id"),
    contract_keys.c.position == bindparam("b_position"),
)
_set_key: dict[tuple[str, ...], Any] = {}
_OPEN_KEY = select(contract_keys.c.position).where(
    contract_keys.c.contract_id == bindparam("contract_id"), contract_keys.c.in_history.is_(False)
)
_CLAIM_END = (
    update(contracts)
    .where(
        contracts.c.id == bindparam("b_contract_id"),
        contracts.c.end_evaluated_at.is_(None),
        contracts.c.deleted_at.is_(None),
    )
    .values(end_evaluated_at=bindparam("b_now", type_=contracts.c.end_evaluated_at.type))
)
_COMPLETE = (
    update(contracts)
    .where(contracts.c.id == bindparam("b_contract_id"), contracts.c.completed_at.is_(None))
    .values(completed_at=bindparam("b_at", type_=contracts.c.completed_at.type))
)


class ContractLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime | None: ...
    @property
    def end_evaluated_at(self) -> datetime | None: ...


class KeyLike(Protocol):
    @property
    def position(self) -> int: ...
    @property
    def key_id(self) -> str: ...
    @property
    def automat_id(self) -> str | None: ...
    @property
    def locker_index(self) -> int | None: ...
    @property
    def pincode(self) -> str | None: ...
    @property
    def pincode_id(self) -> str | None: ...


def end_ref(contract_id: str) -> str:
    return f"contract:{contract_id}:end"


def schedule_end(session: Session, contract: ContractLike, now: datetime) -> None:
    """(Re)plan the end evaluation at ``end``; nothing for an open end or one done already."""
    cancel_end(session, contract.id)
    if contract.end is not None and contract.end_evaluated_at is None:
        outbox.enqueue(
            session,
            END_KIND,
            {"contractId": contract.id},
            now=now,
            due_at=contract.end,
            ref=end_ref(contract.id),
        )


def cancel_end(session: Session, contract_id: str) -> None:
    outbox.cancel(session, ref=end_ref(contract_id), kinds=END_KINDS)


def claim_end(session: Session, contract_id: str, now: datetime) -> bool:
    """Mark the end evaluation as done; True only for the one caller that marked it (C12:
    once), False for a contract evaluated, or deleted, already."""
    claimed = session.execute(_CLAIM_END, {"b_contract_id": contract_id, "b_now": now})
    return bool(claimed.rowcount)  # type: ignore[attr-defined]


def lock_automats_of(session: Session, keys: Iterable[KeyLike]) -> None:
    """Lock the keys' automats before any pincode of theirs changes.

    Creation takes an automat's row first and its pincodes after; releasing a
    reservation updates the automat's booked count (migration 0012). Paths that
    remove pincodes and release (end evaluation, DELETE) taking them the other way
    round could deadlock with a creation on PostgreSQL.
    """
    core.lock_automats(session, [k.automat_id for k in keys if k.automat_id])


def publish_key_updates(
    session: Session,
    *,
    organization_unit_id: str,
    contract_type: str,
    contract_id: str,
    contract_object_id: str,
    start: datetime,
    end: datetime | None,
    keys: Iterable[tuple[str, str | None, str | None]],
    now: datetime,
) -> None:
    """One ``contract-update`` per (key id, pincode, device id) (webhooks.md §5.2)."""
    for key_id, pincode, device_id in keys:
        webhooks.publish(
            session,
            organization_unit_id=organization_unit_id,
            event_type=wh.EventType.CONTRACT_UPDATE,
            data=wh.contract_update_data(
                contract_type=contract_type,
                contract_id=contract_id,
                contract_object_id=contract_object_id,
                key_id=key_id,
                start=start,
                end=end,
                pincode=pincode,
                device_id=device_id,
            ),
            occurred_at=now,
            now=now,
        )


def set_key(session: Session, contract_id: str, key: KeyLike, **values: Any) -> None:
    columns = tuple(sorted(values))
    stmt = _set_key.get(columns)
    if stmt is None:
        stmt = _SET_KEY_WHERE.values({c: bindparam(f"v_{c}") for c in columns})
        _set_key[columns] = stmt
    params = {f"v_{c}": v for c, v in values.items()}
    session.execute(stmt, {**params, "b_contract_id": contract_id, "b_position": key.position})


def complete_if_done(session: Session, contract_id: str, at: datetime) -> None:
    """A contract none of whose keys is left outside its history is complete."""
    open_key = session.execute(_OPEN_KEY, {"contract_id": contract_id}).first()
    if open_key is None:
        session.execute(_COMPLETE, {"b_contract_id": contract_id, "b_at": at})


def reopen_for_return(session: Session, contract: ContractLike, key: KeyLike) -> None:
    """A key still out after the end: its code keeps opening its locker for the return."""
    if key.pincode_id is None or key.automat_id is None or key.pincode is None:
        return
    assert key.locker_index is not None
    devices.remove_pincode(session, key.automat_id, key.pincode_id)
    pincode_id = devices.add_pincode(
        session,
        key.automat_id,
        code=key.pincode,
        locker_index=key.locker_index,
        valid_from=contract.start,
        valid_until=None,
        purpose="return",
        key_id=key.key_id,
        reference=contract.id,
    )
    set_key(session, contract.id, key, pincode_id=pincode_id)


def period_condition(
    *, ongoing: bool | None, ended: bool | None, future: bool | None, now: datetime
) -> ColumnElement[bool] | None:
    """The list filters of gaps.md C14 on the ``contracts`` table.

    None given: no condition (all contracts). Several true: their union. All
    given as false: a condition nothing satisfies.
    """
    if ongoing is None and ended is None and future is None:
        return None
    c = contracts.c
    parts: list[ColumnElement[bool]] = []
    if future:
        parts.append(c.start > now)
    if ongoing:
        parts.append(
            and_(c.start <= now, or_(c.end.is_(None), c.end > now), c.completed_at.is_(None))
        )
    if ended:
        parts.append(or_(c.end <= now, c.completed_at.is_not(None)))
    return or_(*parts) if parts else false()
