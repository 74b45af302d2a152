"""What happens to contract keys after creation (contracts/progress.py), on the fake store:
the automats' events, the fetch and the return, the end, and the reminder condition."""

from __future__ import annotations

from typing import Any

from keyautomat.contracts import progress
from keyautomat.contracts.iloq.kind import WIPE_KIND, IloqKind
from keyautomat.contracts.kind import Kinds
from keyautomat.contracts.mechanical.kind import MechanicalKind
from keyautomat.contracts.model import Contract, ContractKey
from keyautomat.contracts.rules import OPEN_END, ContractType, KeyStatus
from keyautomat.domain import webhooks as wh
from keyautomat.domain.devices import AutomatEventType, PincodePurpose
from keyautomat.domain.notifications import ContractKind as ViewKind
from keyautomat.domain.notifications import ContractType as ViewType
from keyautomat.domain.notifications import ContractView, NotificationType
from keyautomat.service_layer.notifications import HOLDS, Condition
from tests.unit.contracts.fakes import FakeContractStore
from tests.unit.contracts.world import (
    AUTOMAT,
    CONTACT,
    END,
    HOUR,
    NOW,
    START,
    Scripted,
    ScriptedMechanical,
    create,
    event,
    facts,
    new_store,
)

DEFAULT, FETCH, RETURN = ContractType.DEFAULT, ContractType.FETCH, ContractType.RETURN
CODE_ENTERED = AutomatEventType.CODE_ENTERED
REMOVED = AutomatEventType.KEY_REMOVED
INSERTED = AutomatEventType.KEY_INSERTED
LATER = NOW + HOUR

# The real kinds, for their hooks that use only the store.
KINDS: Kinds = {"iloq": IloqKind(), "mechanical": MechanicalKind("https://keys.example")}
# The base hooks, where a real hook would reach the iLOQ registry through SQL.
BASE: Kinds = {"iloq": Scripted(), "mechanical": ScriptedMechanical()}


def key(store: FakeContractStore, contract: Contract, position: int = 0) -> ContractKey:
    """The key as stored now."""
    return store.stored(contract.id).key_at(position)


def released(store: FakeContractStore, contract: Contract, position: int = 0) -> None:
    """The contract's code released the key (iLOQ: the key was programmed for it)."""
    store.set_key(contract.id, position, opened_at=NOW)


def fetched(
    store: FakeContractStore, contract: Contract, kinds: Kinds = KINDS, position: int = 0
) -> None:
    """The key was taken out of its locker after its code released it."""
    released(store, contract, position)
    progress.on_automat_event(store, kinds, event(REMOVED, position, at=NOW))


def statuses(store: FakeContractStore) -> list[dict[str, Any]]:
    return store.events(wh.EventType.KEY_STATUS)


def live_codes(store: FakeContractStore) -> list[str]:
    return [p.code for p in store.live_pincodes().values()]


def reservation(store: FakeContractStore, contract: Contract, position: int = 0) -> Any:
    (found,) = [r for r in store.reservations_of(contract.id) if r.position == position]
    return found


# --- the fetch -------------------------------------------------------------------------------


def test_taking_out_a_key_its_code_released_marks_it_fetched() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    assert key(store, contract).status == KeyStatus.FETCHED


def test_a_fetch_publishes_key_fetched_with_the_automat_and_locker() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    assert statuses(store) == [
        {
            "state": "key-fetched",
            "storageType": "device",
            "deviceId": AUTOMAT,
            "lockerIndex": 0,
            "keyId": "key-0",
            "contractId": contract.id,
            "contractObjectId": contract.id,
        }
    ]


def test_a_fetch_tells_the_contact_which_key_was_fetched() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    last = store.notified[-1]
    assert (last.type, last.key_id, last.event) == (
        NotificationType.CONTRACT_KEY_FETCHED,
        "key-0",
        NOW.isoformat(),
    )


def test_a_default_contracts_fetch_keeps_the_locker_and_the_code_for_the_return() -> None:
    store = new_store()
    contract = create(store, pincodes=("482910",))
    fetched(store, contract)
    assert (reservation(store, contract).until, live_codes(store)) == (END, ["482910"])
    assert not key(store, contract).in_history


