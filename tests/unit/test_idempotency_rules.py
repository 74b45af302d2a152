"""The rules of idempotent writes, without a database (service_layer/idempotency.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from keyautomat.adapters.crypto import SecretBox
from keyautomat.service_layer.idempotency import (
    BAD_KEY,
    REPEATED_KEY,
    KeyRow,
    StoredResponse,
    Verdict,
    fingerprint,
    is_stored,
    judge,
    key_problem,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
BOUND = timedelta(seconds=60)
PRINTABLE = bytes(range(0x20, 0x7F))


@pytest.mark.parametrize(
    "key",
    [b"a", b"0b9a5e3c-6f1d-4c2e-9a7b-3d8f2e1c4b5a", b"k" * 255, PRINTABLE],
    ids=["one character", "a UUID", "255 characters", "every printable character"],
)
def test_a_key_of_1_to_255_printable_ascii_characters_is_accepted(key: bytes) -> None:
    assert key_problem([key]) is None


@pytest.mark.parametrize(
    "key",
    [b"", b"k" * 256, b"tab\t", b"new\nline", b"nul\x00", b"del\x7f", "ä".encode(), b"\xe4"],
    ids=["empty", "256 characters", "tab", "line feed", "NUL", "DEL", "UTF-8", "latin-1"],
)
def test_any_other_key_is_refused_naming_the_header(key: bytes) -> None:
    assert key_problem([key]) == BAD_KEY
    assert BAD_KEY.startswith("Idempotency-Key: ")


def test_a_key_given_twice_is_refused_even_when_both_are_equal() -> None:
    assert key_problem([b"a", b"a"]) == REPEATED_KEY


def test_the_fingerprint_is_the_same_for_the_same_request_only() -> None:
    one = fingerprint("POST", b"/v2/groups", b'{"name":"G"}')
    assert one == fingerprint("post", b"/v2/groups", b'{"name":"G"}')
    assert len(one) == 64
    others = {
        fingerprint("PATCH", b"/v2/groups", b'{"name":"G"}'),
        fingerprint("POST", b"/v2/groups?x=1", b'{"name":"G"}'),
        fingerprint("POST", b"/v2/groups", b'{"name": "G"}'),
        fingerprint("POST", b"/v2/groups", b""),
        # The separators keep parts apart: a path cannot borrow the body's bytes.
        fingerprint("POST", b"/v2/groups\n{", b'"name":"G"}'),
    }
    assert one not in others
    assert len(others) == 5


def row(
    *,
    fingerprint: str = "f",
    claimed_ago: timedelta = timedelta(seconds=1),
    status: int | None = None,
    expires_in: timedelta = timedelta(hours=24),
) -> KeyRow:
    return KeyRow(fingerprint, "token", NOW - claimed_ago, NOW + expires_in, status, None)


@pytest.mark.parametrize(
    ("stored", "verdict"),
    [
        (row(status=201), Verdict.REPLAY),
        (row(status=400), Verdict.REPLAY),
        (row(), Verdict.IN_PROGRESS),
        (row(claimed_ago=BOUND - timedelta(milliseconds=1)), Verdict.IN_PROGRESS),
        (row(claimed_ago=BOUND), Verdict.TAKE_OVER),
        (row(fingerprint="other", status=201), Verdict.MISMATCH),
        (row(fingerprint="other"), Verdict.MISMATCH),
        (row(fingerprint="other", status=201, expires_in=timedelta(0)), Verdict.TAKE_OVER),
        (row(status=201, expires_in=-timedelta(seconds=1)), Verdict.TAKE_OVER),
    ],
    ids=[
        "finished: replayed",
        "a refusal of the input: replayed",
        "claimed a second ago: in progress",
        "claimed just under the bound ago: in progress",
        "claimed the bound ago: taken over",
        "another request, finished: mismatch",
        "another request, in progress: mismatch",
        "another request, expired: taken over",
        "expired: taken over",
    ],
)
def test_a_key_in_use_is_judged(stored: KeyRow, verdict: Verdict) -> None:
    assert judge(stored, "f", NOW, BOUND) is verdict


@pytest.mark.parametrize("status", [200, 201, 204, 400, 404, 409, 422])
def test_responses_other_than_5xx_and_429_are_stored(status: int) -> None:
    assert is_stored(status)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_responses_asking_for_a_retry_are_not_stored(status: int) -> None:
    assert not is_stored(status)


def test_a_stored_response_keeps_only_the_headers_that_matter_and_is_sealed() -> None:
    box = SecretBox(Fernet.generate_key())
    body = b'{"privateKey":"-----BEGIN RSA PRIVATE KEY-----"}'
    response = StoredResponse.kept(
        201,
        [
            (b"content-type", b"application/json"),
            (b"content-length", b"49"),
            (b"Location", b"/v2/groups/1"),
            (b"set-cookie", b"x=1"),
        ],
        body,
    )
    assert response.headers == (
        (b"content-type", b"application/json"),
        (b"Location", b"/v2/groups/1"),
    )
    sealed = response.seal(box)
    assert "PRIVATE" not in sealed
    assert StoredResponse.unseal(box, 201, sealed) == response
    with pytest.raises(ValueError, match="cannot be decrypted"):
        StoredResponse.unseal(SecretBox(Fernet.generate_key()), 201, sealed)
