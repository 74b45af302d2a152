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
