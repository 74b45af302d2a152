"""The simulated automat's own rule for when a stored pincode opens (simulator/automat.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keyautomat.simulator.automat import StoredPincode

START = datetime(2025, 6, 1, 12, tzinfo=UTC)
END = START + timedelta(hours=2)
TICK = timedelta(microseconds=1)


def pincode(valid_from: datetime, valid_until: datetime | None) -> StoredPincode:
    return StoredPincode(
        id="p1",
        code="123456",
        locker_index=0,
        valid_from=valid_from,
        valid_until=valid_until,
        purpose="fetch",
        key_id=None,
    )


def test_a_pincode_does_not_open_before_its_window() -> None:
    assert not pincode(START, END).opens_at(START - TICK)


def test_a_pincode_opens_at_the_first_instant_of_its_window() -> None:
    assert pincode(START, END).opens_at(START)


def test_a_pincode_opens_at_the_last_instant_before_its_end() -> None:
    assert pincode(START, END).opens_at(END - TICK)


def test_a_pincode_no_longer_opens_at_its_end() -> None:
    assert not pincode(START, END).opens_at(END)


def test_a_pincode_without_an_end_opens_long_after_its_start() -> None:
    assert pincode(START, None).opens_at(START + timedelta(days=3650))


def test_a_pincode_without_an_end_still_waits_for_its_start() -> None:
    assert not pincode(START, None).opens_at(START - TICK)
