"""Back-to-back bookings: a key booked by the next contract while the previous contract's
user still holds it (docs/contracts.md, "Back to back").

A contract's code opens only the locker its key is in, and only once the key is
there. So the code of a contract whose key is out with someone else is *held*: it
stays the contract's (shown in the API, taken for other contracts on that
automat) but is off the automat (``contract_keys.held_since``).

* :func:`hold_others`: a key leaves its locker with one contract's user; every
  other contract's code for that key comes off the automat.
* ``service.create``: a contract booked while its key is out starts held.
* :func:`offer`: the key is back in a locker of its automat; the held codes go on
  for that locker. A key back in another locker (``freeLockerAfterFetch``, F10)
  takes its contracts with it: their key, reservation and code move there.
* :func:`check_late`: the ``contract-key-late`` job at a held contract's start;
  the key is still out, so the contract's contact (``contractKeyDelayed``), its
  integration (``key-status`` ``key-delayed``) and the unit's staff (notice
  ``keyDelayed``) are told, once. When the key then comes back, the contact gets
  ``contractKeyAvailable`` and the integration a ``contract-update``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from keyautomat.contracts import rules, service
from keyautomat.contracts.kind import Kinds
from keyautomat.contracts.model import Contract, ContractKey, Slot
from keyautomat.contracts.rules import KeyStatus
from keyautomat.contracts.store import ContractStore
from keyautomat.domain import webhooks as wh
from keyautomat.domain.notifications import NotificationType
from keyautomat.service_layer.admin_notices import KEY_DELAYED

log = logging.getLogger(__name__)

DELAYED = "key-delayed"  # the key-status state of our own (docs/webhooks.md)


def _uses(
    store: ContractStore, stored_id: str, *, but: str | None = None
) -> list[tuple[Contract, ContractKey]]:
    """The contract keys of this key not yet done with, by their contract's start."""
    found = []
    for ref in store.key_refs(stored_id):
        if ref.contract_id == but:
            continue
        contract = store.load(ref.contract_id)
        if contract is not None:
            found.append((contract, contract.key_at(ref.position)))
    return found


def hold(store: ContractStore, contract: Contract, key: ContractKey, at: datetime) -> None:
    """The key is out with another contract: its code leaves the automat until it is back,
    and the contract's start will check whether it is (:func:`check_late`)."""
    if key.pincode_id is not None and key.automat_id is not None:
        store.remove_pincode(key.automat_id, key.pincode_id)
    key.pincode_id, key.held_since = None, at
    store.set_key(contract.id, key.position, pincode_id=None, held_since=at)
    service.schedule_late_check(store, contract, key, at)


def hold_others(store: ContractStore, contract: Contract, key: ContractKey, at: datetime) -> None:
    """``key`` just left its locker with ``contract``'s user: the other contracts waiting
    for it at that automat (their code on it, or due on it after a signature) hold."""
    if key.automat_id is None:
        return
    for other, theirs in _uses(store, key.stored_id, but=contract.id):
        if (
            theirs.automat_id == key.automat_id
            and theirs.pincode is not None
            and theirs.held_since is None
            and theirs.status in (None, KeyStatus.RETURNED)
            and other.contract_type is not rules.ContractType.RETURN
        ):
            hold(store, other, theirs, at)


def _follow(store: ContractStore, contract: Contract, key: ContractKey, locker_index: int) -> bool:
    """The key came back into another locker of its automat: the contract's key and what it
    reserves move there, unless another contract holds that locker over its period."""
    assert key.automat_id is not None
    until = rules.reservation_until(contract.contract_type, contract.end)
    if not store.slot_is_free(
        Slot(key.automat_id, locker_index, None),
        contract.start,
        until,
        ignore_contract=contract.id,
    ):
        log.warning(
            "key %s is back in locker %s/%s, which contract %s cannot take: its code stays held",
            key.key_id,
            key.automat_id,
            locker_index,
            contract.id,
        )
        return False
    store.move_key(contract.id, key.position, locker_index)
    key.locker_index = locker_index
    return True


