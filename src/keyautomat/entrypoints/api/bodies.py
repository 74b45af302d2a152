"""What every JSON request body must meet before any route sees it (issue 11, items 8/15/16).

The signing middleware holds the raw body of every ``/v2`` and ``/admin``
request (the only routes taking JSON), so it checks it here, once, whatever
the route does with it afterwards: typed by a Pydantic model or parsed by
hand. A string with NUL or a lone surrogate, or a number no field can hold,
is refused with 400 naming its place, before anything is stored.
"""

from __future__ import annotations

import json

from keyautomat.domain.text import MAX_JSON_INTEGER, json_problems

# Fewer ``[`` and ``{`` bytes than this bound the nesting depth well below what
# the decoder's recursion can take, so such a body cannot raise RecursionError.
MAX_CHEAP_BRACKETS = 256
NOT_UTF8 = "body: is not valid JSON: not UTF-8 without NUL bytes"

# What a UTF-8 body must hold for ``json_problems`` to find anything:
#  - ``\u``: NUL and lone surrogates come only as escapes (raw NUL is a control
#    character, invalid in JSON; a raw surrogate is invalid UTF-8);
#  - ``NaN``/``Infinity``, which Python's decoder accepts;
#  - a run of as many digits as ``MAX_JSON_INTEGER`` has (a smaller integer is in
#    range), or an exponent of three digits (the only way to overflow a float
#    with fewer digits);
#  - nesting the decoder's recursion cannot take (bounded by the bracket count).
# Found with C-speed byte operations only: a literal is searched for when its
# first byte occurs (a one-byte search is a memchr); the rest is found in the
# body's shape, each byte mapped to its class by one translate, signs deleted
# (which can only join digit runs, never split them).
_LITERALS = (b"\\u", b"NaN", b"Infinity")
_SHAPE = bytes(
    ord("0")
    if chr(byte).isascii() and chr(byte).isdigit()
    else ord("e")
    if byte in b"eE"
    else ord("[")
    if byte in b"[{"
    else ord(" ")
    for byte in range(256)
)
_LONG_DIGITS = b"0" * len(str(MAX_JSON_INTEGER))
_BIG_EXPONENT = b"e000"


def is_utf8_text(body: bytes) -> bool:
    """UTF-8 without NUL bytes, as every JSON text between systems (RFC 8259 §8.1).

    Python's decoder also reads UTF-16/32 (told apart by their NUL bytes), where a
    lone surrogate can come unescaped, even in bytes that are valid UTF-8 (UTF-16LE
    ``\ud800\u0080`` is 00 D8 80 00); a raw NUL is invalid in UTF-8 JSON anyway.
    """
    if b"\x00" in body:
        return False
    if body.isascii():
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:  # also a surrogate encoded as UTF-8 (ED A0 80)
        return False
    return True


def could_have_problems(body: bytes) -> bool:
    """False when ``body`` (UTF-8) cannot hold anything ``json_problems`` refuses, so the
    check can skip decoding it (the route decodes it anyway)."""
    if any(literal[:1] in body and literal in body for literal in _LITERALS):
        return True
    shape = body.translate(_SHAPE, b"+-")
    return (
        _LONG_DIGITS in shape or _BIG_EXPONENT in shape or shape.count(b"[") >= MAX_CHEAP_BRACKETS
    )


def body_problems(body: bytes) -> list[str]:
    """The reasons to refuse ``body``; empty when it is fine or not JSON at all.

    A body that does not decode is left to the route, which answers
    ``body: is not valid JSON`` in the one error shape. Only a body that could
    hold a problem is decoded here (``could_have_problems``).
    """
    if not body:
        return []
    if not is_utf8_text(body):
        return [NOT_UTF8]
    if not could_have_problems(body):
        return []
    try:
        value = json.loads(body)
    except RecursionError:
        return ["body: is nested too deeply"]
    except ValueError:
        return []
    return json_problems(value)
