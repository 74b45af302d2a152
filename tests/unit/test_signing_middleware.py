"""The signing middleware refuses on its headers before it reads a byte of the body."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.types import Message, Receive, Scope, Send

from keyautomat.adapters.crypto import (
    generate_service_account_key,
    request_hash,
    sign,
    string_to_sign,
)
from keyautomat.entrypoints.api.auth import (
    RateLimiter,
    SignatureVerifier,
    SignedRequestMiddleware,
)
from keyautomat.service_layer.accounts import AccountKey
from keyautomat.service_layer.principal import Principal

NOW = 1_800_000_000_000
STARTED = NOW - 60_000
KEY = generate_service_account_key()
ACCOUNT = AccountKey(KEY.public_pem, Principal("sa-1", "ou-1", "/ou-1/", 1, "user"))
BIG_BODY = b'{"x": "' + b"a" * (1 << 20) + b'"}'


class Exchange:
    """One request through the middleware: what it read and what it answered."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.receive_calls = 0
        self.app_called = False
        self.status: int | None = None
        self.answer = b""

    async def receive(self) -> Message:
        self.receive_calls += 1
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.answer += message.get("body", b"")

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.app_called = True
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def run(
    headers: dict[str, str], *, body: bytes = BIG_BODY, limiter: RateLimiter | None = None
) -> Exchange:
    clock = iter([STARTED, *[NOW] * 1000])

    async def lookup(account_id: str) -> AccountKey | None:
        return ACCOUNT if account_id == "sa-1" else None

    verifier = SignatureVerifier(
        lookup=lookup,
        window_ms=300_000,
        public_bases=("https://keys.example.com/v2",),
        clock_ms=lambda: next(clock),
        rate_limiter=limiter,
    )
    exchange = Exchange(body)
    middleware = SignedRequestMiddleware(exchange.app, verifier)
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "path": "/v2/mechanical/keycontracts",
        "raw_path": b"/v2/mechanical/keycontracts",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(middleware(scope, exchange.receive, exchange.send))
    return exchange


def signed(body: bytes, timestamp: int = NOW, account: str = "sa-1") -> dict[str, str]:
    digest = request_hash("POST", "https://keys.example.com/v2/mechanical/keycontracts", body)
    message = string_to_sign(account, str(timestamp), digest)
    return {
        "x-service-account-id": account,
        "x-timestamp": str(timestamp),
        "x-signature": sign(KEY.private_pem, message),
    }


GOOD = {"x-service-account-id": "sa-1", "x-timestamp": str(NOW), "x-signature": "AAAA"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="no signing headers"),
        pytest.param({**GOOD, "x-signature": ""}, 401, id="an empty signature"),
        pytest.param({**GOOD, "x-service-account-id": "sa\x00"}, 400, id="a NUL account id"),
        pytest.param({**GOOD, "x-timestamp": "soon"}, 401, id="a garbage timestamp"),
        pytest.param({**GOOD, "x-timestamp": str(NOW - 600_000)}, 401, id="a stale timestamp"),
        pytest.param(
            {**GOOD, "x-timestamp": str(STARTED - 1)}, 401, id="signed before the process started"
        ),
        pytest.param({**GOOD, "x-service-account-id": "sa-2"}, 401, id="an unknown account"),
    ],
)
def test_a_request_refused_on_its_headers_is_refused_before_its_body_is_read(
    headers: dict[str, str], status: int
) -> None:
    exchange = run(headers)
    assert exchange.status == status
    assert exchange.receive_calls == 0
    assert not exchange.app_called
    assert json.loads(exchange.answer)["statusCode"] == status


def test_an_account_over_its_rate_limit_is_refused_before_the_body_is_read() -> None:
    limiter = RateLimiter(rate=0.001, burst=1)
    first = run(signed(b"{}"), body=b"{}", limiter=limiter)
    assert first.status == 200
    exchange = run(signed(BIG_BODY), limiter=limiter)
    assert exchange.status == 429
    assert exchange.receive_calls == 0


def test_requests_with_a_wrong_signature_do_not_use_up_the_accounts_rate_limit() -> None:
    limiter = RateLimiter(rate=0.001, burst=1)
    for _ in range(3):
        assert run(GOOD, body=b"{}", limiter=limiter).status == 401
    assert run(signed(b"{}"), body=b"{}", limiter=limiter).status == 200


def test_a_request_passing_its_header_checks_has_its_body_read_and_signature_checked() -> None:
    refused = run(GOOD, body=b"{}")
    assert (refused.status, refused.receive_calls, refused.app_called) == (401, 1, False)
    accepted = run(signed(b'{"a": 1}'), body=b'{"a": 1}')
    assert (accepted.status, accepted.app_called) == (200, True)
