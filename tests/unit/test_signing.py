"""The signing algorithm, checked against the worked vectors of spec/auth.md."""

from __future__ import annotations

import pytest

from keyautomat.adapters.crypto import (
    generate_service_account_key,
    request_hash,
    sign,
    string_to_sign,
    verify_signature,
)
from keyautomat.config import Settings
from keyautomat.entrypoints.api.auth import RateLimiter, ReplayCache, signed_url_candidates


@pytest.mark.parametrize(
    ("method", "url", "body", "expected"),
    [
        (
            "GET",
            "https://api.livionkey.com/v2/automats?limit=100",
            "",
            "d9f4ae7223a9a35361ea3c865d24ce63874e9128b6dd7ba52ef9e31e7812e9b5",
        ),
        (
            "POST",
            "https://api.livionkey.com/v2/iloq/keycontracts",
            '{"input":{"contractType":2,"accessRightIds":["ar-1"],"numberOfKeys":1,'
            '"keyAutomatId":"000111","start":"2025-01-01T10:00:00.000Z"}}',
            "1fe157bc337b55afc8a13c2d59a31ace50239baf0b7667a92ed2c2df2d11666c",
        ),
        (
            "DELETE",
            "https://api.livionkey.com/v2/iloq/keycontracts/abc",
            "",
            "1347e28357411bdd976fec854172a5ccd1b4f5cb175b4f0da6a8f882523cb638",
        ),
    ],
)
def test_request_hash_matches_the_worked_vectors(
    method: str, url: str, body: str, expected: str
) -> None:
    assert request_hash(method, url, body.encode()) == expected


def test_string_to_sign_concatenates_without_separators() -> None:
    digest = "d9f4ae7223a9a35361ea3c865d24ce63874e9128b6dd7ba52ef9e31e7812e9b5"
    assert string_to_sign("sa-test-1", "1700000000000", digest) == (
        b"sa-test-11700000000000d9f4ae7223a9a35361ea3c865d24ce63874e9128b6dd7ba52ef9e31e7812e9b5"
    )


def test_generated_keys_are_pkcs1_rsa_2048_and_verify_their_own_signatures() -> None:
    keys = generate_service_account_key()
    assert keys.private_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    message = b"sa1" + b"123" + b"abc"
    signature = sign(keys.private_pem, message)
    assert len(signature) == 344  # 256 bytes of RSA-2048, Base64 with padding
    assert verify_signature(keys.public_pem, signature, message)
    assert not verify_signature(keys.public_pem, signature, message + b"x")


def test_malformed_base64_is_a_failed_verification_not_a_crash() -> None:
    keys = generate_service_account_key()
    assert not verify_signature(keys.public_pem, "not base64!!", b"m")


def test_the_replay_cache_refuses_a_pair_seen_within_its_lifetime_only() -> None:
    cache = ReplayCache(ttl_ms=1000)
    assert cache.check_and_remember("sa", "sig", now_ms=0)
    assert not cache.check_and_remember("sa", "sig", now_ms=999)
    assert cache.check_and_remember("other", "sig", now_ms=999)
    assert cache.check_and_remember("sa", "sig", now_ms=1000)


def test_the_rate_limiter_allows_a_burst_then_asks_the_caller_to_wait() -> None:
    limiter = RateLimiter(rate=10, burst=3)
    assert [limiter.retry_after("sa", 0.0) for _ in range(3)] == [None, None, None]
    assert limiter.retry_after("sa", 0.0) == 1
    assert limiter.retry_after("sa", 0.1) is None  # one token refilled after 100 ms
    assert limiter.retry_after("other", 0.1) is None


def _scope(path: str, query: str = "") -> dict[str, object]:
    return {
        "type": "http",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
    }


def test_configured_bases_are_normalised_and_stand_for_the_v2_mount() -> None:
    settings = Settings(
        public_url="https://Keys.Example.com:443/v2, https://gw.example.com/livion",
        secret_key="x" * 44,
    )
    assert settings.public_bases == ("https://keys.example.com/v2", "https://gw.example.com/livion")
    urls = list(
        signed_url_candidates(_scope("/v2/automats", "limit=5"), {}, settings.public_bases, False)
    )
    assert urls == [
        "https://keys.example.com/v2/automats?limit=5",
        "https://gw.example.com/livion/automats?limit=5",
    ]
    admin = list(signed_url_candidates(_scope("/admin/webhooks"), {}, settings.public_bases, False))
    assert admin == [
        "https://keys.example.com/admin/webhooks",
        "https://gw.example.com/admin/webhooks",
    ]


def test_without_a_configured_base_the_url_comes_from_the_request_host() -> None:
    headers = {b"host": b"API.example.com:80"}
    urls = list(signed_url_candidates(_scope("/v2/groups", "search=a%20b"), headers, (), False))
    assert urls == [
        "http://api.example.com/v2/groups?search=a%20b",
        "http://api.example.com/v2/groups?search=a b",
    ]
