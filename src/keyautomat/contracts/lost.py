"""Lost keys, for every kind: what a key reported lost does to the contracts that hold it
(docs/contracts.md, "Lost keys").

The kinds' own steps come first and are theirs: an iLOQ key is blocklisted in
the locking system and blocked in our registry (``iloq/lost.py``), a mechanical
key is marked lost in the register (``mechanical/custody.py``). Then, in the
same transaction, :func:`take_out` runs for every contract still holding the key:

* the key leaves the contract with our status ``key-lost`` (in its history): its
  code comes off the automat and its locker and key are free again;
* ``key-status`` ``key-lost`` goes to the integration;
* when asked, and when the kind has one free (``ContractKind.replacement``), a
  replacement key joins the contract for the rest of its period: a fresh code
  on its automat and a ``contract-update`` of it; an iLOQ replacement is
  programmed with the contract's rights when its user takes it, as any key;
* the contact gets ``contractUpdated`` (the contract's keys and codes as they
  are now), and the reminders are planned again for the keys left.

Each event carries an outbox idempotency key naming the contract key, so a report
repeated (or a request retried) tells nobody twice; the second finds the key in
history already and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from keyautomat.contracts import progress, service
from keyautomat.contracts.kind import Kinds
from keyautomat.contracts.model import Contract, ContractKey
from keyautomat.contracts.rules import ContractType, KeyStatus
from keyautomat.contracts.store import ContractStore
from keyautomat.domain.notifications import NotificationType


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a lost key did to one contract: its ids on the wire, and the replacement."""

    contract_id: str
    contract_object_id: str
    replacement_key_id: str | None
    replacement_pincode: str | None


def holders(store: ContractStore, kind: str, stored_id: str) -> list[tuple[Contract, ContractKey]]:
    """The contracts of ``kind`` that still hold this key, by start."""
    found = []
    for ref in store.key_refs(stored_id):
        contract = store.load(ref.contract_id, for_update=True)
        if contract is not None and contract.kind == kind:
            found.append((contract, contract.key_at(ref.position)))
    return found


def take_out(
    store: ContractStore,
    kinds: Kinds,
    contract: Contract,
    key: ContractKey,
    now: datetime,
    *,
    replace: bool,
) -> Outcome:
    """``key`` is lost: out of ``contract`` (and a replacement in, if asked and free)."""
    kind = kinds[contract.kind]
    store.lock_automats(k.automat_id for k in contract.keys)
    key.status = KeyStatus.LOST
    store.set_key(contract.id, key.position, status=KeyStatus.LOST.value)
    progress.retire(store, contract, key)
    store.release(contract.id, key.position, now)
    service.publish_status(
        store, contract, key, KeyStatus.LOST, now, once=f"key-lost:{contract.id}:{key.position}"
    )
    added = None
    running = contract.end is None or contract.end > now
    if replace and running and contract.contract_type is not ContractType.RETURN:
        planned = kind.replacement(store, contract, key, now)
        if planned is not None:
            added = service.add_key(store, kind, contract, planned, now)
    store.complete_if_done(contract.id, now)
    view = service.notification_view(store, kind, contract)
    store.notify(view, NotificationType.CONTRACT_UPDATED, now=now, event=f"key-lost:{key.key_id}")
    if any(not k.in_history for k in contract.keys):
        store.reschedule_reminders(view, now)  # the reminders show the keys left
    else:
        store.cancel_reminders(contract.id)
    return Outcome(
        contract.public_id,
        contract.id,
        added.key_id if added is not None else None,
        added.pincode if added is not None else None,
    )
