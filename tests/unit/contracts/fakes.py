"""An in-memory :class:`~keyautomat.contracts.store.ContractStore`, for unit tests of the
contract flow and of each kind's hooks without a database.

It keeps what the SQL store keeps (contracts and their keys, reservations, the
automats' pincodes) in dicts and lists, with the semantics the SQL store's
docstrings give, and records the effects that would leave with the transaction
(webhooks, notifications, outbox jobs, reminders, end evaluations) in lists a
test reads. Loads hand out copies, as the SQL store hands out fresh rows: a
change the code under test makes to a loaded contract but never writes is lost,
as it would be.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from keyautomat.contracts import rules
from keyautomat.contracts.model import CodeGrant, Contract, ContractKey, ListFilters, Slot
from keyautomat.contracts.store import ContractStore, KeyFacts, KeyRef
from keyautomat.domain.devices import PincodePurpose, secret_hash
from keyautomat.domain.errors import Conflict, InvalidInput
from keyautomat.domain.notifications import (
    AutomatView,
    ContractView,
    NotificationType,
    OrgNotificationSettings,
)
from keyautomat.service_layer.pagination import PageRequest
from keyautomat.service_layer.principal import Principal

# contract_keys columns that the model does not carry.
_KEY_COLUMNS_ELSEWHERE = frozenset({"fetched_at", "returned_at", "program_failures"})
_KEY_FIELDS = frozenset(f.name for f in fields(ContractKey))


@dataclass(slots=True)
class Stored:
    """A ``contracts`` row (with its ``mechanical_contracts`` terms) and its keys' rows."""

    contract: Contract
    created_at: datetime
    root_unit_id: str | None = None
    token_hash: str | None = None
    deleted_at: datetime | None = None
    updated_at: datetime | None = None
    # mechanical_contracts columns the model has no field for (the signature).
    terms: dict[str, Any] = field(default_factory=dict)
    # contract_keys columns the model has no field for, by position.
    key_columns: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.deleted_at is None

    def live_keys(self) -> Iterator[ContractKey]:
        """The keys still in the contract, if the contract is not deleted."""
        if self.live:
            yield from (k for k in self.contract.keys if not k.in_history)


@dataclass(slots=True)
class Reservation:
    contract_id: str
    position: int
    automat_id: str
    locker_index: int
    key_id: str | None
    start: datetime
    until: datetime
    counted: bool = True


@dataclass(slots=True)
class Pincode:
    automat_id: str
    code: str
    locker_index: int
    valid_from: datetime
    valid_until: datetime | None
    purpose: PincodePurpose
    key_id: str
    reference: str
    program_first: bool
    removed: bool = False


@dataclass(frozen=True, slots=True)
class Published:
    unit_id: str
    event_type: str
    data: dict[str, Any]
    at: datetime
    once: str | None = None


@dataclass(frozen=True, slots=True)
class Notified:
    view: ContractView
    type: NotificationType
    now: datetime
    key_id: str | None
    event: str | None


@dataclass(frozen=True, slots=True)
class Job:
    kind: str
    payload: dict[str, Any]
    now: datetime
    ref: str
    due_at: datetime | None = None
    once: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    unit_id: str
    notice: str
    occasion: str
    facts: dict[str, Any]
    now: datetime