def test_taking_out_a_key_its_code_did_not_release_is_no_fetch() -> None:
    store = new_store()
    contract = create(store)
    progress.on_automat_event(store, KINDS, event(REMOVED))  # a service opening
    assert key(store, contract).status is None
    assert statuses(store) == []


def test_taking_out_another_key_than_the_contracts_is_no_fetch() -> None:
    store = new_store()
    contract = create(store)
    released(store, contract)
    progress.on_automat_event(store, KINDS, event(REMOVED, key_id="someone-elses"))
    assert key(store, contract).status is None


def test_a_fetch_contracts_fetch_retires_the_key_and_spends_its_code() -> None:
    store = new_store()
    contract = create(store, FETCH)
    fetched(store, contract, BASE)
    assert (key(store, contract).in_history, key(store, contract).pincode) == (True, None)
    assert live_codes(store) == []


def test_a_fetch_contracts_fetch_frees_the_locker_at_once() -> None:
    store = new_store()
    contract = create(store, FETCH)
    fetched(store, contract, BASE)
    assert (reservation(store, contract).until, reservation(store, contract).counted) == (
        NOW,
        False,
    )


def test_a_fetch_contract_is_complete_once_its_last_key_is_fetched() -> None:
    store = new_store()
    contract = create(store, FETCH, keys=2)
    fetched(store, contract, BASE, position=0)
    assert store.stored(contract.id).completed_at is None
    fetched(store, contract, BASE, position=1)
    assert store.stored(contract.id).completed_at == NOW


def test_free_locker_after_fetch_frees_the_locker_and_removes_the_code() -> None:
    store = new_store()
    contract = create(store, free_locker_after_fetch=True)
    fetched(store, contract)
    assert (reservation(store, contract).until, live_codes(store)) == (NOW, [])
    assert key(store, contract).pincode is None


def test_free_locker_after_fetch_keeps_the_key_due_back() -> None:
    store = new_store()
    contract = create(store, free_locker_after_fetch=True)
    fetched(store, contract)
    assert (key(store, contract).status, key(store, contract).in_history) == (
        KeyStatus.FETCHED,
        False,
    )
    assert store.stored(contract.id).completed_at is None


def test_a_manual_key_handed_over_by_staff_publishes_key_fetched_without_device_fields() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical(), manual=True)
    loaded = store.load(contract.id)
    assert loaded is not None
    progress.fetched(store, KINDS["mechanical"], loaded, loaded.keys[0], NOW)
    assert statuses(store) == [
        {
            "state": "key-fetched",
            "storageType": "manualStorage",
            "keyId": "key-0",
            "contractId": contract.public_id,
            "contractObjectId": contract.id,
        }
    ]


# --- the return ------------------------------------------------------------------------------


def test_putting_a_fetched_key_back_marks_it_returned_and_keeps_it_in_the_contract() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER))
    assert (key(store, contract).status, key(store, contract).in_history) == (
        KeyStatus.RETURNED,
        False,
    )


def test_a_key_back_in_time_must_be_released_by_its_code_again_before_the_next_fetch() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER))
    assert key(store, contract).opened_at is None
    progress.on_automat_event(store, KINDS, event(REMOVED, at=LATER))
    assert key(store, contract).status == KeyStatus.RETURNED


def test_a_key_back_in_time_keeps_its_code_and_its_locker() -> None:
    store = new_store()
    contract = create(store, pincodes=("482910",))
    fetched(store, contract)
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER))
    assert (reservation(store, contract).until, live_codes(store)) == (END, ["482910"])


def test_a_return_publishes_key_returned_and_tells_the_contact() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER))
    assert statuses(store)[-1]["state"] == "key-returned"
    assert store.notified[-1].type is NotificationType.CONTRACT_KEY_RETURNED


def test_the_iloq_kind_queues_a_returned_key_for_wiping() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER))
    assert [(j.kind, j.payload["keyId"], j.ref) for j in store.enqueued] == [
        (WIPE_KIND, "key-0", "key:key-0")
    ]