def offer(
    store: ContractStore, kinds: Kinds, key: ContractKey, locker_index: int, at: datetime
) -> None:
    """``key`` is back in ``locker_index`` of its automat: the contracts holding a code for
    it get the code on the automat now, for that locker."""
    for contract, held in _uses(store, key.stored_id):
        if held.held_since is None or held.automat_id != key.automat_id:
            continue
        if contract.kind not in kinds:
            continue  # key ids of kinds are apart: never another kind's key
        if held.locker_index != locker_index and not _follow(store, contract, held, locker_index):
            continue
        _release(store, kinds, contract, held, at)


def _release(
    store: ContractStore, kinds: Kinds, contract: Contract, key: ContractKey, at: datetime
) -> None:
    kind = kinds[contract.kind]
    held_since = key.held_since
    assert key.automat_id is not None
    assert key.pincode is not None
    assert held_since is not None
    window = rules.pincode_window(contract.contract_type, contract.start, contract.end)
    recoded = service.code_taken(
        store, kind, key.automat_id, key.pincode, window, ignore_contract=contract.id
    )
    if recoded:
        # Taken meanwhile by a code that does not check contracts (rare): a fresh one, told.
        key.pincode = service.choose_pincode(
            store, kind, key.automat_id, None, window, taken=set(), field="pincode"
        )
    key.held_since = None
    if not contract.awaiting_verification:
        service.put_code_on_automat(store, kind, contract, key)
    store.set_key(
        contract.id, key.position, pincode=key.pincode, pincode_id=key.pincode_id, held_since=None
    )
    started = contract.start <= at
    if not (started or recoded):
        return  # nobody was told anything: the code the contact has works from its start
    occasion = f"{contract.id}:{key.position}:{held_since.isoformat()}"
    service.publish_key_update(store, contract, key, at, once=f"key-available:{occasion}")
    view = service.notification_view(store, kind, contract)
    type_ = (
        NotificationType.CONTRACT_KEY_AVAILABLE if started else NotificationType.CONTRACT_UPDATED
    )
    store.notify(
        view, type_, now=at, key_id=key.key_id, event=f"available:{held_since.isoformat()}"
    )


def _holder(store: ContractStore, key: ContractKey) -> tuple[Contract, ContractKey] | None:
    """The contract whose user has the key now."""
    for contract, theirs in _uses(store, key.stored_id):
        if rules.is_out(contract.contract_type, theirs.status, theirs.in_history):
            return contract, theirs
    return None


def check_late(
    store: ContractStore, kinds: Kinds, contract_id: str, position: int, now: datetime
) -> None:
    """The ``contract-key-late`` job: at the contract's start its key is still out (its code
    still held), so its contact, its integration and the unit's staff are told, once."""
    contract = store.load(contract_id)
    if contract is None:
        return
    key = contract.key_at(position)
    if key.in_history or key.held_since is None or key.automat_id is None:
        return  # back (or done with) since the check was planned
    if now < contract.start:
        service.schedule_late_check(store, contract, key, now)  # the start moved later
        return
    kind = kinds[contract.kind]
    occasion = f"{contract.id}:{position}:{key.held_since.isoformat()}"
    service.publish_status(store, contract, key, DELAYED, now, once=f"key-delayed:{occasion}")
    view = service.notification_view(store, kind, contract)
    store.notify(
        view,
        NotificationType.CONTRACT_KEY_DELAYED,
        now=now,
        key_id=key.key_id,
        event=f"delayed:{key.held_since.isoformat()}",
    )
    automat = store.automat_views([key.automat_id]).get(key.automat_id)
    shown = view.key(key.key_id)
    facts = {
        "contract": contract.public_id,
        "kind": contract.kind,
        "key": shown.label if shown is not None else key.key_id,
        "automat": automat.name if automat is not None else key.automat_id,
        "locker": key.locker_index,
        "start_at": wh.format_time(contract.start),
        "holder": None,
        "holder_contact": None,
    }
    holding = _holder(store, key)
    if holding is not None:
        facts["holder"] = holding[0].public_id
        facts["holder_contact"] = service.contact_line(holding[0].contact)
    store.notice(
        contract.organization_unit_id, KEY_DELAYED, occasion=occasion, facts=facts, now=now
    )