class FakeContractStore:
    """See the module docstring. ``unit_paths`` places organization units in the tree (for
    the caller's scope); ``facts`` is the mechanical key register; ``automats`` what
    notifications show of an automat."""

    def __init__(
        self,
        *,
        unit_paths: dict[str, str] | None = None,
        facts: dict[str, KeyFacts] | None = None,
        automats: dict[str, AutomatView] | None = None,
    ) -> None:
        self.contracts: dict[str, Stored] = {}
        self.reservations: list[Reservation] = []
        self.pincodes: dict[str, Pincode] = {}
        self.unit_paths = dict(unit_paths or {})
        self.facts = dict(facts or {})
        self.automats = dict(automats or {})
        self._pincode_ids = itertools.count(1)
        # The effects, in the order they were made.
        self.published: list[Published] = []
        self.notified: list[Notified] = []
        self.enqueued: list[Job] = []
        self.notices: list[Notice] = []
        self.reminded: list[Notified] = []
        # Notification settings by unit (the factory's for a unit not listed).
        self.settings: dict[str, OrgNotificationSettings] = {}
        self.locked: list[str] = []
        self.reminders_scheduled: list[ContractView] = []
        self.reminders_rescheduled: list[ContractView] = []
        self.reminders_cancelled: list[str] = []
        self.ends_scheduled: list[tuple[str, datetime]] = []
        self.ends_cancelled: list[str] = []
        # The end evaluations due now, by contract (what the outbox would hold).
        self.ends_due: dict[str, datetime] = {}
        # Device events that moved a contract: event id -> contract id.
        self.linked_events: dict[int, str] = {}

    # --- for tests -----------------------------------------------------------------------

    def add(self, contract: Contract, *, created_at: datetime | None = None) -> Contract:
        """Store ``contract`` (with its keys) as a created one; returns it."""
        self.contracts[contract.id] = Stored(
            copy.deepcopy(contract), created_at=created_at or contract.start
        )
        return contract

    def stored(self, contract_id: str) -> Contract:
        """The contract as stored (not a copy): what the next load would return."""
        return self.contracts[contract_id].contract

    def live_pincodes(self) -> dict[str, Pincode]:
        return {pid: p for pid, p in self.pincodes.items() if not p.removed}

    def reservations_of(self, contract_id: str) -> list[Reservation]:
        return [r for r in self.reservations if r.contract_id == contract_id]

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [p.data for p in self.published if p.event_type == event_type]

    # --- contracts -----------------------------------------------------------------------

    def _by_start(self) -> list[Stored]:
        return sorted(self.contracts.values(), key=lambda s: (s.contract.start, s.contract.id))

    def _in_scope(self, stored: Stored, principal: Principal) -> bool:
        path = self.unit_paths.get(stored.contract.organization_unit_id)
        return path is not None and principal.sees(path)

    def load(self, contract_id: str, *, for_update: bool = False) -> Contract | None:
        stored = self.contracts.get(contract_id)
        if stored is None or not stored.live:
            return None
        return copy.deepcopy(stored.contract)

    def find(
        self,
        kind: str,
        public_id: str,
        principal: Principal,
        root_unit_id: str | None,
        *,
        for_update: bool = False,
    ) -> Contract | None:
        for stored in self.contracts.values():
            contract = stored.contract
            if root_unit_id is None:
                named = contract.id == public_id
            else:
                named = stored.root_unit_id == root_unit_id and contract.public_id == public_id
            if (
                named
                and contract.kind == kind
                and stored.live
                and self._in_scope(stored, principal)
            ):
                return self.load(contract.id, for_update=for_update)
        return None

    def list_page(
        self,
        kind: str,
        principal: Principal,
        page: PageRequest,
        filters: ListFilters,
        root_unit_id: str | None,
        now: datetime,
    ) -> tuple[list[Contract], bool]:
        found = [
            s
            for s in sorted(self.contracts.values(), key=lambda s: (s.created_at, s.contract.id))
            if s.contract.kind == kind
            and s.live
            and self._in_scope(s, principal)
            and (root_unit_id is None or s.root_unit_id == root_unit_id)
            and _in_period(s.contract, filters, now)
            # The SQL store looks the key up in the mechanical key register by its id.
            and (not filters.key_id or any(k.key_id == filters.key_id for k in s.contract.keys))
        ]
        window = found[page.offset : page.offset + page.limit + 1]
        contracts = [copy.deepcopy(s.contract) for s in window[: page.limit]]
        return contracts, len(window) > page.limit

    def public_id_taken(self, root_unit_id: str, public_id: str) -> bool:
        # Deleted contracts keep their row (under a changed public id, after_delete).
        return any(
            s.root_unit_id == root_unit_id and s.contract.public_id == public_id
            for s in self.contracts.values()
        )

    def insert(self, contract: Contract, *, root_unit_id: str | None, now: datetime) -> None:
        if root_unit_id is not None and self.public_id_taken(root_unit_id, contract.public_id):
            raise Conflict(f"A contract with the id {contract.public_id!r} already exists")
        stored = copy.deepcopy(contract)
        stored.keys = []  # they follow with insert_keys
        stored.signature_token = None  # the database never holds the token
        self.contracts[contract.id] = Stored(
            stored,
            created_at=now,
            updated_at=now,
            root_unit_id=root_unit_id,
            # As the SQL store: only the token's hash is kept.
            token_hash=secret_hash(contract.signature_token) if contract.signature_token else None,
        )

    def insert_keys(self, contract: Contract) -> None:
        stored = self.contracts[contract.id]
        for key in contract.keys:
            stored.contract.keys.append(copy.deepcopy(key))
            stored.key_columns[key.position] = {"program_failures": 0}

    def insert_key(self, contract: Contract, key: ContractKey) -> None:
        stored = self.contracts[contract.id]
        stored.contract.keys.append(copy.deepcopy(key))
        stored.key_columns[key.position] = {"program_failures": 0}

    def update(self, contract: Contract, values: dict[str, Any]) -> None:
        stored = self.contracts[contract.id]
        for name, value in values.items():
            if name in ("contact", "iloq_person_id"):
                # The stored contact is the contract's, with its iLOQ person.
                stored.contract.contact = copy.deepcopy(contract.contact)
                stored.contract.iloq_person_id = contract.iloq_person_id
            elif name in ("deleted_at", "updated_at"):
                setattr(stored, name, value)
            elif name in ("start", "end", "end_evaluated_at", "completed_at"):
                setattr(stored.contract, name, value)
            else:
                raise KeyError(f"contracts has no column {name!r}")

    def update_terms(self, contract_id: str, values: dict[str, Any]) -> None:
        stored = self.contracts[contract_id]
        for name, value in values.items():
            if name == "signature_token_hash":
                stored.token_hash = value
            elif name in ("public_id", "user_verification", "pick_up_info", "signed_at"):
                setattr(stored.contract, name, value)
            elif name in ("signature_name", "signature_data"):
                stored.terms[name] = value
            else:
                raise KeyError(f"mechanical_contracts has no column {name!r}")

    def _key(self, contract_id: str, position: int) -> ContractKey:
        return self.contracts[contract_id].contract.key_at(position)

    def set_key(self, contract_id: str, position: int, **values: Any) -> None:
        key = self._key(contract_id, position)
        columns = self.contracts[contract_id].key_columns.setdefault(position, {})
        for name, value in values.items():
            if name in _KEY_COLUMNS_ELSEWHERE:
                columns[name] = value
            elif name in _KEY_FIELDS and name not in ("position", "key_id", "stored_id"):
                setattr(key, name, value)
            else:
                raise KeyError(f"contract_keys has no settable column {name!r}")

    def clear_codes(self, contract_id: str) -> None:
        for key in self.contracts[contract_id].contract.keys:
            key.pincode = key.pincode_id = None

    def claim_end(self, contract_id: str, now: datetime) -> bool:
        """The end evaluation is the caller's once: None before, not deleted."""
        stored = self.contracts.get(contract_id)
        if stored is None or not stored.live or stored.contract.end_evaluated_at is not None:
            return False
        stored.contract.end_evaluated_at = now
        return True

    def complete_if_done(self, contract_id: str, at: datetime) -> None:
        """Completed at ``at`` once every key is history (and only the first time)."""
        contract = self.contracts[contract_id].contract
        if all(k.in_history for k in contract.keys) and contract.completed_at is None:
            contract.completed_at = at

    def _first(self, matches: Any) -> KeyRef | None:
        for stored in self._by_start():
            for key in stored.live_keys():
                if matches(stored.contract, key):
                    return KeyRef(stored.contract.id, key.position)
        return None

    def key_with_code(self, pincode_id: str) -> KeyRef | None:
        return self._first(lambda c, k: k.pincode_id == pincode_id)

    def key_to_fetch(self, automat_id: str, locker_index: int) -> KeyRef | None:
        return self._first(
            lambda c, k: (
                (k.automat_id, k.locker_index) == (automat_id, locker_index)
                and rules.fetchable(c.contract_type, k.status, k.opened_at is not None)
            )
        )

    def key_to_return(self, automat_id: str, locker_index: int) -> KeyRef | None:
        """At this locker, or (for a key whose locker was freed) the key the register says
        went into it; awaited back by its contract."""
        placed = {
            sid
            for sid, f in self.facts.items()
            if (f.stored_automat_id, f.stored_locker_index) == (automat_id, locker_index)
        }

        def here(k: ContractKey) -> bool:
            at_locker = (k.automat_id, k.locker_index) == (automat_id, locker_index)
            return at_locker or (k.automat_id == automat_id and k.stored_id in placed)

        return self._first(
            lambda c, k: here(k) and rules.awaiting_return(c.contract_type, k.status)
        )

    def key_refs(self, stored_id: str) -> list[KeyRef]:
        return [
            KeyRef(s.contract.id, k.position)
            for s in self._by_start()
            for k in s.live_keys()
            if k.stored_id == stored_id
        ]

    def live_keys(
        self, kind: str, stored_ids: Sequence[str], now: datetime
    ) -> list[tuple[str, ContractKey]]:
        return [
            (s.contract.id, copy.deepcopy(k))
            for s in self._by_start()
            if s.contract.kind == kind
            and s.contract.completed_at is None
            and (s.contract.end is None or s.contract.end > now)
            for k in s.live_keys()
            if k.stored_id in stored_ids
        ]

    def _booked(
        self,
        start: datetime,
        end: datetime | None,
        ignore_contract: str | None,
        matches: Any,
    ) -> bool:
        for stored in self.contracts.values():
            c = stored.contract
            if c.id == ignore_contract or (c.end is not None and c.end <= start):
                continue
            if end is not None and c.start >= end:
                continue
            if any(matches(c, k) for k in stored.live_keys()):
                return True
        return False

    def key_booked(
        self,
        kind: str,
        stored_id: str,
        start: datetime,
        end: datetime | None,
        *,
        ignore_contract: str | None,
    ) -> bool:
        return self._booked(
            start,
            end,
            ignore_contract,
            lambda c, k: c.kind == kind and c.completed_at is None and k.stored_id == stored_id,
        )

    def unsynced_code_taken(
        self,
        automat_id: str,
        code: str,
        start: datetime,
        end: datetime | None,
        *,
        ignore_contract: str | None = None,
    ) -> bool:
        return self._booked(
            start,
            end,
            ignore_contract,
            lambda c, k: k.automat_id == automat_id and k.pincode == code and k.pincode_id is None,
        )

    def held_code_taken(
        self,
        automat_id: str,
        code: str,
        start: datetime,
        end: datetime | None,
        *,
        ignore_contract: str | None = None,
    ) -> bool:
        return self._booked(
            start,
            end,
            ignore_contract,
            lambda c, k: (
                k.automat_id == automat_id and k.pincode == code and k.held_since is not None
            ),
        )

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
        off_automat = self.unsynced_code_taken if unsynced else self.held_code_taken
        return self.pincode_in_use(automat_id, code, start, end) or off_automat(
            automat_id, code, start, end, ignore_contract=ignore_contract
        )

    def deleted(self, contract_id: str) -> bool | None:
        stored = self.contracts.get(contract_id)
        return None if stored is None else not stored.live

    def count_program_failure(self, contract_id: str, position: int) -> int:
        columns = self.contracts[contract_id].key_columns.setdefault(position, {})
        columns["program_failures"] = columns.get("program_failures", 0) + 1
        return int(columns["program_failures"])

    def reprogrammed_since(self, key_id: str, at: datetime) -> bool:
        return any(
            k.stored_id == key_id and k.opened_at is not None and k.opened_at > at
            for s in self.contracts.values()
            for k in s.contract.keys
        )

    def key_facts(self, stored_ids: Iterable[str]) -> dict[str, KeyFacts]:
        return {sid: self.facts[sid] for sid in set(stored_ids) if sid in self.facts}

    def link_event(self, event_id: int, contract_id: str) -> None:
        self.linked_events[event_id] = contract_id

    # --- reservations --------------------------------------------------------------------

    def lock_automats(self, automat_ids: Iterable[str | None]) -> None:
        self.locked.extend(sorted({a for a in automat_ids if a}))

    def reserve(
        self, contract_id: str, position: int, slot: Slot, start: datetime, until: datetime
    ) -> None:
        self.reservations.append(
            Reservation(
                contract_id, position, slot.automat_id, slot.locker_index, slot.key_id, start, until
            )
        )

    def slot_is_free(
        self, slot: Slot, start: datetime, until: datetime, *, ignore_contract: str | None
    ) -> bool:
        return not any(
            r.until > start
            and r.start < until
            and r.contract_id != ignore_contract
            and (
                (r.automat_id, r.locker_index) == (slot.automat_id, slot.locker_index)
                or (slot.key_id is not None and r.key_id == slot.key_id)
            )
            for r in self.reservations
        )

    def release(self, contract_id: str, position: int | None, at: datetime) -> None:
        """Free the key and locker from ``at`` on; never extends a reservation. One that had
        not begun goes away (an empty period would still overlap)."""
        kept = []
        for r in self.reservations:
            mine = r.contract_id == contract_id and (position is None or r.position == position)
            if mine and r.until > at:
                if r.start >= at:
                    continue
                r.until, r.counted = at, False
            kept.append(r)
        self.reservations = kept

    def hold_until(self, contract_id: str, position: int, until: datetime) -> None:
        for r in self.reservations:
            if (r.contract_id, r.position) == (contract_id, position):
                r.until, r.counted = until, True

    def move_key(self, contract_id: str, position: int, locker_index: int) -> None:
        self._key(contract_id, position).locker_index = locker_index
        for r in self.reservations:
            if (r.contract_id, r.position) == (contract_id, position) and r.counted:
                r.locker_index = locker_index

    def move_reservations(self, contract_id: str, start: datetime, until: datetime) -> None:
        for r in self.reservations:
            if r.contract_id == contract_id and r.counted:
                r.start, r.until = start, until

    def close_ended(self, contract_id: str, now: datetime) -> None:
        for r in self.reservations:
            if r.contract_id == contract_id and r.counted and r.until <= now:
                r.counted = False

    # --- the automats' pincodes ----------------------------------------------------------

    def add_pincode(self, grant: CodeGrant, *, checked: bool = False) -> str:
        """As ``devices.add_pincode``: a valid code, a window, no clash on the automat."""
        automat_id, code = grant.automat_id, grant.code
        valid_from, valid_until = grant.valid_from, grant.valid_until
        reason = rules.check_pincode(code)
        if reason is not None:
            raise InvalidInput("pincode", reason)
        if valid_until is not None and valid_until <= valid_from:
            raise InvalidInput("end", "must be after start")
        if not checked and self.pincode_in_use(automat_id, code, valid_from, valid_until):
            raise InvalidInput("pincode", "Pincode already in use")
        pincode_id = f"pin-{next(self._pincode_ids)}"
        self.pincodes[pincode_id] = Pincode(
            automat_id,
            code,
            grant.locker_index,
            valid_from,
            valid_until,
            PincodePurpose(grant.purpose),
            grant.key_id,
            grant.reference,
            grant.program_first,
        )
        return pincode_id

    def remove_pincode(self, automat_id: str, pincode_id: str) -> None:
        pincode = self.pincodes.get(pincode_id)
        if pincode is not None and pincode.automat_id == automat_id:
            pincode.removed = True

    def pincode_in_use(
        self,
        automat_id: str,
        code: str,
        valid_from: datetime,
        valid_until: datetime | None,
    ) -> bool:
        return any(
            (p.automat_id, p.code) == (automat_id, code)
            and (p.valid_until is None or p.valid_until > valid_from)
            and (valid_until is None or p.valid_from < valid_until)
            for p in self.live_pincodes().values()
        )

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
        """As the outbox's idempotency keys: an event published ``once`` again is dropped."""
        if once is not None and any(p.once == once for p in self.published):
            return
        self.published.append(Published(unit_id, str(event_type), data, at, once))

    def automat_views(self, automat_ids: Iterable[str]) -> dict[str, AutomatView]:
        return {a: self.automats[a] for a in set(automat_ids) if a in self.automats}

    def notify(
        self,
        view: ContractView,
        type_: NotificationType,
        *,
        now: datetime,
        key_id: str | None = None,
        event: str | None = None,
    ) -> None:
        self.notified.append(Notified(view, type_, now, key_id, event))

    def schedule_reminders(self, view: ContractView, now: datetime) -> None:
        self.reminders_scheduled.append(view)

    def remind(
        self, view: ContractView, type_: NotificationType, *, now: datetime, occasion: str
    ) -> None:
        """As the notification outbox: once per (contract, type, occasion)."""
        done = (view.contract_id, type_, occasion)
        if done not in {(r.view.contract_id, r.type, r.event) for r in self.reminded}:
            self.reminded.append(Notified(view, type_, now, None, occasion))

    def unit_settings(self, unit_id: str) -> OrgNotificationSettings:
        return self.settings.get(unit_id, OrgNotificationSettings())

    def reschedule_reminders(self, view: ContractView, now: datetime) -> None:
        self.reminders_rescheduled.append(view)

    def cancel_reminders(self, contract_id: str) -> None:
        self.reminders_cancelled.append(contract_id)

    def schedule_end(self, contract: Contract, now: datetime, *, fresh: bool = False) -> None:
        """(Re)plan the end evaluation at ``end``; nothing for an open end or one done."""
        if not fresh:
            self.cancel_end(contract.id)
        if contract.end is not None and contract.end_evaluated_at is None:
            self.ends_scheduled.append((contract.id, contract.end))
            self.ends_due[contract.id] = contract.end

    def cancel_end(self, contract_id: str) -> None:
        self.ends_cancelled.append(contract_id)
        self.ends_due.pop(contract_id, None)

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
        if once is not None and any(j.once == once for j in self.enqueued):
            return
        self.enqueued.append(Job(kind, payload, now, ref, due_at, once))

    def notice(
        self, unit_id: str, notice: str, *, occasion: str, facts: dict[str, Any], now: datetime
    ) -> None:
        if any((n.notice, n.occasion) == (notice, occasion) for n in self.notices):
            return
        self.notices.append(Notice(unit_id, notice, occasion, facts, now))


def _in_period(contract: Contract, filters: ListFilters, now: datetime) -> bool:
    """``store.period_condition`` on one contract: none given, all; several, their union."""
    ongoing, ended, future = filters.ongoing, filters.ended, filters.future
    if ongoing is None and ended is None and future is None:
        return True
    start, end, done = contract.start, contract.end, contract.completed_at is not None
    return bool(
        (future and start > now)
        or (ongoing and start <= now and (end is None or end > now) and not done)
        or (ended and ((end is not None and end <= now) or done))
    )


# The fake must stay a ContractStore: mypy checks this assignment against the Protocol.
_satisfies_the_protocol: ContractStore = FakeContractStore()
