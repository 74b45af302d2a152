"""The one contract flow (contracts/service.py) on the fake store: create, get, list, change
and delete, and the hooks of each kind that go through the store only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from keyautomat.contracts import service
from keyautomat.contracts.iloq.kind import IloqKind
from keyautomat.contracts.mechanical.kind import MechanicalKind
from keyautomat.contracts.model import Contract, ContractChange, ListFilters, Period
from keyautomat.contracts.rules import OPEN_END, ContractType, KeyStatus
from keyautomat.domain import webhooks as wh
from keyautomat.domain.devices import PincodePurpose
from keyautomat.domain.errors import Conflict, InvalidInput, NotFound
from keyautomat.domain.notifications import NotificationType
from keyautomat.service_layer.pagination import PageRequest
from tests.unit.contracts.fakes import FakeContractStore
from tests.unit.contracts.world import (
    AUTOMAT,
    CALLER,
    END,
    HOUR,
    NOW,
    OUTSIDER,
    START,
    ScriptedMechanical,
    create,
    facts,
    new_store,
)

DEFAULT, FETCH, RETURN = ContractType.DEFAULT, ContractType.FETCH, ContractType.RETURN
ILOQ = IloqKind()
MECHANICAL = MechanicalKind("https://keys.example/")


def windows(store: FakeContractStore) -> list[tuple[datetime, datetime]]:
    return [(r.start, r.until) for r in store.reservations]


def codes_of(store: FakeContractStore) -> list[str]:
    return sorted(p.code for p in store.live_pincodes().values())


def set_status(
    store: FakeContractStore, contract: Contract, status: KeyStatus, at: int = 0
) -> None:
    store.set_key(contract.id, at, status=status.value)


# --- create ----------------------------------------------------------------------------------


def test_a_new_contract_books_each_keys_locker_from_its_start_to_its_end() -> None:
    store = new_store()
    contract = create(store, keys=2)
    assert [
        (r.contract_id, r.position, r.automat_id, r.locker_index, r.key_id, r.start, r.until)
        for r in store.reservations
    ] == [
        (contract.id, 0, AUTOMAT, 0, "key-0", START, END),
        (contract.id, 1, AUTOMAT, 1, "key-1", START, END),
    ]


def test_a_new_fetch_contract_books_its_key_until_the_fetch() -> None:
    store = new_store()
    create(store, FETCH)
    assert windows(store) == [(START, OPEN_END)]


def test_a_new_return_contract_books_an_empty_locker_for_the_key_to_come() -> None:
    store = new_store()
    create(store, RETURN)
    assert [(r.locker_index, r.key_id) for r in store.reservations] == [(0, None)]


def test_a_new_contract_puts_each_keys_code_on_its_automat_for_the_contracts_window() -> None:
    store = new_store()
    contract = create(store, pincodes=("482910",))
    (code,) = store.live_pincodes().values()
    assert (code.automat_id, code.code, code.locker_index, code.key_id, code.reference) == (
        AUTOMAT,
        "482910",
        0,
        "key-0",
        contract.id,
    )
    assert (code.valid_from, code.valid_until, code.purpose) == (
        START,
        END,
        PincodePurpose.DEFAULT,
    )


def test_a_new_contract_remembers_the_code_the_automat_honours() -> None:
    store = new_store()
    contract = create(store, pincodes=("482910",))
    stored = store.stored(contract.id).keys[0]
    assert (stored.pincode, store.pincodes[str(stored.pincode_id)].code) == ("482910", "482910")


def test_a_fetch_code_is_valid_until_the_fetch_spends_it() -> None:
    store = new_store()
    create(store, FETCH)
    (code,) = store.live_pincodes().values()
    assert (code.valid_until, code.purpose) == (None, PincodePurpose.FETCH)


@pytest.mark.parametrize(
    ("contract_type", "first"),
    [
        pytest.param(DEFAULT, True, id="a default key is programmed before the locker opens"),
        pytest.param(FETCH, True, id="a fetch key is programmed before the locker opens"),
        pytest.param(RETURN, False, id="an empty locker for a return opens at once"),
    ],
)
def test_the_iloq_kind_asks_the_automat_to_call_before_opening(
    contract_type: ContractType, first: bool
) -> None:
    assert ILOQ.program_first(contract_type) is first


def test_a_drawn_code_is_six_digits() -> None:
    store = new_store()
    create(store)
    (code,) = codes_of(store)
    assert len(code) == 6
    assert code.isdigit()


def test_a_callers_code_in_use_on_the_automat_then_is_refused_naming_its_field() -> None:
    store = new_store()
    create(store, pincodes=("482910",))
    with pytest.raises(InvalidInput, match=r"^pincodes\.0: Pincode already in use$"):
        create(store, pincodes=("482910",))


def test_a_callers_code_in_use_at_another_time_is_accepted() -> None:
    store = new_store()
    create(store, pincodes=("482910",))
    create(store, pincodes=("482910",), start=END, end=END + HOUR)
    assert codes_of(store) == ["482910", "482910"]


def test_the_same_code_twice_in_one_contract_is_refused_naming_the_second() -> None:
    store = new_store()
    with pytest.raises(InvalidInput, match=r"^pincodes\.1: Pincode already in use$"):
        create(store, keys=2, pincodes=("482910", "482910"))


def test_a_drawn_code_in_use_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    store = new_store()
    create(store, pincodes=("111111",))
    draws: Iterator[str] = iter(["111111", "222222"])
    monkeypatch.setattr(service, "new_pincode", lambda: next(draws))
    create(store)
    assert codes_of(store) == ["111111", "222222"]


def test_a_manual_key_gets_no_code_and_books_no_locker() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical(), manual=True)
    assert (store.pincodes, store.reservations) == ({}, [])
    assert store.stored(contract.id).keys[0].manual_info == "Shelf 1"


def test_a_contract_awaiting_a_signature_keeps_its_codes_off_the_automat() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical(), user_verification="1")
    stored = store.stored(contract.id).keys[0]
    assert (store.pincodes, stored.pincode_id) == ({}, None)
    assert stored.pincode is not None


def test_a_code_chosen_for_a_contract_awaiting_a_signature_is_taken() -> None:
    store = new_store()
    create(store, kind=ScriptedMechanical(), user_verification="1", pincodes=("482910",))
    with pytest.raises(InvalidInput, match="Pincode already in use"):
        create(store, kind=ScriptedMechanical(), pincodes=("482910",))


def test_a_new_contract_publishes_a_contract_update_per_key() -> None:
    store = new_store()
    contract = create(store, keys=2, pincodes=("482910", "773201"))
    updates = store.events(wh.EventType.CONTRACT_UPDATE)
    assert [(u["keyId"], u["pincode"], u["deviceId"]) for u in updates] == [
        ("key-0", "482910", AUTOMAT),
        ("key-1", "773201", AUTOMAT),
    ]
    assert {u["contractObjectId"] for u in updates} == {contract.id}


def test_a_manual_keys_contract_update_has_no_code_and_no_automat() -> None:
    store = new_store()
    create(store, kind=ScriptedMechanical(), manual=True)
    (update,) = store.events(wh.EventType.CONTRACT_UPDATE)
    assert "pincode" not in update
    assert "deviceId" not in update


def test_a_new_contract_tells_the_contact_and_plans_its_reminders_and_its_end() -> None:
    store = new_store()
    contract = create(store)
    assert [n.type for n in store.notified] == [NotificationType.CONTRACT_CREATED]
    assert [v.contract_id for v in store.reminders_scheduled] == [contract.id]
    assert store.ends_due == {contract.id: END}


def test_a_new_contract_without_an_end_plans_no_end_evaluation() -> None:
    store = new_store()
    create(store, FETCH)
    assert store.ends_due == {}


def test_a_contract_awaiting_a_signature_sends_the_signature_request() -> None:
    store = new_store()
    create(store, kind=ScriptedMechanical(), user_verification="1")
    assert [n.type for n in store.notified] == [
        NotificationType.CONTRACT_CREATED,
        NotificationType.CONTRACT_SIGNATURE_REQUESTED,
    ]


# --- what notifications show -----------------------------------------------------------------


def test_a_view_hides_the_codes_while_a_signature_is_awaited_and_links_the_signature() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical(), user_verification="1")
    view = service.notification_view(store, MECHANICAL, contract)
    assert [k.pincode for k in view.keys] == [None]
    assert view.signature_link == "https://keys.example/sign/signature-token"


def test_a_view_shows_the_codes_and_the_automat_of_each_key() -> None:
    store = new_store()
    contract = create(store, pincodes=("482910",))
    (key,) = service.notification_view(store, ILOQ, contract).keys
    assert (key.id, key.pincode, key.automat and key.automat.name) == ("key-0", "482910", "Lobby")


def test_a_mechanical_view_names_the_keys_as_the_register_does() -> None:
    store = new_store(**{"key-0": facts(name="Room 101")})
    contract = create(store, kind=ScriptedMechanical())
    assert [k.name for k in service.notification_view(store, MECHANICAL, contract).keys] == [
        "Room 101"
    ]


def test_a_view_lists_only_the_keys_still_in_the_contract() -> None:
    store = new_store()
    contract = create(store, keys=2)
    store.set_key(contract.id, 0, in_history=True)
    loaded = store.load(contract.id)
    assert loaded is not None
    assert [k.id for k in service.notification_view(store, ILOQ, loaded).keys] == ["key-1"]


# --- read ------------------------------------------------------------------------------------


def test_a_contract_is_found_by_its_id_in_the_callers_unit() -> None:
    store = new_store()
    contract = create(store)
    assert service.get(store, ILOQ, CALLER, contract.id).id == contract.id


def test_a_contract_of_another_unit_is_not_found() -> None:
    store = new_store()
    contract = create(store)
    with pytest.raises(NotFound):
        service.get(store, ILOQ, OUTSIDER, contract.id)


def test_a_list_page_says_where_the_next_one_starts() -> None:
    store = new_store()
    first = create(store)
    create(store, start=END, end=END + HOUR, now=NOW + HOUR)  # lists are in creation order
    page = service.list_contracts(store, ILOQ, CALLER, PageRequest(0, 1), ListFilters(), now=NOW)
    assert ([c.id for c in page.items], page.next_offset, page.has_next) == ([first.id], 1, True)


# --- change ----------------------------------------------------------------------------------


def patch(store: FakeContractStore, contract: Contract, **change: Any) -> Contract:
    return service.update(store, ILOQ, CALLER, contract.id, ContractChange(**change), now=NOW)


def test_patch_refuses_a_start_change_once_a_key_has_moved() -> None:
    store = new_store()
    contract = create(store)
    set_status(store, contract, KeyStatus.FETCHED)
    with pytest.raises(InvalidInput, match=r"^start: cannot change once a key"):
        patch(store, contract, start=START - HOUR)


def test_patch_of_the_end_moves_the_reservations() -> None:
    store = new_store()
    contract = create(store)
    patch(store, contract, end=END + HOUR)
    assert windows(store) == [(START, END + HOUR)]


def test_patch_of_the_end_gives_the_codes_the_new_window() -> None:
    store = new_store()
    contract = create(store, pincodes=("482910",))
    patch(store, contract, end=END + HOUR)
    (code,) = store.live_pincodes().values()
    assert (code.code, code.valid_until) == ("482910", END + HOUR)
    assert store.stored(contract.id).keys[0].pincode_id in store.live_pincodes()


def test_patch_of_the_end_plans_the_end_evaluation_again() -> None:
    store = new_store()
    contract = create(store)
    patch(store, contract, end=END + HOUR)
    assert store.ends_due == {contract.id: END + HOUR}


def test_patch_refuses_a_period_in_which_another_contract_holds_the_key() -> None:
    store = new_store()
    contract = create(store)
    create(store, start=END + HOUR, end=END + 2 * HOUR)
    with pytest.raises(Conflict, match=r"^Overlapping contract$"):
        patch(store, contract, end=END + 2 * HOUR)


def test_patch_may_not_remove_a_default_iloq_contracts_end() -> None:
    store = new_store()
    contract = create(store)
    with pytest.raises(InvalidInput, match=r"^end: is required for default contracts$"):
        patch(store, contract, end=None)


def test_patch_ignores_the_end_of_a_fetch_contract() -> None:
    store = new_store()
    contract = create(store, FETCH)
    assert patch(store, contract, end=END).end is None


def test_extending_a_contract_whose_end_was_evaluated_evaluates_it_again() -> None:
    store = new_store()
    contract = create(store)
    store.stored(contract.id).end_evaluated_at = NOW
    patch(store, contract, end=END + HOUR)
    assert store.stored(contract.id).end_evaluated_at is None
    assert store.ends_due == {contract.id: END + HOUR}


def test_patch_tells_the_contact_and_plans_the_reminders_again() -> None:
    store = new_store()
    contract = create(store)
    patch(store, contract, end=END + HOUR)
    assert store.notified[-1].type is NotificationType.CONTRACT_UPDATED
    assert [v.end for v in store.reminders_rescheduled] == [END + HOUR]


def test_the_mechanical_kind_refuses_pick_up_info_on_a_contract_of_automat_keys() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical())
    change = ContractChange(pick_up_info="Desk")
    with pytest.raises(InvalidInput, match=r"^pickUpInfoForManualStorageKeys: "):
        MECHANICAL.change_terms(store, contract, change, NOW)


def test_the_mechanical_kind_refuses_a_period_in_which_another_contract_has_the_key() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical())
    create(store, kind=ScriptedMechanical(), start=END + HOUR, end=END + 2 * HOUR)
    with pytest.raises(Conflict, match=r"^Overlapping contract$"):
        MECHANICAL.check_period_free(store, contract, Period(START, END + 2 * HOUR, END + 2 * HOUR))


def test_the_mechanical_kind_lets_periods_of_a_shared_automat_key_overlap() -> None:
    store = new_store(**{"key-0": facts(shared=True)})
    contract = create(store, kind=ScriptedMechanical())
    create(store, kind=ScriptedMechanical(), start=END + HOUR, end=END + 2 * HOUR)
    MECHANICAL.check_period_free(store, contract, Period(START, END + 2 * HOUR, END + 2 * HOUR))


# --- delete ----------------------------------------------------------------------------------


def delete(store: FakeContractStore, contract: Contract) -> None:
    service.delete(store, ILOQ, CALLER, contract.id, now=NOW)


def test_delete_refuses_while_a_key_is_out() -> None:
    store = new_store()
    contract = create(store)
    set_status(store, contract, KeyStatus.FETCHED)
    with pytest.raises(InvalidInput, match=r"^id: Contract cannot be deleted: a key of this"):
        delete(store, contract)


def test_delete_refuses_a_half_fetched_fetch_contract() -> None:
    store = new_store()
    contract = create(store, FETCH, keys=2)
    set_status(store, contract, KeyStatus.FETCHED)
    with pytest.raises(InvalidInput, match="some keys have been fetched while others"):
        delete(store, contract)


def test_delete_removes_the_codes_from_the_automat() -> None:
    store = new_store()
    contract = create(store, keys=2)
    delete(store, contract)
    assert store.live_pincodes() == {}
    assert [k.pincode for k in store.stored(contract.id).keys] == [None, None]


def test_delete_releases_every_reservation_even_of_the_past() -> None:
    store = new_store()
    contract = create(store, keys=2)
    delete(store, contract)
    assert store.reservations == []


def test_delete_cancels_the_reminders_and_the_end() -> None:
    store = new_store()
    contract = create(store)
    delete(store, contract)
    assert store.reminders_cancelled == [contract.id]
    assert store.ends_due == {}


def test_a_deleted_contract_is_not_found() -> None:
    store = new_store()
    contract = create(store)
    delete(store, contract)
    with pytest.raises(NotFound):
        service.get(store, ILOQ, CALLER, contract.id)


def test_deleting_a_mechanical_contract_frees_its_id_for_another() -> None:
    store = new_store()
    contract = create(store, kind=ScriptedMechanical())
    service.remove(store, MECHANICAL, contract, NOW)
    assert store.stored(contract.id).public_id == f"{contract.id}/deleted"
    assert store.contracts[contract.id].token_hash is None
