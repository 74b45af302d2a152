"""What happens to mechanical contract keys: handover at key30 automats, staff handovers of
manual-storage keys (F11), and the end of a contract (docs/mechanical-contracts.md).

* :func:`on_automat_event` runs in the transaction that applies a device event,
  after the key register (``mechanical_keys``) has moved the key. A contract's
  code opening the locker marks the key (``contract_keys.programmed_at`` is the
  "opened by its code" time: key30 automats program nothing); the key leaving
  that locker afterwards is the fetch. The key coming back into its locker, or
  with ``freeLockerAfterFetch`` into any locker of its selected automat (F10),
  is the return.
* :func:`record_handover` / :func:`record_return`: staff at a manual storage.
* :func:`evaluate_end` answers the shared ``contract-end`` job for this kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyautomat.adapters.orm_contracts import contract_keys, contracts
from keyautomat.adapters.orm_mechanical import mechanical_keys as mk
from keyautomat.domain import webhooks as wh
from keyautomat.domain.contracts import OPEN_END, KeyStatus
from keyautomat.domain.devices import AutomatEvent, AutomatEventType, code_type_for
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.mechanical import Storage
from keyautomat.domain.notifications import ContractKind, ContractView, NotificationType
from keyautomat.service_layer import contract_steps, devices, notifications, webhooks
from keyautomat.service_layer import contracts as core
from keyautomat.service_layer.iloq_progress import condition as shared_condition
from keyautomat.service_layer.mechanical_contracts import (
    KIND,
    ContractRow,
    KeyRow,
    load_contract,
    notification_view,
    scoped_contract,
)
from keyautomat.service_layer.principal import Principal

c = contracts
ck = contract_keys


def _retire(session: Session, contract: ContractRow, key: KeyRow) -> None:
    """The key is done with this contract: its code goes and it is history."""
    if key.pincode_id is not None and key.automat_id is not None:
        devices.remove_pincode(session, key.automat_id, key.pincode_id)
    contract_steps.set_key(session, contract.id, key, pincode_id=None, in_history=True)


def _publish(
    session: Session,
    contract: ContractRow,
    key: KeyRow,
    state: KeyStatus,
    at: datetime,
    locker_index: int | None = None,
) -> None:
    device = key.automat_id is not None
    webhooks.publish(
        session,
        organization_unit_id=contract.organization_unit_id,
        event_type=wh.EventType.KEY_STATUS,
        data=wh.key_status_data(
            state=state.value,
            key_id=key.key_id,
            contract_id=contract.public_id,
            contract_object_id=contract.id,
            device_id=key.automat_id if device else None,
            locker_index=(locker_index if locker_index is not None else key.locker_index)
            if device
            else None,
        ),
        occurred_at=at,
        now=at,
    )


def _notify(
    session: Session, contract: ContractRow, type_: NotificationType, key: KeyRow, at: datetime
) -> None:
    view = notification_view(session, load_contract(session, contract.id))
    notifications.notify(session, view, type_, now=at, key_id=key.key_id, event=at.isoformat())


def fetched(session: Session, contract: ContractRow, key: KeyRow, at: datetime) -> None:
    contract_steps.set_key(session, contract.id, key, status=KeyStatus.FETCHED.value, fetched_at=at)
    if contract.free_locker_after_fetch and key.automat_id is not None:
        # F10: the locker is free at once; the key comes back into any free locker.
        if key.pincode_id is not None:
            devices.remove_pincode(session, key.automat_id, key.pincode_id)
        contract_steps.set_key(session, contract.id, key, pincode_id=None)
        core.release(session, contract.id, key.position, at)
    _publish(session, contract, key, KeyStatus.FETCHED, at)
    _notify(session, contract, NotificationType.CONTRACT_KEY_FETCHED, key, at)


def returned(
    session: Session,
    contract: ContractRow,
    key: KeyRow,
    at: datetime,
    locker_index: int | None = None,
) -> None:
    late = key.status == KeyStatus.NOT_RETURNED
    values: dict[str, Any] = {
        "status": KeyStatus.RETURNED.value,
        "returned_at": at,
        "programmed_at": None,
    }
    moved = locker_index is not None and locker_index != key.locker_index
    if moved:
        values["locker_index"] = locker_index
    contract_steps.set_key(session, contract.id, key, **values)
    ended = contract.end_evaluated_at is not None
    if late or ended or (contract.free_locker_after_fetch and key.automat_id is not None):
        # Back after the end, or into a freed locker: this contract is done with the key.
        _retire(session, contract, key)
        core.release(session, contract.id, key.position, at)
        contract_steps.complete_if_done(session, contract.id, at)
    _publish(session, contract, key, KeyStatus.RETURNED, at, locker_index)
    _notify(session, contract, NotificationType.CONTRACT_KEY_RETURNED, key, at)


# --- device events --------------------------------------------------------------------------


def _contract_key(session: Session, *conditions: Any) -> tuple[ContractRow, KeyRow] | None:
    row = session.execute(
        select(ck.c.contract_id, ck.c.position)
        .join(c, c.c.id == ck.c.contract_id)
        .where(
            c.c.kind == KIND,
            c.c.deleted_at.is_(None),
            ck.c.in_history.is_(False),
            *conditions,
        )
        .order_by(c.c.start)
        .limit(1)
    ).first()
    if row is None:
        return None
    contract = load_contract(session, row.contract_id)
    return contract, next(k for k in contract.keys if k.position == row.position)


def on_automat_event(session: Session, event: AutomatEvent) -> None:
    """Registered in ``devices.event_handlers`` after the key register's handler."""
    if event.type == AutomatEventType.CODE_ENTERED:
        _code_entered(session, event)
    elif event.type == AutomatEventType.KEY_REMOVED:
        _key_removed(session, event)
    elif event.type == AutomatEventType.KEY_INSERTED:
        _key_inserted(session, event)


