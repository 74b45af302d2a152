"""A lost key on the fake store: out of every contract holding it, with a replacement when
asked and the kind has one free, each event once."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from keyautomat.contracts import lost, progress
from keyautomat.contracts.kind import Kinds
from keyautomat.contracts.model import Contract, ContractKey, PlannedKey
from keyautomat.contracts.rules import ContractType, KeyStatus
from keyautomat.contracts.store import ContractStore
from keyautomat.domain import webhooks as wh
from keyautomat.domain.notifications import NotificationType
from tests.unit.contracts.fakes import FakeContractStore
from tests.unit.contracts.world import AUTOMAT, END, HOUR, NOW, Scripted, create, new_store

SPARE = PlannedKey("key-9", "key-9", AUTOMAT, 9, reserved_key_id="key-9")


class WithSpare(Scripted):
    """A kind that has one spare key in locker 9."""

    name: ClassVar[str] = "iloq"

    def replacement(
        self, store: ContractStore, contract: Contract, lost: ContractKey, now: datetime
    ) -> PlannedKey | None:
        return SPARE


KINDS: Kinds = {"iloq": WithSpare()}


def out_with(store: FakeContractStore, **options: object) -> Contract:
    """A contract whose key-0 its user took out."""
    contract = create(store, **options)  # type: ignore[arg-type]
    loaded = store.load(contract.id)
    assert loaded is not None
    progress.fetched(store, KINDS["iloq"], loaded, loaded.key_at(0), NOW)
    return contract


def report(store: FakeContractStore, *, replace: bool, at: datetime = NOW) -> list[lost.Outcome]:
    return [
        lost.take_out(store, KINDS, contract, key, at, replace=replace)
        for contract, key in lost.holders(store, "iloq", "key-0")
    ]


def test_a_lost_key_leaves_its_contract_its_code_and_its_locker() -> None:
    store = new_store()
    contract = out_with(store, pincodes=("111111",))
    (outcome,) = report(store, replace=False)
    assert outcome == lost.Outcome(contract.id, contract.id, None, None)
    key = store.stored(contract.id).key_at(0)
    assert (key.status, key.in_history, key.pincode) == (KeyStatus.LOST, True, None)
    assert store.live_pincodes() == {}
    assert all(r.until <= NOW for r in store.reservations_of(contract.id))
    assert store.stored(contract.id).completed_at == NOW  # nothing left in it
    assert store.reminders_cancelled == [contract.id]


def test_the_integration_hears_key_lost_and_the_contact_an_update_once() -> None:
    store = new_store()
    contract = out_with(store)
    report(store, replace=False)
    report(store, replace=False)  # reported twice: the key is history by then
    lost_states = [e for e in store.events(wh.EventType.KEY_STATUS) if e["state"] == "key-lost"]
    assert lost_states == [
        {
            "state": "key-lost",
            "storageType": "device",
            "deviceId": AUTOMAT,
            "lockerIndex": 0,
            "keyId": "key-0",
            "contractId": contract.id,
            "contractObjectId": contract.id,
        }
    ]
    updated = [n for n in store.notified if n.type is NotificationType.CONTRACT_UPDATED]
    assert [(n.event, n.view.keys) for n in updated] == [("key-lost:key-0", ())]


def test_a_replacement_joins_the_contract_with_a_fresh_code_on_its_automat() -> None:
    store = new_store()
    contract = out_with(store, pincodes=("111111",))
    (outcome,) = report(store, replace=True)
    spare = store.stored(contract.id).key_at(1)
    assert (spare.key_id, spare.locker_index, spare.status) == ("key-9", 9, None)
    assert outcome.replacement_key_id == "key-9"
    assert outcome.replacement_pincode == spare.pincode
    assert [p.locker_index for p in store.live_pincodes().values()] == [9]
    (update,) = [e for e in store.events(wh.EventType.CONTRACT_UPDATE) if e["keyId"] == "key-9"]
    assert update["pincode"] == spare.pincode
    (told,) = [n for n in store.notified if n.type is NotificationType.CONTRACT_UPDATED]
    assert [(k.id, k.pincode) for k in told.view.keys] == [("key-9", spare.pincode)]
    assert store.stored(contract.id).completed_at is None
    assert store.reminders_rescheduled[-1].keys == told.view.keys


def test_no_replacement_for_a_contract_over_or_a_return_contract() -> None:
    store = new_store()
    out_with(store)
    (after_end,) = report(store, replace=True, at=END + HOUR)
    assert after_end.replacement_key_id is None
    store = new_store()
    create(store, ContractType.RETURN)
    (returning,) = report(store, replace=True)
    assert returning.replacement_key_id is None
