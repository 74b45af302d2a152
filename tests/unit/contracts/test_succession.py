"""Back-to-back bookings on the fake store: the next contract's code waits for its key, goes
on the automat for the locker the key came back to, and a late key is told once."""

from __future__ import annotations

import pytest

from keyautomat.contracts import progress, service, succession
from keyautomat.contracts.kind import Kinds
from keyautomat.contracts.model import Contract, ContractChange, ContractKey, PlannedKey
from keyautomat.contracts.service import LATE_KIND
from keyautomat.domain import webhooks as wh
from keyautomat.domain.devices import AutomatEventType
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.notifications import NotificationType
from keyautomat.service_layer.admin_notices import KEY_DELAYED
from tests.unit.contracts.fakes import FakeContractStore
from tests.unit.contracts.world import (
    AUTOMAT,
    CALLER,
    END,
    HOUR,
    NOW,
    START,
    Scripted,
    ScriptedMechanical,
    create,
    draft,
    event,
    facts,
    new_store,
)

KINDS: Kinds = {"iloq": Scripted(), "mechanical": ScriptedMechanical()}
NEXT_START = END
NEXT_END = END + 5 * HOUR


def key(store: FakeContractStore, contract: Contract, position: int = 0) -> ContractKey:
    return store.stored(contract.id).key_at(position)


def codes(store: FakeContractStore) -> dict[str, int]:
    """The live codes on the automat, with the locker each opens."""
    return {p.code: p.locker_index for p in store.live_pincodes().values()}


def back_to_back(store: FakeContractStore, **first: object) -> tuple[Contract, Contract]:
    """Contract A over [START, END) and B over [END, END + 5 h), both for key-0 in locker 0."""
    a = create(store, pincodes=("111111",), **first)  # type: ignore[arg-type]
    b = create(store, pincodes=("222222",), start=NEXT_START, end=NEXT_END)
    return a, b


def fetch(store: FakeContractStore, contract: Contract) -> None:
    store.set_key(contract.id, 0, opened_at=NOW)
    progress.on_automat_event(store, KINDS, event(AutomatEventType.KEY_REMOVED, 0, at=NOW))


def put_back(store: FakeContractStore, locker_index: int, at: object = NOW) -> None:
    progress.on_automat_event(
        store,
        KINDS,
        event(AutomatEventType.KEY_INSERTED, locker_index, at=at),  # type: ignore[arg-type]
    )


def test_the_next_contracts_code_leaves_the_automat_while_the_key_is_out() -> None:
    store = new_store()
    a, b = back_to_back(store)
    assert codes(store) == {"111111": 0, "222222": 0}
    fetch(store, a)
    assert codes(store) == {"111111": 0}
    held = key(store, b)
    assert (held.pincode, held.pincode_id, held.held_since) == ("222222", None, NOW)
    (job,) = [j for j in store.enqueued if j.kind == LATE_KIND]
    assert job.payload == {"contractId": b.id, "position": 0}
    assert job.due_at == NEXT_START


def test_the_held_code_goes_back_for_its_locker_when_the_key_is_back() -> None:
    store = new_store()
    a, b = back_to_back(store)
    fetch(store, a)
    put_back(store, 0)
    assert codes(store) == {"111111": 0, "222222": 0}
    assert key(store, b).held_since is None
    # Back before the next start: nobody was told anything, so nothing more is said.
    assert [n for n in store.notified if n.view.contract_id == b.id][1:] == []


def test_a_key_back_in_another_locker_takes_its_next_contract_with_it() -> None:
    store = new_store(**{"key-0": facts(at=(AUTOMAT, 0))})
    a, b = back_to_back(store, free_locker_after_fetch=True)
    fetch(store, a)
    # The key register saw the key go into locker 4 (F10: any free locker of its automat).
    store.facts["key-0"] = facts(at=(AUTOMAT, 4))
    put_back(store, 4)
    assert key(store, a).in_history
    moved = key(store, b)
    assert (moved.locker_index, moved.held_since) == (4, None)
    assert codes(store) == {"222222": 4}
    assert [r.locker_index for r in store.reservations_of(b.id)] == [4]


