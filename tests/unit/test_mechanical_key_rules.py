"""The rules of a mechanical key, without a database (domain/mechanical.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.mechanical import MechanicalKey, Storage, check_key_id, normalize_rfid

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def key(selected: Storage, *, shared: bool = False) -> MechanicalKey:
    return MechanicalKey(
        object_id="0" * 24,
        id="room-101-key",
        root_unit_id="r",
        organization_unit_id="u",
        name=None,
        rfid_hex=None,
        selected=selected,
        shared=shared,
        created_at=NOW,
    )


@pytest.mark.parametrize("value", ["a", "room-101-key", "Huone 101 – avain", "x" * 128, "a:b.c"])
def test_key_ids_are_printable_strings_up_to_128_characters(value: str) -> None:
    assert check_key_id(value) == value


@pytest.mark.parametrize("value", ["", "x" * 129, "a/b", "line\nbreak", "nul\x00"])
def test_key_ids_refuse_empty_long_slashed_and_control_characters(value: str) -> None:
    with pytest.raises(InvalidInput, match=r"^id: "):
        check_key_id(value)


def test_rfid_is_stored_upper_case_and_must_be_hex() -> None:
    assert normalize_rfid("1a00d1") == "1A00D1"
    assert normalize_rfid(None) is None
    for bad in ("", "0x1A", "1A 00", "G1", "F" * 65):
        with pytest.raises(InvalidInput, match=r"^rfidHex: "):
            normalize_rfid(bad)


def test_a_storage_is_a_device_or_a_manual_place_never_both_nor_neither() -> None:
    assert Storage.parse("000001", None, "s") == Storage.device("000001")
    assert Storage.parse(None, "Shelf", "s") == Storage.manual("Shelf")
    for automat_id, info in ((None, None), ("000001", "Shelf"), ("", None), (None, "  ")):
        with pytest.raises(InvalidInput):
            Storage.parse(automat_id, info, "s")


def test_only_keys_at_home_in_an_automat_may_be_shared() -> None:
    assert key(Storage.device("000001"), shared=True).shared
    with pytest.raises(InvalidInput, match=r"^shared: "):
        key(Storage.manual("Shelf"), shared=True)
    device_key = key(Storage.device("000001"), shared=True)
    with pytest.raises(InvalidInput):
        device_key.select_storage(Storage.manual("Shelf"), shared=True)
    device_key.select_storage(Storage.manual("Shelf"), shared=False)
    assert device_key.selected == Storage.manual("Shelf")


def test_a_key_is_available_exactly_while_it_is_in_a_storage() -> None:
    k = key(Storage.device("000001"))
    assert (k.storage, k.available) == (None, False)
    k.put_in(Storage.device("000002"), 4)
    assert (k.storage, k.stored_locker_index, k.available) == (Storage.device("000002"), 4, True)
    k.put_in(Storage.manual("Reception"), 4)
    assert (k.storage, k.stored_locker_index) == (Storage.manual("Reception"), None)
    k.take_away()
    assert (k.storage, k.available) == (None, False)


def test_a_key_reported_lost_is_in_no_storage_until_it_is_found() -> None:
    lost = key(Storage.manual("Shelf 1"))
    lost.put_in(Storage.manual("Shelf 1"))
    at = datetime(2030, 1, 1, tzinfo=UTC)
    lost.report_lost(at)
    assert (lost.lost_at, lost.storage, lost.available) == (at, None, False)
    lost.report_lost(datetime(2030, 1, 2, tzinfo=UTC))  # reported again: lost since then
    assert lost.lost_at == at
    lost.put_in(Storage.device("000111"), 3)  # an automat reports it in a locker: found
    assert lost.lost_at is None


def test_a_key_an_automat_reports_in_a_locker_cannot_be_reported_lost() -> None:
    inside = key(Storage.device("000111"))
    inside.put_in(Storage.device("000111"), 2)
    with pytest.raises(InvalidInput, match="is inside locker 2 of automat 000111"):
        inside.report_lost(datetime(2030, 1, 1, tzinfo=UTC))
    assert inside.lost_at is None
