"""The mechanical kind: caller-named contracts over mechanical keys (spec endpoints §9,
gaps.md F1-F11).

A mechanical contract is a default contract. Its keys are the caller's
mechanical keys (``contract_keys.key_id`` is the key's object id), in key30
automats or in manual storage (never both in one contract); its id is the
caller's, unique per root organization (F5). It adds ``freeLockerAfterFetch``
(F10), ``userVerification`` (F3: "1" holds the codes back until the contact
signs), pick-up info for manual keys, and staff handovers (F11, ``handover.py``).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import bindparam, select

from keyautomat.adapters import orm
from keyautomat.adapters.orm_mechanical import mechanical_keys as mk
from keyautomat.contracts.kind import ContractKind
from keyautomat.contracts.model import (
    UNSET,
    VERIFYING,
    Contract,
    ContractChange,
    ContractKey,
    Draft,
    Period,
    PlannedKey,
    Terms,
)
from keyautomat.contracts.rules import ContractType
from keyautomat.contracts.store import ContractStore, SqlContractStore
from keyautomat.domain.devices import AutomatEvent, secret_hash
from keyautomat.domain.errors import Conflict, InvalidInput
from keyautomat.domain.identity import link_expiry
from keyautomat.domain.mechanical import MechanicalKey
from keyautomat.domain.model import Product
from keyautomat.domain.notifications import Contact
from keyautomat.domain.notifications import ContractKind as ViewKind
from keyautomat.service_layer.mechanical_keys import root_unit_of
from keyautomat.service_layer.principal import Principal, in_scope_bound, scope_params


@dataclass(frozen=True, slots=True)
class KeyInput:
    id: str
    automat_id: str | None = None
    pincode: str | None = None
    manual_info: str | None = None
    kind: str | None = None  # "device", "manual", or None (from the key's storage)


@dataclass(frozen=True, slots=True)
class NewMechanicalContract:
    """The flat ``CreateMechanicalKeyContractDto`` after its shape was checked (§9.3)."""

    public_id: str | None
    start: datetime
    end: datetime | None
    contact: Contact
    keys: list[KeyInput]
    user_verification: str
    pick_up_info: str | None
    free_locker_after_fetch: bool


def new_signature_token() -> str:
    """The credential of a verification link (signature or identity): 256 random bits."""
    return secrets.token_urlsafe(32)


# Where each verification's link leads: the signature page, the identity step.
LINK_PATHS = {"1": "/sign/", "2": "/identify/"}
DEFAULT_LINK_VALIDITY = timedelta(days=7)


# What the database keeps of a signature token is the same plain SHA-256 as of a
# device token (the token is random, so no salt is needed): a copy of the database
# (a backup, a dump) then opens no signature page. Migration 0014 applied the same
# rule to the tokens stored before it.
token_hash = secret_hash

# Statements run with every creation are built once (see store.py for why).
_USABLE_AUTOMAT = select(orm.automats.c.product).where(
    orm.automats.c.id == bindparam("automat_id"),
    in_scope_bound(orm.automats.c.organization_unit_id),
)


@functools.cache
def _keys_by_id(for_update: bool) -> Any:
    # Built on first use: the ORM maps MechanicalKey when the first Database starts.
    stmt = (
        select(MechanicalKey)
        .where(
            mk.c.id.in_(bindparam("ids", expanding=True)),
            mk.c.root_unit_id == bindparam("root"),
            in_scope_bound(mk.c.organization_unit_id),
        )
        .order_by(mk.c.object_id)
    )
    return stmt.with_for_update() if for_update else stmt


@dataclass(slots=True)
class _Planned:
    key: MechanicalKey
    automat_id: str | None
    locker_index: int | None
    manual_info: str | None
    pincode: str | None
    # In its locker now (else out with a previous contract's user: booked back to back).
    in_place: bool = True


_LOCKER_HOLDING = (
    select(orm.lockers.c.locker_index, orm.lockers.c.is_key_inside)
    .where(
        orm.lockers.c.automat_id == bindparam("automat_id"),
        orm.lockers.c.key_id == bindparam("key_id"),
    )
    .order_by(orm.lockers.c.locker_index)
    .limit(1)
)


class MechanicalKind(ContractKind[NewMechanicalContract]):
    name: ClassVar[str] = "mechanical"
    view_kind: ClassVar[ViewKind] = ViewKind.MECHANICAL
    defers_codes: ClassVar[bool] = True

    def __init__(
        self, signature_base_url: str = "", link_validity: timedelta = DEFAULT_LINK_VALIDITY
    ) -> None:
        # The public address of the verification pages; "" gives a relative link.
        self.signature_base_url = signature_base_url.rstrip("/")
        # How long a strong-authentication link may be used after it was sent.
        self.link_validity = link_validity

    def new_link(
        self, verification: str, end: datetime | None, now: datetime
    ) -> tuple[str | None, datetime | None]:
        """A fresh verification link's token, and until when it may be used ("2" only)."""
        if verification not in VERIFYING:
            return None, None
        expires = link_expiry(now, end, self.link_validity) if verification == "2" else None
        return new_signature_token(), expires

    # --- identity --------------------------------------------------------------------------

    def root_unit_id(self, store: ContractStore, principal: Principal) -> str | None:
        # The caller's unit path is known from its account: no need to read the unit.
        return root_unit_of(principal.organization_unit_path)

    # --- creation --------------------------------------------------------------------------

    def check_verification(self, store: ContractStore, unit_id: str, value: str) -> None:
        assert isinstance(store, SqlContractStore)
        if value == "2" and not store.strong_auth(unit_id):
            raise InvalidInput(
                "userVerification", "strong authentication (2) is not enabled for this unit"
            )

    def _keys_by_id(
        self, session: Any, principal: Principal, root: str, ids: Sequence[str]
    ) -> dict[str, MechanicalKey]:
        """The keys, locked on PostgreSQL (in object id order): two contracts racing for one
        key (a manual key has no automat to lock) see each other's rows; SQLite has one
        writer."""
        postgres = session.get_bind().dialect.name == "postgresql"
        stmt = _keys_by_id(postgres)
        params = {"ids": list(ids), "root": root, **scope_params(principal)}
        return {key.id: key for key in session.scalars(stmt, params)}

    def _usable_automat(
        self, session: Any, principal: Principal, automat_id: str, name: str
    ) -> None:
        params = {"automat_id": automat_id, **scope_params(principal)}
        product = session.scalar(_USABLE_AUTOMAT, params)
        if product is None:
            raise InvalidInput(name, "does not name an automat you can use")
        if product != Product.KEY30:
            raise InvalidInput(
                name, "is not a key30 automat (mechanical keys live in key30 automats)"
            )

    def _locker_of(
        self, session: Any, key: MechanicalKey, automat_id: str
    ) -> tuple[int, bool] | None:
        """The key's locker at the automat, and whether the key is inside it now (a locker
        keeps the key it is assigned while the key is out with a contract's user)."""
        if key.stored_automat_id == automat_id and key.stored_locker_index is not None:
            return key.stored_locker_index, True
        params = {"automat_id": automat_id, "key_id": key.id}
        row = session.execute(_LOCKER_HOLDING, params).first()
        return None if row is None else (row.locker_index, bool(row.is_key_inside))

    def _plan_keys(
        self, store: SqlContractStore, principal: Principal, root: str, new: NewMechanicalContract
    ) -> list[_Planned]:
        session = store.session
        found = self._keys_by_id(session, principal, root, [k.id for k in new.keys])
        planned: list[_Planned] = []
        for index, asked in enumerate(new.keys):
            name = f"keys.{index}"
            key = found.get(asked.id)
            if key is None:
                raise InvalidInput(f"{name}.id", "is not a mechanical key you can use")
            if key.lost_at is not None:
                raise InvalidInput(f"{name}.id", "is lost")
            device = asked.kind == "device" or (asked.kind is None and key.selected.is_device)
            if not device:
                info = asked.manual_info or key.stored_manual_info or key.selected_manual_info
                planned.append(_Planned(key, None, None, info, None))
                continue
            automat_id = asked.automat_id or key.stored_automat_id or key.selected_automat_id
            if automat_id is None:
                raise InvalidInput(f"{name}.storageInfo.automatId", "is required for this key")
            self._usable_automat(session, principal, automat_id, f"{name}.storageInfo.automatId")
            place = self._locker_of(session, key, automat_id)
            if place is None:
                raise InvalidInput(f"{name}.id", f"is not in a locker of automat {automat_id}")
            locker, inside = place
            planned.append(_Planned(key, automat_id, locker, None, asked.pincode, inside))
        if len({p.automat_id is not None for p in planned}) > 1:
            raise InvalidInput("keys", "automat keys and manual-storage keys cannot be mixed")
        store.lock_automats(p.automat_id for p in planned)
        for index, p in enumerate(planned):
            if p.key.shared and p.automat_id is not None:
                continue
            if store.key_booked(
                self.name, p.key.object_id, new.start, new.end, ignore_contract=None
            ):
                raise Conflict(f"keys.{index}: Overlapping contract for key {p.key.id!r}")
        return planned

    def plan(
        self,
        store: ContractStore,
        principal: Principal,
        new: NewMechanicalContract,
        now: datetime,
    ) -> Draft:
        assert isinstance(store, SqlContractStore)
        root = root_unit_of(principal.organization_unit_path)
        self.check_verification(store, principal.organization_unit_id, new.user_verification)
        if new.public_id is not None and store.public_id_taken(root, new.public_id):
            raise Conflict(f"A contract with the id {new.public_id!r} already exists")
        planned = self._plan_keys(store, principal, root, new)
        manual = planned[0].automat_id is None
        if manual:
            if new.free_locker_after_fetch:
                raise InvalidInput("freeLockerAfterFetch", "is only for automat-key contracts")
            if new.start > now and new.pick_up_info is None:
                raise InvalidInput(
                    "pickUpInfoForManualStorageKeys",
                    "is required for a manual-storage contract that starts in the future",
                )
        elif new.pick_up_info is not None:
            raise InvalidInput(
                "pickUpInfoForManualStorageKeys", "is only for manual-storage key contracts"
            )
        token, expires = self.new_link(new.user_verification, new.end, now)
        return Draft(
            terms=Terms(
                contract_type=ContractType.DEFAULT,
                start=new.start,
                end=new.end,
                contact=new.contact,
                free_locker_after_fetch=new.free_locker_after_fetch,
                user_verification=new.user_verification,
                pick_up_info=new.pick_up_info,
            ),
            keys=[
                PlannedKey(
                    key_id=p.key.id,
                    stored_id=p.key.object_id,
                    automat_id=p.automat_id,
                    locker_index=p.locker_index,
                    manual_info=p.manual_info,
                    given_pincode=p.pincode,
                    reserved_key_id=p.key.object_id,
                    in_place=p.in_place,
                )
                for p in planned
            ],
            request={
                "keys": [
                    {"id": p.key.id, "manualStorageInfo": p.manual_info}
                    if manual
                    else {"id": p.key.id}
                    for p in planned
                ]
            },
            public_id=new.public_id,
            root_unit_id=root,
            pincode_field="keys.{}.storageInfo.pincode",
            signature_token=token,
            link_expires_at=expires,
        )

    # --- change ----------------------------------------------------------------------------

    def change_terms(
        self, store: ContractStore, contract: Contract, change: ContractChange, now: datetime
    ) -> dict[str, Any]:
        terms: dict[str, Any] = {}
        verification = change.user_verification
        if verification is not None and verification != contract.user_verification:
            if contract.signed_at is not None or contract.progressed:
                raise InvalidInput(
                    "userVerification",
                    "cannot change once the contract is signed or a key fetched",
                )
            self.check_verification(store, contract.organization_unit_id, verification)
            contract.user_verification = terms["user_verification"] = verification
            end = contract.end if change.end is UNSET else change.end
            token, expires = self.new_link(verification, end, now)
            contract.signature_token, contract.link_expires_at = token, expires
            terms["signature_token_hash"] = token_hash(token) if token else None
            terms["verification_link_expires_at"] = expires
        if change.pick_up_info is not UNSET:
            if change.pick_up_info is not None and not contract.has_manual_keys:
                raise InvalidInput(
                    "pickUpInfoForManualStorageKeys", "is only for manual-storage key contracts"
                )
            contract.pick_up_info = terms["pick_up_info"] = change.pick_up_info
        return terms

    def check_period_free(self, store: ContractStore, contract: Contract, period: Period) -> None:
        live = [k for k in contract.keys if not k.in_history]
        facts = store.key_facts(k.stored_id for k in live)
        for key in live:
            fact = facts.get(key.stored_id)
            if key.in_automat and fact is not None and fact.shared:
                continue  # shared keys may have overlapping contracts (F6)
            if store.key_booked(
                self.name, key.stored_id, period.start, period.end, ignore_contract=contract.id
            ):
                raise Conflict("Overlapping contract")

    def after_delete(self, store: ContractStore, contract: Contract) -> None:
        # The caller may use the id again (F5 counts live contracts); the audit row keeps its own.
        store.update_terms(
            contract.id, {"public_id": f"{contract.id}/deleted", "signature_token_hash": None}
        )

    # --- what notifications show -------------------------------------------------------------

    def key_names(self, store: ContractStore, contract: Contract) -> dict[str, str | None]:
        return {
            sid: f.name for sid, f in store.key_facts(k.stored_id for k in contract.keys).items()
        }

    def signature_link(self, contract: Contract) -> str | None:
        path = LINK_PATHS.get(contract.user_verification)
        if contract.signature_token is None or path is None:
            return None
        return f"{self.signature_base_url}{path}{contract.signature_token}"

    # --- at the automats -----------------------------------------------------------------------

    def on_code_entered(
        self, store: ContractStore, contract: Contract, key: ContractKey, at: datetime
    ) -> None:
        # key30 automats program nothing: the code opening the locker is what makes
        # taking the key out a fetch.
        if key.status in (None, "key-returned"):
            key.opened_at = at
            store.set_key(contract.id, key.position, opened_at=at)

    def reported_key_matches(
        self, store: ContractStore, contract: Contract, key: ContractKey, event: AutomatEvent
    ) -> bool:
        if super().reported_key_matches(store, contract, key, event):
            return True
        rfid = event.data.get("rfid")
        fact = store.key_facts([key.stored_id]).get(key.stored_id)
        return bool(
            fact is not None
            and fact.rfid_hex
            and isinstance(rfid, str)
            and rfid.upper() == fact.rfid_hex
        )

    def returned_key_matches(
        self, store: ContractStore, contract: Contract, key: ContractKey, event: AutomatEvent
    ) -> bool:
        # The key register ran first and placed what the automat reported (by id or RFID).
        fact = store.key_facts([key.stored_id]).get(key.stored_id)
        return (
            fact is not None
            and fact.stored_automat_id == event.automat_id
            and fact.stored_locker_index == event.locker_index
        )