def test_a_late_return_retires_the_key_and_frees_its_locker() -> None:
    store = new_store()
    contract = create(store, pincodes=("482910",))
    fetched(store, contract)
    store.set_key(contract.id, 0, status=KeyStatus.NOT_RETURNED.value)
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER))
    assert (key(store, contract).in_history, live_codes(store)) == (True, [])
    assert reservation(store, contract).until == LATER


def test_a_late_return_of_the_last_key_completes_the_contract() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    store.set_key(contract.id, 0, status=KeyStatus.NOT_RETURNED.value)
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER))
    assert store.stored(contract.id).completed_at == LATER


def test_a_return_after_the_end_was_evaluated_retires_the_key() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    store.stored(contract.id).end_evaluated_at = NOW
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER))
    assert key(store, contract).in_history


def test_a_key_put_into_another_locker_than_its_own_is_no_return() -> None:
    store = new_store()
    contract = create(store, keys=2)
    fetched(store, contract)
    progress.on_automat_event(store, KINDS, event(INSERTED, 1, at=LATER))
    assert key(store, contract).status == KeyStatus.FETCHED


def test_a_key_whose_locker_was_freed_comes_back_into_any_locker_of_its_automat() -> None:
    store = new_store(**{"key-0": facts(at=(AUTOMAT, 3))})  # the register placed it
    contract = create(store, kind=ScriptedMechanical(), free_locker_after_fetch=True)
    fetched(store, contract)
    progress.on_automat_event(store, KINDS, event(INSERTED, 3, at=LATER))
    returned = key(store, contract)
    assert (returned.status, returned.locker_index, returned.in_history) == (
        KeyStatus.RETURNED,
        3,
        True,
    )
    assert statuses(store)[-1]["lockerIndex"] == 3


def test_the_mechanical_kind_takes_no_return_the_register_did_not_place_there() -> None:
    store = new_store(**{"key-0": facts(at=(AUTOMAT, 2))})
    contract = create(store, kind=ScriptedMechanical())
    fetched(store, contract)
    progress.on_automat_event(store, KINDS, event(INSERTED, 0, at=LATER))
    assert key(store, contract).status == KeyStatus.FETCHED


def test_a_return_contracts_key_put_in_is_retired() -> None:
    store = new_store()
    contract = create(store, RETURN)
    progress.on_automat_event(store, BASE, event(INSERTED, at=LATER))
    assert (key(store, contract).status, key(store, contract).in_history) == (
        KeyStatus.RETURNED,
        True,
    )
    assert store.stored(contract.id).completed_at == LATER


# --- codes typed at the automat --------------------------------------------------------------


def enter_code(store: FakeContractStore, contract: Contract, kinds: Kinds = KINDS) -> None:
    code_key = key(store, contract)
    progress.on_automat_event(
        store, kinds, event(CODE_ENTERED, code=code_key.pincode, pincodeId=code_key.pincode_id)
    )


def test_a_code_entered_for_a_default_contract_publishes_its_contract() -> None:
    store = new_store()
    contract = create(store, pincodes=("482910",))
    enter_code(store, contract)
    assert store.events(wh.EventType.CODE_ENTERED) == [
        {
            "codeType": "right-pincode",
            "code": "482910",
            "deviceId": AUTOMAT,
            "lockerIndex": 0,
            "keyId": "key-0",
            "contractId": contract.id,
            "contractObjectId": contract.id,
        }
    ]


def test_a_code_entered_for_a_return_contract_publishes_no_contract_id() -> None:
    store = new_store()
    contract = create(store, RETURN)
    enter_code(store, contract, BASE)
    (data,) = store.events(wh.EventType.CODE_ENTERED)
    assert data["codeType"] == "right-return-code"
    assert "contractId" not in data
    assert data["contractObjectId"] == contract.id


def test_a_code_no_contract_knows_publishes_nothing() -> None:
    store = new_store()
    create(store)
    before = len(store.published)
    progress.on_automat_event(store, KINDS, event(CODE_ENTERED, code="999999", pincodeId="other"))
    assert store.published[before:] == []


def test_the_mechanical_kind_marks_a_key_opened_by_its_code() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical())
    enter_code(store, contract)
    assert key(store, contract).opened_at == NOW


def test_in_the_mechanical_kind_a_code_then_a_removal_is_a_fetch() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical())
    enter_code(store, contract)
    progress.on_automat_event(store, KINDS, event(REMOVED, at=LATER))
    assert key(store, contract).status == KeyStatus.FETCHED


