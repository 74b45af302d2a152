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

_ASCII_DIGITS = frozenset("0123456789")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be accepted as text, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
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


def json_problems(value: object) -> list[str]:
    """Every string, property name and number of a decoded JSON document checked at once.

    Each problem names its place like ``contact.name`` or ``accessRightIds.0``
    (``body`` for the document itself). Integers must lie within
    ±``MAX_JSON_INTEGER``; ``NaN`` and ``Infinity`` (which Python's decoder
    accepts) are refused. The walk keeps its own stack, so nesting depth
    cannot exhaust the interpreter's.
    """
    problems: list[str] = []
    stack: list[tuple[str, object]] = [("", value)]
    while stack and len(problems) < _MAX_REPORTED:
        path, item = stack.pop()
        where = path or "body"
        if isinstance(item, str):
            reason = text_problem(item)
            if reason is not None:
                problems.append(f"{where}: {reason}")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_JSON_INTEGER <= item <= MAX_JSON_INTEGER:
                problems.append(f"{where}: {_INTEGER_RANGE}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(f"{where}: must be a finite number")
        elif isinstance(item, dict):
            children: list[tuple[str, object]] = []
            for key, child in item.items():
                reason = text_problem(key)
                if reason is not None:
                    problems.append(f"{where}: a property name {reason}")
                    continue
                children.append((f"{path}.{key}" if path else key, child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(
                (f"{path}.{index}" if path else str(index), child)
                for index, child in reversed(list(enumerate(item)))
            )
    return problems


def printable(value: str) -> str:
    """``value`` with each unpaired surrogate replaced by U+FFFD, so it always encodes.

    For output only (a response must never fail after its change was committed);
    input with such text is refused by ``text_problem``.
    """
    if text_problem(value) is None:
        return value
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
