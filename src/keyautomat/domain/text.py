"""Rules every piece of text from outside must meet, whatever edge it came through.

A string that reaches the database or a device must be storable and printable on
both engines: PostgreSQL refuses NUL in text, and a lone UTF-16 surrogate (valid
in JSON as ``"\\ud800"``) cannot be encoded as UTF-8, so it would fail at bind time
or, worse, after commit when the response is encoded. Codes typed on a keypad
must be the ASCII digits 0-9: ``str.isdigit`` also accepts ``١٢٣`` and ``¹²³``,
which no keypad can type and which escape a uniqueness check against ``123``.

These are the only definitions of those rules; every edge (JSON bodies, path and
query parameters, forms, device messages) calls them.
"""

from __future__ import annotations

import math
import unicodedata
from collections import deque
from typing import Any

_ASCII_DIGITS = frozenset("0123456789")
NOT_ASCII_DIGITS = "must be a string of the digits 0-9"


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be accepted as text, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired UTF-16 surrogates"
    return None


def is_ascii_digits(value: str) -> bool:
    """True for a non-empty string of the ASCII digits 0-9 only."""
    return bool(value) and all(ch in _ASCII_DIGITS for ch in value)


# JSON numbers beyond this lose precision in most clients and overflow 64-bit
# columns; no field of the API means anything near it.
MAX_JSON_INTEGER = 2**53 - 1
_MAX_REPORTED = 20
_INTEGER_RANGE = f"must be an integer between {-MAX_JSON_INTEGER} and {MAX_JSON_INTEGER}"


# Where a value sits in a document: (where its parent sits, its key or index); None
# for the document itself. Kept as links and spelled out only for a problem.
_Place = tuple[Any, str | int] | None
_Container = dict[Any, Any] | list[Any]


def json_problems(value: object) -> list[str]:
    """Every string, property name and number of a decoded JSON document checked at once.

    Each problem names its place like ``contact.name`` or ``accessRightIds.0``
    (``body`` for the document itself); :func:`json_problems_at` gives the places
    as paths instead.
    """
    return [
        f"{'.'.join(map(str, path)) or 'body'}: {reason}"
        for path, reason in json_problems_at(value)
    ]


def json_problems_at(value: object) -> list[tuple[tuple[str | int, ...], str]]:
    """The problems of :func:`json_problems`, each with the path of its place (keys and
    indices from the document down; a bad property name is placed at its object).

    Integers must lie within ±``MAX_JSON_INTEGER``; ``NaN`` and ``Infinity`` (which
    Python's decoder accepts) are refused. The walk keeps its own queue, so nesting
    depth cannot exhaust the interpreter's stack.
    """
    problems: list[tuple[_Place, str]] = []
    pending: deque[tuple[_Container, _Place]] = deque()
    _check(value, None, pending, problems)
    while pending and len(problems) < _MAX_REPORTED:
        item, place = pending.popleft()
        if isinstance(item, dict):
            for key, child in item.items():
                reason = text_problem(key)
                if reason is not None:
                    problems.append((place, f"a property name {reason}"))
                else:
                    _check(child, (place, key), pending, problems)
        else:
            for index, child in enumerate(item):
                _check(child, (place, index), pending, problems)
    return [(_path(place), reason) for place, reason in problems[:_MAX_REPORTED]]


def _check(
    item: object,
    place: _Place,
    pending: deque[tuple[_Container, _Place]],
    problems: list[tuple[_Place, str]],
) -> None:
    if isinstance(item, str):
        reason = text_problem(item)
        if reason is not None:
            problems.append((place, reason))
    elif isinstance(item, dict | list):
        pending.append((item, place))
    elif isinstance(item, bool) or item is None:
        return
    elif isinstance(item, int):
        if not -MAX_JSON_INTEGER <= item <= MAX_JSON_INTEGER:
            problems.append((place, _INTEGER_RANGE))
    elif isinstance(item, float) and not math.isfinite(item):
        problems.append((place, "must be a finite number"))


def _path(place: _Place) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    while place is not None:
        parent, key = place
        parts.append(key)
        place = parent
    return tuple(reversed(parts))


def printable(value: str) -> str:
    """``value`` with each unpaired surrogate replaced by U+FFFD, so it always encodes.

    For output only (a response must never fail after its change was committed);
    input with such text is refused by ``text_problem``.
    """
    if text_problem(value) is None:
        return value
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def one_line(value: str, limit: int) -> str:
    """``value`` fit for one line of a message (an email subject): control characters and
    runs of whitespace become one space, and it is cut to ``limit`` characters."""
    spaced = (" " if ch.isspace() or unicodedata.category(ch) == "Cc" else ch for ch in value)
    flat = " ".join("".join(spaced).split())
    flat = printable(flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