def test_the_mechanical_kind_does_not_mark_a_key_out_opened_by_its_return_code() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical())
    fetched(store, contract)
    store.set_key(contract.id, 0, opened_at=None)
    enter_code(store, contract)
    assert key(store, contract).opened_at is None


def test_the_mechanical_kind_accepts_a_removal_reported_by_rfid() -> None:
    store = new_store(**{"key-0": facts(rfid_hex="1A2B3C")})
    contract = create(store, kind=ScriptedMechanical())
    released(store, contract)
    progress.on_automat_event(store, KINDS, event(REMOVED, key_id="tag:1a2b3c", rfid="1a2b3c"))
    assert key(store, contract).status == KeyStatus.FETCHED


def test_the_mechanical_kind_refuses_a_removal_of_another_rfid() -> None:
    store = new_store(**{"key-0": facts(rfid_hex="1A2B3C")})
    contract = create(store, kind=ScriptedMechanical())
    released(store, contract)
    progress.on_automat_event(store, KINDS, event(REMOVED, key_id="tag:ffff", rfid="ffff"))
    assert key(store, contract).status is None


# --- which contract an event moved (the console's timeline) ---------------------------------


def test_the_code_the_fetch_and_the_return_each_name_the_contract_they_moved() -> None:
    store = new_store()
    contract = create(store)
    code_key = key(store, contract)
    progress.on_automat_event(
        store,
        KINDS,
        event(CODE_ENTERED, code=code_key.pincode, pincodeId=code_key.pincode_id, event_id=7),
    )
    released(store, contract)
    progress.on_automat_event(store, KINDS, event(REMOVED, event_id=8))
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER, event_id=9))
    assert store.linked_events == {7: contract.id, 8: contract.id, 9: contract.id}


def test_an_event_that_moves_no_contract_names_none() -> None:
    store = new_store()
    create(store)
    progress.on_automat_event(store, KINDS, event(REMOVED, event_id=5))  # not released: no fetch
    progress.on_automat_event(store, KINDS, event(CODE_ENTERED, code="999999", pincodeId="x"))
    assert store.linked_events == {}


# --- the end of a contract -------------------------------------------------------------------


def end(store: FakeContractStore, contract: Contract) -> int:
    return progress.evaluate_end(store, contract.id, END)


def test_at_the_end_a_key_never_fetched_becomes_key_not_fetched_and_history() -> None:
    store = new_store()
    contract = create(store)
    assert end(store, contract) == 1
    assert (key(store, contract).status, key(store, contract).in_history) == (
        KeyStatus.NOT_FETCHED,
        True,
    )


def test_at_the_end_a_key_never_fetched_gives_up_its_locker_and_code() -> None:
    store = new_store()
    contract = create(store)
    end(store, contract)
    assert (live_codes(store), reservation(store, contract).counted) == ([], False)


def test_the_end_publishes_each_outcome_once_at_the_contracts_end() -> None:
    store = new_store()
    contract = create(store)
    end(store, contract)
    assert end(store, contract) == 0
    assert [(p.data["state"], p.at) for p in store.published if p.event_type == "key-status"] == [
        ("key-not-fetched", END)
    ]


def test_at_the_end_a_key_still_out_becomes_key_not_returned() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    end(store, contract)
    assert (key(store, contract).status, key(store, contract).in_history) == (
        KeyStatus.NOT_RETURNED,
        False,
    )
    assert statuses(store)[-1]["state"] == "key-not-returned"


def test_a_key_still_out_at_the_end_keeps_its_locker_until_it_is_back() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    end(store, contract)
    assert (reservation(store, contract).until, reservation(store, contract).counted) == (
        OPEN_END,
        True,
    )


def test_a_key_still_out_at_the_end_keeps_a_code_that_opens_its_locker_for_the_return() -> None:
    store = new_store()
    contract = create(store, pincodes=("482910",))
    fetched(store, contract)
    end(store, contract)
    (code,) = store.live_pincodes().values()
    assert (code.code, code.purpose, code.valid_from, code.valid_until) == (
        "482910",
        PincodePurpose.RETURN,
        START,
        None,
    )
    assert store.live_pincodes().keys() == {key(store, contract).pincode_id}