def _code_entered(session: Session, event: AutomatEvent) -> None:
    pincode_id = event.data.get("pincodeId")
    if pincode_id is None or event.code is None:
        return
    found = _contract_key(session, ck.c.pincode_id == pincode_id)
    if found is None:
        return
    contract, key = found
    at = event.occurred_at
    if key.status in (None, KeyStatus.RETURNED.value):
        contract_steps.set_key(session, contract.id, key, programmed_at=at)  # opened by its code
    webhooks.publish(
        session,
        organization_unit_id=contract.organization_unit_id,
        event_type=wh.EventType.CODE_ENTERED,
        data=wh.code_entered_data(
            code_type=code_type_for("default"),
            code=event.code,
            device_id=event.automat_id,
            locker_index=key.locker_index,
            key_id=key.key_id,
            contract_id=contract.public_id,
            contract_object_id=contract.id,
        ),
        occurred_at=at,
        now=at,
    )


def _key_removed(session: Session, event: AutomatEvent) -> None:
    if event.locker_index is None:
        return
    found = _contract_key(
        session,
        ck.c.automat_id == event.automat_id,
        ck.c.locker_index == event.locker_index,
        ck.c.programmed_at.is_not(None),
        ck.c.status.is_(None) | (ck.c.status == KeyStatus.RETURNED.value),
    )
    if found is None:
        return
    contract, key = found
    if event.key_id is not None and event.key_id != key.key_id:
        rfid = session.scalar(select(mk.c.rfid_hex).where(mk.c.object_id == key.object_id))
        reported = event.data.get("rfid")
        if not (rfid and isinstance(reported, str) and reported.upper() == rfid):
            return
    fetched(session, contract, key, event.occurred_at)


def _key_inserted(session: Session, event: AutomatEvent) -> None:
    if event.locker_index is None:
        return
    # The register has placed the key already (by id or RFID): which one went in?
    object_id = session.scalar(
        select(mk.c.object_id).where(
            mk.c.stored_automat_id == event.automat_id,
            mk.c.stored_locker_index == event.locker_index,
        )
    )
    if object_id is None:
        return
    found = _contract_key(
        session,
        ck.c.key_id == object_id,
        ck.c.status.in_([KeyStatus.FETCHED.value, KeyStatus.NOT_RETURNED.value]),
    )
    if found is None:
        return
    contract, key = found
    if key.automat_id != event.automat_id:
        return
    if not contract.free_locker_after_fetch and key.locker_index != event.locker_index:
        # Its locker is kept for it; another locker is a misplacement, not a return.
        return
    returned(session, contract, key, event.occurred_at, event.locker_index)


