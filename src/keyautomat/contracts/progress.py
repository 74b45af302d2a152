"""What happens to contract keys after creation, for every kind: the automats' events, the
fetch and the return, and the end of a contract (gaps.md C9-C13, F8-F11).

:func:`on_automat_event` runs in the transaction that applies a device event
(after the key registers have moved their keys): one lookup finds the contract
key the event is about, whatever its kind, and the kind adds its own steps
through its hooks (``kind.py``). Staff handovers of manual-storage keys call
:func:`fetched` and :func:`returned` the same way. :func:`evaluate_end` is the
one ``contract-end`` job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keyautomat.contracts import overdue, rules, succession
from keyautomat.contracts.kind import ContractKind, Kinds
from keyautomat.contracts.model import CodeGrant, Contract, ContractKey
from keyautomat.contracts.rules import OPEN_END, KeyStatus
from keyautomat.contracts.service import notification_view, publish_status
from keyautomat.contracts.store import ContractStore, KeyRef
from keyautomat.domain import webhooks as wh
from keyautomat.domain.devices import AutomatEvent, AutomatEventType, PincodePurpose, code_type_for
from keyautomat.domain.notifications import ContractView, NotificationType
from keyautomat.service_layer.notifications import HOLDS, Condition


def _load(store: ContractStore, ref: KeyRef | None) -> tuple[Contract, ContractKey] | None:
    if ref is None:
        return None
    contract = store.load(ref.contract_id)
    if contract is None:
        return None
    return contract, contract.key_at(ref.position)


# --- the steps -----------------------------------------------------------------------------


def retire(
    store: ContractStore, contract: Contract, key: ContractKey, *, history: bool = True
) -> None:
    """The key's code goes for good; with ``history`` the contract is done with the key
    (C13), without it the key is still due back (its locker was freed at the fetch)."""
    if key.pincode_id is not None and key.automat_id is not None:
        store.remove_pincode(key.automat_id, key.pincode_id)
    key.pincode = key.pincode_id = None
    values: dict[str, Any] = {"pincode": None, "pincode_id": None}
    if history:
        key.in_history = values["in_history"] = True
    store.set_key(contract.id, key.position, **values)


def _notify(
    store: ContractStore,
    kind: ContractKind[Any],
    contract: Contract,
    type_: NotificationType,
    key: ContractKey,
    at: datetime,
) -> None:
    view = notification_view(store, kind, contract)
    store.notify(view, type_, now=at, key_id=key.key_id, event=at.isoformat())


def fetched(
    store: ContractStore,
    kind: ContractKind[Any],
    contract: Contract,
    key: ContractKey,
    at: datetime,
) -> None:
    """The user has the key (taken from its locker, or handed over by staff)."""
    key.status = KeyStatus.FETCHED
    store.set_key(contract.id, key.position, status=KeyStatus.FETCHED.value, fetched_at=at)
    if key.in_automat and rules.fetch_frees_locker(
        contract.contract_type, contract.free_locker_after_fetch
    ):
        # The locker is free at once; the code that opened it opens nothing any more.
        retire(store, contract, key, history=rules.fetch_completes(contract.contract_type))
        store.release(contract.id, key.position, at)
    kind.after_fetch(store, contract, key, at)
    if key.in_history:
        store.complete_if_done(contract.id, at)
    # The key is out now: the next contracts' codes for it wait until it is back.
    succession.hold_others(store, contract, key, at)
    publish_status(store, contract, key, KeyStatus.FETCHED, at)
    _notify(store, kind, contract, NotificationType.CONTRACT_KEY_FETCHED, key, at)


def returned(
    store: ContractStore,
    kind: ContractKind[Any],
    contract: Contract,
    key: ContractKey,
    at: datetime,
    locker_index: int | None = None,
) -> None:
    """The key is back: in ``locker_index`` of its automat, or with staff (None)."""
    before = key.status
    values: dict[str, Any] = {
        "status": KeyStatus.RETURNED.value,
        "returned_at": at,
        "opened_at": None,
    }
    moved = locker_index is not None and locker_index != key.locker_index
    if moved:
        values["locker_index"] = locker_index
    key.status, key.opened_at = KeyStatus.RETURNED, None
    store.set_key(contract.id, key.position, **values)
    locker_freed = key.in_automat and contract.free_locker_after_fetch
    if rules.return_ends_custody(
        contract.contract_type,
        before,
        end_evaluated=contract.end_evaluated_at is not None,
        locker_freed=locker_freed,
    ):
        retire(store, contract, key)
        store.release(contract.id, key.position, at)
        store.complete_if_done(contract.id, at)
    kind.after_return(store, contract, key, locker_index, at)
    publish_status(store, contract, key, KeyStatus.RETURNED, at, locker_index)
    _notify(store, kind, contract, NotificationType.CONTRACT_KEY_RETURNED, key, at)
    if key.in_automat and locker_index is not None:
        # The next contracts waiting for the key get their codes, for the locker it is in.
        succession.offer(store, {kind.name: kind}, key, locker_index, at)


# --- device events -------------------------------------------------------------------------


def on_automat_event(store: ContractStore, kinds: Kinds, event: AutomatEvent) -> None:
    """Contract progress from one device event, in the transaction that records it."""
    if event.type == AutomatEventType.CODE_ENTERED:
        _code_entered(store, kinds, event)
    elif event.type == AutomatEventType.KEY_REMOVED:
        _key_removed(store, kinds, event)
    elif event.type == AutomatEventType.KEY_INSERTED:
        _key_inserted(store, kinds, event)


def _code_entered(store: ContractStore, kinds: Kinds, event: AutomatEvent) -> None:
    pincode_id = event.data.get("pincodeId")
    if not isinstance(pincode_id, str) or event.code is None:
        return
    found = _load(store, store.key_with_code(pincode_id))
    if found is None:
        return
    contract, key = found
    at = event.occurred_at
    store.link_event(event.id, contract.id)
    kinds[contract.kind].on_code_entered(store, contract, key, at)
    returning = contract.contract_type is rules.ContractType.RETURN
    store.publish(
        contract.organization_unit_id,
        wh.EventType.CODE_ENTERED,
        wh.code_entered_data(
            code_type=code_type_for(rules.code_type_name(contract.contract_type)),
            code=event.code,
            device_id=event.automat_id,
            locker_index=key.locker_index,
            key_id=key.key_id,
            # webhooks.md §5.3: return codes carry no contractId.
            contract_id=None if returning else contract.public_id,
            contract_object_id=contract.id,
        ),
        at,
    )


def _key_removed(store: ContractStore, kinds: Kinds, event: AutomatEvent) -> None:
    if event.locker_index is None:
        return
    found = _load(store, store.key_to_fetch(event.automat_id, event.locker_index))
    if found is None:
        return
    contract, key = found
    kind = kinds[contract.kind]
    if kind.reported_key_matches(store, contract, key, event):
        store.link_event(event.id, contract.id)
        fetched(store, kind, contract, key, event.occurred_at)


def _key_inserted(store: ContractStore, kinds: Kinds, event: AutomatEvent) -> None:
    if event.locker_index is None:
        return
    found = _load(store, store.key_to_return(event.automat_id, event.locker_index))
    if found is None:
        return
    contract, key = found
    if key.automat_id != event.automat_id:
        return
    if not contract.free_locker_after_fetch and key.locker_index != event.locker_index:
        return  # its locker is kept for it: another locker is a misplacement, not a return
    kind = kinds[contract.kind]
    if kind.returned_key_matches(store, contract, key, event):
        store.link_event(event.id, contract.id)
        returned(store, kind, contract, key, event.occurred_at, event.locker_index)


# --- the end of a contract -----------------------------------------------------------------


def reopen_for_return(store: ContractStore, contract: Contract, key: ContractKey) -> None:
    """A key still out after the end: its code keeps opening its locker for the return."""
    if key.pincode_id is None or key.automat_id is None or key.pincode is None:
        return
    store.remove_pincode(key.automat_id, key.pincode_id)
    grant = CodeGrant.for_key(contract, key, (contract.start, None), PincodePurpose.RETURN)
    key.pincode_id = store.add_pincode(grant)
    store.set_key(contract.id, key.position, pincode_id=key.pincode_id)


def evaluate_end(store: ContractStore, contract_id: str, now: datetime) -> int:
    """C12: at ``end``, keys never fetched become key-not-fetched and keys still out (or a
    return contract's keys not brought back) key-not-returned, once. Returns how many."""
    if not store.claim_end(contract_id, now):
        return 0
    contract = store.load(contract_id)
    assert contract is not None
    assert contract.end is not None
    at = contract.end
    store.lock_automats(k.automat_id for k in contract.keys)
    changed = 0
    for key in contract.keys:
        outcome = rules.end_outcome(contract.contract_type, key.status, key.in_history)
        if outcome is None:
            if not key.in_history:
                retire(store, contract, key)  # back in place: done
            continue
        changed += 1
        key.status = outcome
        store.set_key(contract.id, key.position, status=outcome.value)
        if outcome is KeyStatus.NOT_FETCHED or contract.contract_type is rules.ContractType.RETURN:
            retire(store, contract, key)
            store.release(contract.id, key.position, at)
        elif rules.keeps_locker_while_out(key.in_automat, contract.free_locker_after_fetch):
            # Still out: the locker waits for it, and its code opens it for the return.
            store.hold_until(contract.id, key.position, OPEN_END)
            reopen_for_return(store, contract, key)
        publish_status(store, contract, key, outcome, at)
    overdue.plan(store, contract, now)
    store.complete_if_done(contract.id, now)
    store.close_ended(contract.id, max(now, at))  # the end is reached: it runs now
    return changed


# --- scheduled messages --------------------------------------------------------------------


def condition(store: ContractStore, view: ContractView, type_: NotificationType) -> Condition:
    """Scheduled messages fire only while they still make sense (notifications.md §2). A
    view with no stored contract behind it (sent by other code) is not second-guessed."""
    deleted = store.deleted(view.contract_id)
    if deleted is None:
        return HOLDS
    if deleted:
        return Condition(holds=False, reason="contract deleted")
    if type_ is NotificationType.CONTRACT_START_REMINDER:
        return HOLDS
    contract = store.load(view.contract_id)
    assert contract is not None
    missing = tuple(
        k.key_id
        for k in contract.keys
        if rules.is_out(contract.contract_type, k.status, k.in_history)
    )
    if not missing:
        return Condition(holds=False, reason="every key is back")
    return Condition(holds=True, missing_key_ids=missing)