def test_a_key_out_whose_locker_was_freed_keeps_no_locker_or_code_at_the_end() -> None:
    store = new_store()
    contract = create(store, free_locker_after_fetch=True)
    fetched(store, contract)
    end(store, contract)
    assert key(store, contract).status == KeyStatus.NOT_RETURNED
    assert (live_codes(store), reservation(store, contract).until) == ([], NOW)


def test_a_manual_key_out_at_the_end_is_not_returned_and_keeps_nothing() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical(), manual=True)
    loaded = store.load(contract.id)
    assert loaded is not None
    progress.fetched(store, KINDS["mechanical"], loaded, loaded.keys[0], NOW)
    end(store, contract)
    assert key(store, contract).status == KeyStatus.NOT_RETURNED
    assert (store.pincodes, store.reservations) == ({}, [])


def test_at_the_end_a_return_contracts_key_not_brought_back_is_not_returned_and_history() -> None:
    store = new_store()
    contract = create(store, RETURN)
    end(store, contract)
    assert (key(store, contract).status, key(store, contract).in_history) == (
        KeyStatus.NOT_RETURNED,
        True,
    )
    assert live_codes(store) == []


def test_at_the_end_a_key_back_in_place_is_retired_and_the_contract_completed() -> None:
    store = new_store()
    contract = create(store)
    fetched(store, contract)
    progress.on_automat_event(store, KINDS, event(INSERTED, at=LATER))
    assert end(store, contract) == 0
    assert key(store, contract).in_history
    assert store.stored(contract.id).completed_at == END


def test_the_end_stops_counting_the_contracts_reservations_that_are_over() -> None:
    store = new_store()
    contract = create(store, keys=2)
    fetched(store, contract, position=1)
    end(store, contract)
    assert [(r.position, r.counted) for r in store.reservations_of(contract.id)] == [
        (0, False),
        (1, True),
    ]


def test_a_deleted_contracts_end_is_not_evaluated() -> None:
    store = new_store()
    contract = create(store)
    store.contracts[contract.id].deleted_at = NOW
    assert end(store, contract) == 0
    assert statuses(store) == []


# --- whether a scheduled message still applies -----------------------------------------------


def view_of(contract_id: str) -> ContractView:
    return ContractView(
        kind=ViewKind.ILOQ,
        contract_id=contract_id,
        contract_type=ViewType.DEFAULT,
        organization_unit_id="ou-1",
        start=START,
        end=END,
        contact=CONTACT,
    )


def test_a_reminder_about_a_contract_the_store_does_not_know_holds() -> None:
    store = new_store()
    condition = progress.condition(
        store, view_of("elsewhere"), NotificationType.CONTRACT_END_REMINDER
    )
    assert condition == HOLDS


def test_a_reminder_about_a_deleted_contract_does_not_hold() -> None:
    store = new_store()
    contract = create(store)
    store.contracts[contract.id].deleted_at = NOW
    condition = progress.condition(
        store, view_of(contract.id), NotificationType.CONTRACT_START_REMINDER
    )
    assert condition == Condition(holds=False, reason="contract deleted")


def test_a_start_reminder_holds_whatever_the_keys_do() -> None:
    store = new_store()
    contract = create(store)
    condition = progress.condition(
        store, view_of(contract.id), NotificationType.CONTRACT_START_REMINDER
    )
    assert condition == HOLDS


def test_an_end_reminder_lists_the_keys_still_out() -> None:
    store = new_store()
    contract = create(store, keys=3)
    fetched(store, contract, position=0)
    fetched(store, contract, position=2)
    condition = progress.condition(
        store, view_of(contract.id), NotificationType.CONTRACT_END_REMINDER
    )
    assert condition == Condition(holds=True, missing_key_ids=("key-0", "key-2"))


def test_a_keys_not_returned_notice_does_not_hold_once_every_key_is_back() -> None:
    store = new_store()
    contract = create(store)
    condition = progress.condition(
        store, view_of(contract.id), NotificationType.CONTRACT_KEYS_NOT_RETURNED
    )
    assert condition == Condition(holds=False, reason="every key is back")
