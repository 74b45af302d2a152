"""Overdue keys on the fake store: what the end plans, and what each stage tells, once."""

from __future__ import annotations

from datetime import timedelta

from keyautomat.contracts import overdue, progress
from keyautomat.contracts.kind import Kinds
from keyautomat.contracts.model import Contract
from keyautomat.domain.notifications import NotificationType, OrgNotificationSettings
from keyautomat.service_layer.admin_notices import KEYS_OVERDUE
from tests.unit.contracts.fakes import FakeContractStore
from tests.unit.contracts.world import (
    END,
    NOW,
    UNIT,
    Scripted,
    ScriptedMechanical,
    create,
    new_store,
)

KINDS: Kinds = {"iloq": Scripted(), "mechanical": ScriptedMechanical()}
HOUR = timedelta(hours=1)


def out(store: FakeContractStore, *, manual: bool = False) -> Contract:
    """A contract whose key was handed out and is still out when its end is evaluated."""
    contract = create(store, manual=manual)
    loaded = store.load(contract.id)
    assert loaded is not None
    progress.fetched(store, KINDS["iloq"], loaded, loaded.key_at(0), NOW)
    progress.evaluate_end(store, contract.id, END)
    return contract


def jobs(store: FakeContractStore) -> list[tuple[str, object]]:
    return [
        (j.payload["stage"], j.due_at) for j in store.enqueued if j.kind == overdue.OVERDUE_KIND
    ]


def run(store: FakeContractStore, contract: Contract, stage: str, at: object = None) -> None:
    overdue.check(store, KINDS, contract.id, stage, END.isoformat(), at or END + 2 * HOUR)  # type: ignore[arg-type]


def test_an_automat_key_out_at_the_end_is_overdue_after_the_units_delay() -> None:
    store = new_store()
    store.settings[UNIT] = OrgNotificationSettings(overdue_after=timedelta(minutes=30))
    out(store)
    assert jobs(store) == [(overdue.LATER, END + timedelta(minutes=30))]


def test_a_manual_storage_key_out_at_the_end_is_overdue_at_once() -> None:
    store = new_store()
    out(store, manual=True)
    assert jobs(store) == [(overdue.AT_END, END), (overdue.LATER, END + HOUR)]


def test_nothing_is_planned_when_every_key_is_back_at_the_end() -> None:
    store = new_store()
    create(store)
    progress.evaluate_end(store, next(iter(store.contracts)), END)
    assert jobs(store) == []


def test_the_staff_are_told_once_which_keys_are_overdue_and_whom_to_call() -> None:
    store = new_store()
    contract = out(store)
    run(store, contract, overdue.LATER)
    run(store, contract, overdue.LATER)  # a job run twice
    (notice,) = store.notices
    assert notice.notice == KEYS_OVERDUE
    assert notice.facts == {
        "contract": contract.id,
        "kind": "iloq",
        "end_at": "2025-06-01T17:00:00.000Z",
        "contact": "Jane Guest, jane@example.com",
        "keys": [{"key": "key-0", "place": "Lobby, locker 0"}],
    }
    assert store.reminded == []  # the unit does not remind its guests


def test_the_end_stage_names_only_manual_keys_and_the_later_one_only_automat_keys() -> None:
    store = new_store()
    contract = out(store, manual=True)
    run(store, contract, overdue.LATER)
    assert store.notices == []
    run(store, contract, overdue.AT_END, END)
    assert [n.facts["keys"] for n in store.notices] == [[{"key": "key-0", "place": "Shelf 1"}]]


def test_a_unit_that_enables_it_reminds_its_guest_too_once() -> None:
    store = new_store()
    store.settings[UNIT] = OrgNotificationSettings(guest_overdue_reminders=True)
    contract = out(store, manual=True)
    run(store, contract, overdue.LATER)
    run(store, contract, overdue.LATER)
    assert [(r.type, r.event) for r in store.reminded] == [
        (NotificationType.CONTRACT_KEYS_NOT_RETURNED, f"overdue:{END.isoformat()}")
    ]


def test_a_key_back_before_its_stage_is_not_mentioned() -> None:
    store = new_store()
    store.settings[UNIT] = OrgNotificationSettings(guest_overdue_reminders=True)
    contract = out(store)
    loaded = store.load(contract.id)
    assert loaded is not None
    progress.returned(store, KINDS["iloq"], loaded, loaded.key_at(0), END + HOUR, 0)
    run(store, contract, overdue.LATER)
    assert store.notices == []
    assert store.reminded == []


def test_a_stage_of_an_end_that_moved_says_nothing() -> None:
    store = new_store()
    contract = out(store)
    store.stored(contract.id).end = END + 5 * HOUR
    run(store, contract, overdue.LATER)
    assert store.notices == []
