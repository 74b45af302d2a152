"""The body check decodes only a body that could hold a problem (entrypoints/api/bodies.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyautomat.entrypoints.api.bodies import (
    MAX_CHEAP_BRACKETS,
    NOT_UTF8,
    body_problems,
    could_have_problems,
)

SURROGATES = "must not contain unpaired UTF-16 surrogates"
RANGE = "must be an integer between -9007199254740991 and 9007199254740991"
# The decoder the body check would call, patched by its path: the module does not
# re-export ``json``, and the path names the very function the check looks up.
BODIES_JSON_LOADS = "keyautomat.entrypoints.api.bodies.json.loads"


def contract(**extra: Any) -> bytes:
    """A contract body of about 1 KB, with Finnish text (bench/body_check.py times such)."""
    keys = [{"id": f"avain-{i}", "storageInfo": {"automatId": "000111"}} for i in range(8)]
    contact = {"name": "Jääskeläinen Äijä", "email": "j@example.com", "language": "fi"}
    body = {"start": "2026-01-01T10:00:00Z", "contact": contact, "keys": keys, **extra}
    body["userVerification"] = "0"
    return json.dumps(body, ensure_ascii=False).encode()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(contract(pickUpInfoForManualStorageKeys="a\x00"), "NUL", id="NUL escape"),
        pytest.param(contract(n=float("nan")), "finite", id="NaN"),
        pytest.param(contract(n=float("inf")), "finite", id="Infinity"),
        pytest.param(contract(n=float("-inf")), "finite", id="-Infinity"),
        pytest.param(contract(n=2**53), RANGE, id="an integer of 16 digits"),
        pytest.param(contract(n=-(10**40)), RANGE, id="an integer of 41 digits"),
        pytest.param(contract().replace(b'"0"}', b'"0", "n": 1e400}'), "finite", id="1e400"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="deep nesting"),
    ],
)
def test_each_trigger_sends_the_body_to_the_decoder_which_names_the_problem(
    body: bytes, problem: str
) -> None:
    assert could_have_problems(body)
    assert problem in " ".join(body_problems(body))


def test_a_surrogate_escape_is_found_though_the_client_wrote_it_itself() -> None:
    body = contract(pickUpInfoForManualStorageKeys="SUR").replace(b"SUR", b"\\ud800")
    assert could_have_problems(body)
    assert body_problems(body) == [f"pickUpInfoForManualStorageKeys: {SURROGATES}"]


def test_nesting_below_the_bracket_bound_is_not_decoded_and_the_route_can_decode_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    depth = MAX_CHEAP_BRACKETS - 1
    body = b"[" * depth + b"]" * depth
    assert json.loads(body) is not None  # no RecursionError in the route's decoder
    monkeypatch.setattr(BODIES_JSON_LOADS, _must_not_decode)
    assert body_problems(body) == []


def test_many_brackets_send_the_body_to_the_decoder_even_when_shallow() -> None:
    body = json.dumps([[] for _ in range(MAX_CHEAP_BRACKETS)]).encode()
    assert could_have_problems(body)
    assert body_problems(body) == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"a": "x\x00"}', id="a raw NUL"),
        pytest.param('{"a": "x"}'.encode("utf-16"), id="UTF-16"),
        pytest.param('{"a": "x"}'.encode("utf-32"), id="UTF-32"),
        pytest.param(b'{"a": "\xff"}', id="not UTF-8"),
        pytest.param(b'{"a": "\xed\xa0\x80"}', id="a surrogate encoded as UTF-8"),
    ],
)
def test_a_body_not_utf8_or_with_a_nul_byte_is_refused_without_decoding(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BODIES_JSON_LOADS, _must_not_decode)
    assert body_problems(body) == [NOT_UTF8]


def _must_not_decode(*args: object, **kwargs: object) -> object:
    raise AssertionError("the clean body was decoded")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(contract(), id="a typical contract"),
        pytest.param(contract(n=-(10**15 - 1), f=1.5e99, g=2.5e-99), id="big numbers"),
        pytest.param(b'{"x": "' + b"a" * (1 << 20) + b'"}', id="1 MiB of text"),
        pytest.param(b"not json at all", id="not JSON"),
    ],
)
def test_a_clean_body_is_not_decoded_by_the_check(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not could_have_problems(body)
    monkeypatch.setattr(BODIES_JSON_LOADS, _must_not_decode)
    assert body_problems(body) == []
