"""The one reading and the one writing of date-times at every edge.

Input: ISO 8601 with an offset, within ``EARLIEST``..``LATEST`` (docs/api.md).
The bound is checked on the value as given, before it is converted to UTC:
``9999-12-31T23:59:59-14:00`` parses, but its UTC instant lies beyond what
``datetime`` can hold, so converting first would overflow (a 500, not a 400).
Years 2000-2999 cover every real contract and stay far from both ends of
``datetime`` and from the reservation sentinel ``OPEN_END`` (year 9999).

Output: UTC ``YYYY-MM-DDTHH:mm:ss.sssZ`` with a four-digit year, always.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keyautomat.domain.errors import InvalidInput

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)  # exclusive

OFFSET_REQUIRED = "must carry a time zone offset, e.g. 2025-06-01T12:00:00.000Z"
OUT_OF_RANGE = "must lie between 2000-01-01T00:00:00Z and 2999-12-31T23:59:59Z"
NOT_A_ZONE = "must be an IANA time zone such as Europe/Helsinki"

# An IANA name: letters, digits and ``_+-`` in up to four levels. Checked before the
# name reaches ``ZoneInfo``, which reads a file of that name under the zone directory.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+){0,3}")


def time_problem(value: datetime) -> str | None:
    """Why ``value`` cannot be accepted as an input date-time, or None when it can."""
    if value.tzinfo is None or value.utcoffset() is None:
        return OFFSET_REQUIRED
    if not EARLIEST <= value < LATEST:  # aware comparison: no conversion, no overflow
        return OUT_OF_RANGE
    return None


def parse_time(value: Any, field: str) -> datetime:
    """An input date-time of a hand-parsed body, in UTC; InvalidInput naming ``field``."""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be an ISO 8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(field, "must be an ISO 8601 date-time") from None
    return checked_time(parsed, field)


def checked_time(value: datetime, field: str) -> datetime:
    """``value`` in UTC once ``time_problem`` has nothing against it."""
    reason = time_problem(value)
    if reason is not None:
        raise InvalidInput(field, reason)
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """``YYYY-MM-DDTHH:mm:ss.sssZ``, the one timestamp format of every response and event."""
    utc = value.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"


def time_zone(value: str, field: str) -> ZoneInfo:
    """The time zone named ``value``; a 400 naming ``field`` when it is no IANA zone."""
    try:
        if len(value) > 64 or not _ZONE_NAME.fullmatch(value):
            raise ValueError(value)
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(field, NOT_A_ZONE) from None