def test_a_key_back_in_a_locker_another_contract_holds_keeps_the_code_held() -> None:
    store = new_store(**{"key-0": facts(at=(AUTOMAT, 0))})
    a, b = back_to_back(store, free_locker_after_fetch=True)
    # Another key's contract holds locker 4 over B's period.
    plan = draft(start=START, end=NEXT_END)
    plan.keys = [PlannedKey("key-9", "key-9", AUTOMAT, 4, reserved_key_id="key-9")]
    service.create(store, Scripted(), CALLER, plan, now=NOW)
    fetch(store, a)
    store.facts["key-0"] = facts(at=(AUTOMAT, 4))
    put_back(store, 4)
    assert key(store, b).held_since == NOW
    assert key(store, b).locker_index == 0
    assert "222222" not in codes(store)


def test_at_the_next_start_a_late_key_is_told_to_the_contact_the_integration_and_staff() -> None:
    store = new_store()
    a, b = back_to_back(store)
    fetch(store, a)
    store.published.clear()
    store.notified.clear()
    succession.check_late(store, KINDS, b.id, 0, NEXT_START)
    succession.check_late(store, KINDS, b.id, 0, NEXT_START)  # a job run twice
    assert [e["state"] for e in store.events(wh.EventType.KEY_STATUS)] == ["key-delayed"]
    assert store.events(wh.EventType.KEY_STATUS)[0]["contractId"] == b.id
    told = {(n.type, n.key_id, n.event) for n in store.notified}
    assert told == {(NotificationType.CONTRACT_KEY_DELAYED, "key-0", f"delayed:{NOW.isoformat()}")}
    (notice,) = store.notices
    assert notice.notice == KEY_DELAYED
    assert notice.facts["holder"] == a.id
    assert notice.facts["holder_contact"] == "Jane Guest, jane@example.com"


def test_the_late_check_says_nothing_once_the_key_is_back() -> None:
    store = new_store()
    a, b = back_to_back(store)
    fetch(store, a)
    put_back(store, 0)
    store.published.clear()
    succession.check_late(store, KINDS, b.id, 0, NEXT_START)
    assert store.events(wh.EventType.KEY_STATUS) == []
    assert store.notices == []


def test_a_late_check_before_a_start_moved_later_waits_for_the_new_start() -> None:
    store = new_store()
    a, b = back_to_back(store)
    fetch(store, a)
    store.stored(b.id).start = NEXT_START + HOUR
    succession.check_late(store, KINDS, b.id, 0, NEXT_START)
    assert store.notices == []
    assert [j.due_at for j in store.enqueued if j.kind == LATE_KIND] == [
        NEXT_START,
        NEXT_START + HOUR,
    ]


def test_a_late_key_back_after_the_start_tells_the_contact_it_is_ready() -> None:
    store = new_store()
    a, b = back_to_back(store)
    fetch(store, a)
    succession.check_late(store, KINDS, b.id, 0, NEXT_START)
    store.published.clear()
    later = NEXT_START + HOUR
    put_back(store, 0, at=later)
    (update,) = [e for e in store.events(wh.EventType.CONTRACT_UPDATE) if e["contractId"] == b.id]
    assert (update["pincode"], update["deviceId"]) == ("222222", AUTOMAT)
    ready = [n for n in store.notified if n.view.contract_id == b.id]
    assert [n.type for n in ready][-1] is NotificationType.CONTRACT_KEY_AVAILABLE
    assert codes(store)["222222"] == 0


def test_a_contract_booked_while_its_key_is_out_starts_with_its_code_held() -> None:
    store = new_store()
    b = create(store, pincodes=("333333",), in_place=False, start=NEXT_START, end=NEXT_END)
    assert codes(store) == {}
    assert key(store, b).held_since == NOW
    assert [j.due_at for j in store.enqueued if j.kind == LATE_KIND] == [NEXT_START]


def test_a_held_code_is_not_given_to_another_contract_of_the_automat() -> None:
    store = new_store()
    create(store, pincodes=("333333",), in_place=False, start=NEXT_START, end=NEXT_END)
    with pytest.raises(InvalidInput, match="Pincode already in use"):
        create(store, pincodes=("333333",), start=NEXT_START, end=NEXT_END)


def test_a_change_of_a_held_contract_keeps_its_code_off_the_automat() -> None:
    store = new_store()
    b = create(store, pincodes=("333333",), in_place=False, start=NEXT_START, end=NEXT_END)
    change = ContractChange(start=NEXT_START + HOUR, end=NEXT_END + HOUR)
    service.update(store, Scripted(), CALLER, b.id, change, now=NOW)
    assert codes(store) == {}
    assert key(store, b).held_since == NOW
    assert [j.due_at for j in store.enqueued if j.kind == LATE_KIND] == [
        NEXT_START,
        NEXT_START + HOUR,
    ]
