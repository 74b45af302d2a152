"""The iLOQ kind: three contract types, the location of the keys, access rights programmed
just in time, and blank keys wiped after their return (spec endpoints §3, gaps.md C1-C18).

Where a new contract's keys come from (C4): default and fetch contracts name
``keyIds`` (the lockers holding them), else ``keyAutomatId``, else the best
automat of ``groupId``; return contracts name the keys that will come back and
book empty lockers. Only active key20 automats program iLOQ keys (D4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final, Literal

from sqlalchemy import bindparam, select, text

from keyautomat.adapters import orm
from keyautomat.adapters.db import PlainQuery
from keyautomat.adapters.orm_iloq import iloq_keys
from keyautomat.contracts import allocation
from keyautomat.contracts.kind import ContractKind
from keyautomat.contracts.model import (
    Contract,
    ContractKey,
    Draft,
    Period,
    PlannedKey,
    Slot,
    Terms,
)
from keyautomat.contracts.rules import ContractType, reservation_until
from keyautomat.contracts.store import ContractStore, SqlContractStore
from keyautomat.domain.errors import Conflict, InvalidInput
from keyautomat.domain.model import GroupType, LifecycleState, Product
from keyautomat.domain.notifications import Contact
from keyautomat.domain.notifications import ContractKind as ViewKind
from keyautomat.service_layer import iloq_keys as registry
from keyautomat.service_layer.principal import Principal, in_scope_bound, scope_params

# Outbox job: a returned key is wiped blank (C10), with retries (programming.py).
WIPE_KIND = "iloq-wipe"
# Only the best few automats of a group are ranked first (allocation.rank_automats).
RANKED_FIRST = 8
BUSY: Final = "busy"


@dataclass(frozen=True, slots=True)
class NewIloqContract:
    """A create request after its shape was checked (endpoints.md §3.3, gaps.md C1-C4)."""

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

    @property
    def key_count(self) -> int:
        if self.key_ids is not None:
            return len(self.key_ids)
        assert self.number_of_keys is not None
        return self.number_of_keys

    @property
    def request(self) -> dict[str, Any]:
        """What the responses echo as requested."""
        return {
            "accessRightIds": self.access_right_ids,
            "numberOfKeys": self.number_of_keys,
            "keyIds": self.key_ids,
            "keyAutomatId": self.key_automat_id,
            "groupId": self.group_id,
        }


_PROGRAMMING_AUTOMATS = select(
    orm.automats.c.id,
    orm.automats.c.product,
    orm.automats.c.lifecycle_state,
    orm.automats.c.organization_unit_id,
).where(
    orm.automats.c.id.in_(bindparam("ids", expanding=True)),
    in_scope_bound(orm.automats.c.organization_unit_id),
)
# Asked by every creation naming a group: on the driver's cursor (adapters/db.py).
_GROUP = PlainQuery(
    select(orm.groups.c.type).where(
        orm.groups.c.id == bindparam("group_id"),
        in_scope_bound(orm.groups.c.organization_unit_id),
    )
)
_MEMBERS = allocation.group_members(Product.KEY20)
_MEMBER = _MEMBERS.where(orm.automats.c.id == bindparam("automat_id"))
_HOLDERS = select(
    orm.lockers.c.key_id,
    orm.lockers.c.automat_id,
    orm.lockers.c.locker_index,
    orm.lockers.c.is_key_inside,
).where(orm.lockers.c.key_id.in_(bindparam("ids", expanding=True)))
_SAVEPOINT = text("SAVEPOINT allocation")
_ROLLBACK_TO_SAVEPOINT = text("ROLLBACK TO SAVEPOINT allocation")
_BLOCKED = select(iloq_keys.c.id).where(
    iloq_keys.c.id.in_(bindparam("ids", expanding=True)), iloq_keys.c.blocked.is_(True)
)


class Location:
    """Where the keys of one new iLOQ contract are found, under the caller's scope."""

    def __init__(
        self, store: SqlContractStore, principal: Principal, new: NewIloqContract, now: datetime
    ) -> None:
        self.session = store.session
        self.now = now
        self.store = store
        self.principal = principal
        self.new = new
        self.until = reservation_until(new.contract_type, new.end)
        # Named keys that are out now (still with a previous contract's user): booked back
        # to back, their codes wait for them (contracts/succession.py).
        self.out: set[str] = set()

    def _automats(self, automat_ids: Sequence[str]) -> dict[str, Any]:
        params = {"ids": sorted(set(automat_ids)), **scope_params(self.principal)}
        return {row.id: row for row in self.session.execute(_PROGRAMMING_AUTOMATS, params)}

    @staticmethod
    def _check_usable(row: Any, name: str) -> None:
        if row.lifecycle_state != LifecycleState.ACTIVE:
            raise InvalidInput(name, f"automat {row.id} is not active")
        if not Product(row.product).programs_iloq_keys:
            raise InvalidInput(
                name, f"automat {row.id} is a {row.product}, which cannot program iLOQ keys"
            )

    def automat(self, automat_id: str) -> Any:
        row = self._automats([automat_id]).get(automat_id)
        if row is None:
            raise InvalidInput("keyAutomatId", "does not name an automat you can use")
        self._check_usable(row, "keyAutomatId")
        return row

    def check_group(self, group_id: str) -> None:
        """A device group the caller can use, or the 400 that says why not."""
        group = self.store.plain.first(_GROUP, group_id=group_id, **scope_params(self.principal))
        if group is None:
            raise InvalidInput("groupId", "does not name a group you can use")
        if group[0] != GroupType.DEVICE:
            raise InvalidInput("groupId", "must be a device group (type 1)")

    def check_member(self, group_id: str, automat_id: str) -> None:
        """``keyAutomatId`` given with ``groupId`` must be one of the group's usable automats."""
        self.check_group(group_id)
        params = {"group_id": group_id, "automat_id": automat_id}
        if self.session.execute(_MEMBER, params).first() is None:
            raise InvalidInput("keyAutomatId", f"is not in group {group_id}")

    def group_members(self, group_id: str) -> list[str]:
        self.check_group(group_id)
        return list(self.session.scalars(_MEMBERS, {"group_id": group_id}))

    def slots_for_key_ids(self) -> list[Slot]:
        """Default/fetch with ``keyIds``: the lockers holding those keys (C4)."""
        new = self.new
        assert new.key_ids is not None
        held = {row.key_id: row for row in self.session.execute(_HOLDERS, {"ids": new.key_ids})}
        blocked = set(self.session.scalars(_BLOCKED, {"ids": new.key_ids}))
        automats = self._automats([h.automat_id for h in held.values()])
        members = set(self.group_members(new.group_id)) if new.group_id else None
        if new.key_automat_id is not None:
            self.automat(new.key_automat_id)
        slots = []
        for index, key_id in enumerate(new.key_ids):
            name = f"keyIds.{index}"
            place = held.get(key_id)
            if place is None or place.automat_id not in automats:
                raise InvalidInput(name, "is not a key stored in an automat you can use")
            if key_id in blocked:
                raise InvalidInput(name, "is blocked")
            self._check_usable(automats[place.automat_id], name)
            if new.key_automat_id is not None and place.automat_id != new.key_automat_id:
                raise InvalidInput(name, f"is not stored in automat {new.key_automat_id}")
            if members is not None and place.automat_id not in members:
                raise InvalidInput(name, f"is not stored in an automat of group {new.group_id}")
            slots.append(Slot(place.automat_id, place.locker_index, key_id))
            if not place.is_key_inside:
                self.out.add(key_id)
        self.store.lock_automats(s.automat_id for s in slots)
        for index, slot in enumerate(slots):
            if not self.store.slot_is_free(slot, new.start, self.until, ignore_contract=None):
                raise Conflict(
                    f"keyIds.{index}: the key is reserved by another contract in this period"
                )
        return slots

    def allocate(self, candidates: list[str] | None, *, none_in_group: str = "") -> list[Slot]:
        """``count`` keys (or empty lockers) of one automat among ``candidates``, or among the
        members of ``groupId`` when None (then ``none_in_group`` is the 409 of a group
        without a usable automat) (C5, C6)."""
        new = self.new
        want_keys = new.contract_type is not ContractType.RETURN
        count = new.key_count
        group = (new.group_id, Product.KEY20) if candidates is None and new.group_id else None
        # Only the best few are ranked: the first that can serve under the lock is
        # taken, and all of them are ranked (exactly) only when those few turned out not to.
        for limit in (RANKED_FIRST, None):
            ranked = (
                [(candidates[0], count)]
                if candidates is not None and len(candidates) == 1
                else allocation.rank_automats(
                    self.session,
                    candidates,
                    new.start,
                    self.until,
                    want_keys=want_keys,
                    group=group,
                    limit=limit,
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
                slots = self._attempt(automat_id, wait=False)
                if isinstance(slots, list):
                    return slots
                if slots == BUSY:
                    busy.append(automat_id)
            for automat_id in busy:
                slots = self._attempt(automat_id, wait=True)
                if isinstance(slots, list):
                    return slots
            # The best few are ranked from a shortlist: when they all fell short, rank the
            # whole group exactly before answering 409.
            if limit is None or len(ranked) < limit:
                break
        what = "keys" if want_keys else "free lockers"
        raise Conflict(f"No automat has {count} {what} available for the requested period")

    def _attempt(self, automat_id: str, *, wait: bool) -> list[Slot] | Literal["busy"] | None:
        """All the keys (or empty lockers) asked for at this automat, checked under its lock;
        None when it has too few; :data:`BUSY` when another transaction holds it and
        ``wait`` is False.

        On PostgreSQL the lock is taken in a savepoint that is rolled back when the
        automat falls short, which releases it: a transaction then waits for an automat
        while holding no other, so two creations can never wait for each other (they
        did, in the group race test, when a creation kept the lock of an automat it had
        found full).
        """
        if not self.store.postgres:
            return self._free_slots(automat_id)
        # A plain savepoint, not Session.begin_nested(): kept, it is never released (the
        # commit releases it), which saves the RELEASE round trip of the usual case.
        self.session.execute(_SAVEPOINT)
        if wait:
            allocation.lock_automats(self.session, [automat_id])
        elif not allocation.try_lock_automat(self.session, automat_id):
            self.session.execute(_ROLLBACK_TO_SAVEPOINT)
            return BUSY
        slots = self._free_slots(automat_id)
        if slots is None:
            self.session.execute(_ROLLBACK_TO_SAVEPOINT)
        return slots

    def _free_slots(self, automat_id: str) -> list[Slot] | None:
        new = self.new
        count = new.key_count
        if new.contract_type is ContractType.RETURN:
            slots = allocation.free_lockers(self.session, automat_id, new.start, self.until, count)
        else:
            slots = allocation.free_keys(
                self.session, automat_id, new.start, self.until, self.now, count
            )
        return slots if len(slots) == count else None

    def slots(self) -> list[Slot]:
        new = self.new
        returning = new.contract_type is ContractType.RETURN
        if new.key_ids is not None and not returning:
            return self.slots_for_key_ids()
        if new.key_automat_id is not None:
            if new.group_id is not None:
                self.check_member(new.group_id, new.key_automat_id)
            return self.allocate([self.automat(new.key_automat_id).id])
        assert new.group_id is not None
        self.check_group(new.group_id)
        able = "take the keys" if returning else "program iLOQ keys"
        return self.allocate(None, none_in_group=f"The group has no active automat that can {able}")


class IloqKind(ContractKind[NewIloqContract]):
    name: ClassVar[str] = "iloq"
    view_kind: ClassVar[ViewKind] = ViewKind.ILOQ

    def plan(
        self, store: ContractStore, principal: Principal, new: NewIloqContract, now: datetime
    ) -> Draft:
        assert isinstance(store, SqlContractStore)
        returning = new.contract_type is ContractType.RETURN
        if returning:
            assert new.key_ids is not None
            registry.check_return_key_ids(new.key_ids)
        location = Location(store, principal, new, now)
        slots = location.slots()
        keys = []
        for position, slot in enumerate(slots):
            key_id = new.key_ids[position] if returning and new.key_ids else slot.key_id
            assert key_id is not None
            keys.append(
                PlannedKey(
                    key_id=key_id,
                    stored_id=key_id,
                    automat_id=slot.automat_id,
                    locker_index=slot.locker_index,
                    given_pincode=new.pincodes[position] if new.pincodes else None,
                    reserved_key_id=slot.key_id,
                    in_place=slot.key_id not in location.out,
                )
            )
        terms = Terms(new.contract_type, new.start, new.end, new.contact, new.iloq_person_id)
        return Draft(terms=terms, keys=keys, request=new.request)

    def program_first(self, contract_type: ContractType) -> bool:
        # Return contracts hand out nothing: the automat opens an empty locker at once.
        return contract_type is not ContractType.RETURN

    def end_required(self, contract_type: ContractType) -> bool:
        return contract_type is ContractType.DEFAULT

    def check_period_free(self, store: ContractStore, contract: Contract, period: Period) -> None:
        returning = contract.contract_type is ContractType.RETURN
        for key in contract.keys:
            if key.in_history or key.automat_id is None:
                continue
            assert key.locker_index is not None
            slot = Slot(key.automat_id, key.locker_index, None if returning else key.key_id)
            if not store.slot_is_free(
                slot, period.start, period.until, ignore_contract=contract.id
            ):
                raise Conflict("Overlapping contract")

    def replacement(
        self, store: ContractStore, contract: Contract, lost: ContractKey, now: datetime
    ) -> PlannedKey | None:
        """A free key of the lost key's automat, else of another automat of the contract's
        group, over the rest of the contract; blocked keys (the lost one) never."""
        assert isinstance(store, SqlContractStore)
        candidates = [lost.automat_id] if lost.automat_id else []
        group_id = contract.request.get("groupId")
        if group_id:
            members = [str(m) for m in store.session.scalars(_MEMBERS, {"group_id": group_id})]
            candidates += [m for m in members if m not in candidates]
        store.lock_automats(candidates)
        start = max(contract.start, now)
        until = reservation_until(contract.contract_type, contract.end)
        for automat_id in candidates:
            free = allocation.free_keys(store.session, automat_id, start, until, now, 1)
            if free:
                slot = free[0]
                assert slot.key_id is not None
                return PlannedKey(
                    key_id=slot.key_id,
                    stored_id=slot.key_id,
                    automat_id=slot.automat_id,
                    locker_index=slot.locker_index,
                    reserved_key_id=slot.key_id,
                )
        return None

    def after_fetch(
        self, store: ContractStore, contract: Contract, key: ContractKey, at: datetime
    ) -> None:
        if contract.contract_type is not ContractType.FETCH:
            return
        # The key is the user's now: it leaves our automat and our books of its locker.
        assert isinstance(store, SqlContractStore)
        registry.take_key(store.session, key.key_id)

    def after_return(
        self,
        store: ContractStore,
        contract: Contract,
        key: ContractKey,
        locker_index: int | None,
        at: datetime,
    ) -> None:
        ours = True
        if contract.contract_type is ContractType.RETURN and locker_index is not None:
            assert isinstance(store, SqlContractStore)
            assert key.automat_id is not None
            ours = registry.receive_returned_key(
                store.session,
                organization_unit_id=contract.organization_unit_id,
                key_id=key.key_id,
                automat_id=key.automat_id,
                locker_index=locker_index,
                now=at,
            )
        if ours:
            # Default and return contracts hand back blank keys (C10); the worker wipes them.
            store.enqueue(
                WIPE_KIND,
                {
                    "unitId": contract.organization_unit_id,
                    "keyId": key.key_id,
                    "returnedAt": at.isoformat(),
                },
                now=at,
                ref=f"key:{key.key_id}",
            )
