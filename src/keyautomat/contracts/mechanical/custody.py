"""Mechanical keys between their register and their contracts: where a key is due (F9),
what deleting a key does to its contracts (F8), and staff handovers at a manual
storage (F11). The key register (``service_layer/mechanical_keys.py``) calls the
first two through the hooks :func:`register` adds to the container's wiring.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from keyautomat.contracts import lost, progress, service
from keyautomat.contracts.kind import Kinds
from keyautomat.contracts.mechanical.kind import MechanicalKind
from keyautomat.contracts.model import Contract, ContractKey
from keyautomat.contracts.rules import KeyStatus
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.mechanical import MechanicalKey, Storage
from keyautomat.service_layer import mechanical_keys
from keyautomat.service_layer.principal import Principal
from keyautomat.service_layer.wiring import Wiring


class KeyCustody:
    """The register's hooks for one container's mechanical kind."""

    def __init__(self, kind: MechanicalKind) -> None:
        self.kind = kind

    def target_storages(
        self, session: Session, keys: Sequence[MechanicalKey], now: datetime
    ) -> dict[str, Storage]:
        """F9: the storage of the contract each key is in or next due for."""
        store = SqlContractStore(session)
        result: dict[str, Storage] = {}
        for _, key in store.live_keys(self.kind.name, [k.object_id for k in keys], now):
            if key.stored_id in result:
                continue  # in a contract already, or due in an earlier one
            if key.automat_id is not None:
                result[key.stored_id] = Storage.device(key.automat_id)
            elif key.manual_info:
                result[key.stored_id] = Storage.manual(key.manual_info)
        return result

    def before_key_delete(
        self, session: Session, key: MechanicalKey, delete_active: bool, now: datetime
    ) -> None:
        """F8: active or future contracts block the delete unless ``deleteActiveContracts``."""
        store = SqlContractStore(session)
        ids = list(
            dict.fromkeys(
                contract_id
                for contract_id, _ in store.live_keys(self.kind.name, [key.object_id], now)
            )
        )
        if not ids:
            return
        if not delete_active:
            raise InvalidInput(
                "deleteActiveContracts",
                "the key has active or future contracts; send deleteActiveContracts: true",
            )
        for contract_id in ids:
            contract = store.load(contract_id, for_update=True)
            if contract is not None:
                service.remove(store, self.kind, contract, now)


def register(wiring: Wiring, kind: MechanicalKind) -> None:
    custody = KeyCustody(kind)
    wiring.target_storage_resolvers.append(custody.target_storages)
    wiring.key_delete_hooks.append(custody.before_key_delete)


# --- staff handovers at a manual storage (F11) ----------------------------------------------


def _manual_key(
    store: SqlContractStore,
    kind: MechanicalKind,
    principal: Principal,
    contract_id: str,
    key_id: str,
) -> tuple[Contract, ContractKey]:
    # Staff at the desk do it: admins, and the console's operators (the API's route is
    # for admin accounts only).
    principal.require_operator()
    contract = service.get(store, kind, principal, contract_id, for_update=True)
    key = next((k for k in contract.keys if k.key_id == key_id), None)
    if key is None:
        raise NotFound("Contract key")
    if key.in_automat:
        raise InvalidInput("keyId", "is handed over at its automat, not by staff")
    return contract, key


def record_handover(
    session: Session,
    kind: MechanicalKind,
    principal: Principal,
    contract_id: str,
    key_id: str,
    *,
    now: datetime,
) -> Contract:
    """Staff handed the key over to the contact: ``key-fetched``."""
    store = SqlContractStore(session)
    contract, key = _manual_key(store, kind, principal, contract_id, key_id)
    if key.in_history or key.status not in (None, KeyStatus.RETURNED.value):
        raise InvalidInput("keyId", "is not waiting to be handed over")
    if now < contract.start or (contract.end is not None and now >= contract.end):
        raise InvalidInput("keyId", "the contract is not ongoing")
    if contract.awaiting_verification:
        raise InvalidInput("keyId", "the contract awaits its contact's signature or identity")
    mechanical_keys.hand_over(session, key.stored_id)
    progress.fetched(store, kind, contract, key, now)
    return contract


def record_return(
    session: Session,
    kind: MechanicalKind,
    principal: Principal,
    contract_id: str,
    key_id: str,
    *,
    now: datetime,
) -> Contract:
    """The contact gave the key back to staff: ``key-returned``, at its manual place."""
    store = SqlContractStore(session)
    contract, key = _manual_key(store, kind, principal, contract_id, key_id)
    if key.status not in (KeyStatus.FETCHED.value, KeyStatus.NOT_RETURNED.value):
        raise InvalidInput("keyId", "has not been handed over")
    home = store.key_facts([key.stored_id]).get(key.stored_id)
    place = key.manual_info or (home.selected_manual_info if home is not None else None)
    if place is not None:
        mechanical_keys.back_to_manual(session, key.stored_id, place)
    progress.returned(store, kind, contract, key, now)
    return contract


# --- a key reported lost ----------------------------------------------------------------------


def report_lost(
    session: Session, kinds: Kinds, principal: Principal, key_id: str, *, now: datetime
) -> tuple[MechanicalKey, list[lost.Outcome]]:
    """Staff report the key lost (docs/contracts.md, "Lost keys"): it is offered to no new
    contract until it is found, and every contract still holding it loses it (key-lost)
    and tells its contact. A mechanical key has no replacement: a copy is a new key."""
    key = mechanical_keys.get_key(session, principal, key_id)
    key.report_lost(now)
    session.flush()
    store = SqlContractStore(session)
    outcomes = [
        lost.take_out(store, kinds, contract, held, now, replace=False)
        for contract, held in lost.holders(store, MechanicalKind.name, key.object_id)
    ]
    return key, outcomes
