"""Reading and writing date-times at the edges (domain/times.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.times import NOT_A_ZONE, OUT_OF_RANGE, format_utc, parse_time, time_zone


def test_a_time_is_answered_with_a_four_digit_year_even_in_year_one() -> None:
    assert format_utc(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000Z"


def test_a_time_is_answered_in_utc_with_milliseconds() -> None:
    value = datetime(2025, 6, 1, 15, 0, 0, 123456, tzinfo=timezone(timedelta(hours=3)))
    assert format_utc(value) == "2025-06-01T12:00:00.123Z"


def test_input_is_read_in_utc() -> None:
    assert parse_time("2025-06-01T15:00:00+03:00", "start") == datetime(2025, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "1999-12-31T23:59:59.999Z",
        "3000-01-01T00:00:00Z",
        "2999-12-31T23:00:00-01:00",
    ],
)
def test_input_beyond_the_range_names_the_field(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_time(value, "end")
    assert info.value.message == f"end: {OUT_OF_RANGE}"


def test_an_iana_name_is_a_time_zone() -> None:
    assert time_zone("Europe/Helsinki", "timezone").key == "Europe/Helsinki"
    assert time_zone("UTC", "timezone").key == "UTC"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Europe",  # a directory of zones, not a zone
        "Mars/Olympus_Mons",
        "zone.tab",  # a file beside the zones that is no zone
        "../../../etc/passwd",
        "/etc/localtime",
        "Europe/Helsinki\x00",
        "A/B/C/D/E",
        "x" * 65,
    ],
)
def test_anything_else_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        time_zone(value, "settings.timezone")
    assert refused.value.field == "settings.timezone"
    assert str(refused.value) == f"settings.timezone: {NOT_A_ZONE}"