# --- staff handovers at a manual storage (F11) ----------------------------------------------


def _manual_key(
    session: Session, principal: Principal, contract_id: str, key_id: str
) -> tuple[ContractRow, KeyRow]:
    contract = scoped_contract(session, principal, contract_id, for_update=True)
    key = next((k for k in contract.keys if k.key_id == key_id), None)
    if key is None:
        raise NotFound("Contract key")
    if key.is_device:
        raise InvalidInput("keyId", "is handed over at its automat, not by staff")
    return contract, key


def record_handover(
    session: Session, principal: Principal, contract_id: str, key_id: str, *, now: datetime
) -> ContractRow:
    contract, key = _manual_key(session, principal, contract_id, key_id)
    if key.in_history or key.status not in (None, KeyStatus.RETURNED.value):
        raise InvalidInput("keyId", "is not waiting to be handed over")
    if now < contract.start or (contract.end is not None and now >= contract.end):
        raise InvalidInput("keyId", "the contract is not ongoing")
    if contract.awaiting_signature:
        raise InvalidInput("keyId", "the contract has not been signed yet")
    session.execute(
        update(mk)
        .where(mk.c.object_id == key.object_id)
        .values(stored_automat_id=None, stored_locker_index=None, stored_manual_info=None)
    )
    fetched(session, contract, key, now)
    return load_contract(session, contract.id)


def record_return(
    session: Session, principal: Principal, contract_id: str, key_id: str, *, now: datetime
) -> ContractRow:
    contract, key = _manual_key(session, principal, contract_id, key_id)
    if key.status not in (KeyStatus.FETCHED.value, KeyStatus.NOT_RETURNED.value):
        raise InvalidInput("keyId", "has not been handed over")
    home = session.scalar(select(mk.c.selected_manual_info).where(mk.c.object_id == key.object_id))
    place = key.manual_info or home
    if place is not None:
        storage = Storage.manual(place)
        session.execute(
            update(mk)
            .where(mk.c.object_id == key.object_id)
            .values(stored_manual_info=storage.manual_info)
        )
    returned(session, contract, key, now)
    return load_contract(session, contract.id)


# --- end ------------------------------------------------------------------------------------


def evaluate_end(session: Session, contract_id: str, now: datetime) -> int:
    """At ``end``: never fetched → key-not-fetched, still out → key-not-returned, once."""
    if not contract_steps.claim_end(session, contract_id, now):
        return 0
    contract = load_contract(session, contract_id)
    assert contract.end is not None
    at = contract.end
    contract_steps.lock_automats_of(session, contract.keys)
    changed = 0
    for key in contract.keys:
        if key.in_history:
            continue
        if key.status is None:
            changed += 1
            contract_steps.set_key(session, contract.id, key, status=KeyStatus.NOT_FETCHED.value)
            _retire(session, contract, key)
            core.release(session, contract.id, key.position, at)
            _publish(session, contract, key, KeyStatus.NOT_FETCHED, at)
        elif key.status == KeyStatus.FETCHED:
            changed += 1
            contract_steps.set_key(session, contract.id, key, status=KeyStatus.NOT_RETURNED.value)
            if key.is_device and not contract.free_locker_after_fetch:
                # Still out: its locker waits, and its code keeps opening it for the return.
                core.set_reservation_until(session, contract.id, key.position, OPEN_END)
                contract_steps.reopen_for_return(session, contract, key)
            _publish(session, contract, key, KeyStatus.NOT_RETURNED, at)
        else:  # returned and back in place: done
            _retire(session, contract, key)
    contract_steps.complete_if_done(session, contract.id, now)
    core.close_ended(session, contract.id, max(now, at))  # the end is reached: it runs now
    return changed


def condition(
    session: Session, view: ContractView, type_: NotificationType
) -> notifications.Condition:
    """Reminders of mechanical contracts: the shared checker (it reads only the contract core);
    a view with no stored contract behind it (sent by other code) is not second-guessed."""
    if session.scalar(select(c.c.id).where(c.c.id == view.contract_id)) is None:
        return notifications.HOLDS
    return shared_condition(session, view, type_)


def install() -> None:
    notifications.register_condition_checker(ContractKind.MECHANICAL, condition)
    if on_automat_event not in devices.event_handlers:
        devices.event_handlers.append(on_automat_event)
