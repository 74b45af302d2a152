"""Signed-request authentication (spec/auth.md §3), as one lean ASGI middleware.

It runs before routing and body validation (inside the edge middleware, which
bounds the body): it checks every header first, refusing before the body is
read, then reads the raw body once, verifies the signature, and hands the same
bytes on to the application, so nothing is read twice. The caller's principal
is left in the request state for the ``Caller`` dependency.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Protocol
from urllib.parse import unquote, urlsplit

from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyautomat import metrics
from keyautomat.adapters.crypto import request_hash, string_to_sign, verify_signature
from keyautomat.adapters.request_state import Acceptance
from keyautomat.domain.text import is_ascii_digits, text_problem
from keyautomat.entrypoints.api.account_cache import AccountCache, Uncached
from keyautomat.entrypoints.api.bodies import body_problems
from keyautomat.entrypoints.api.errors import send_error
from keyautomat.logs import SERVICE_ACCOUNT_ID
from keyautomat.service_layer.accounts import AccountKey
from keyautomat.service_layer.principal import Principal

log = logging.getLogger(__name__)

MISSING_HEADERS = "Missing authentication headers"
BAD_TIMESTAMP = "Request timestamp is invalid or expired"
UNKNOWN_ACCOUNT = "Unknown service account"
BAD_SIGNATURE = "Invalid signature"
REPLAYED = "Replayed request"
# The metric label of each refusal (keyautomat_signature_failures); any other 4xx of
# ``admit`` is the account id that cannot be stored.
FAILURE_LABELS = {
    MISSING_HEADERS: "missing_headers",
    BAD_TIMESTAMP: "bad_timestamp",
    UNKNOWN_ACCOUNT: "unknown_account",
    BAD_SIGNATURE: "bad_signature",
    REPLAYED: "replayed",
}

AccountLookup = Callable[[str], Awaitable[AccountKey | None]]


def _is_ascii_number(value: str, *, max_digits: int) -> bool:
    return len(value) <= max_digits and is_ascii_digits(value)


class ReplayCache:
    """Signatures accepted within the last ``ttl_ms``; a second sighting is a replay.

    Entries are kept in insertion order, which is also expiry order, so pruning
    only ever looks at the oldest end.

    The cache is process memory: it knows nothing of what an earlier process
    accepted. ``covers`` says whether it can vouch for a request signed at a
    given time, which it can only from the moment it was created on; a shared
    store (a table) would cover every timestamp and replace this whole class.
    """

    def __init__(self, ttl_ms: int, *, covers_from_ms: int = 0) -> None:
        self.ttl_ms = ttl_ms
        self.covers_from_ms = covers_from_ms
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()

    def covers(self, timestamp_ms: int) -> bool:
        """False for a request signed before this cache existed: it may have been
        accepted by the process before a restart, and we could not tell."""
        return timestamp_ms >= self.covers_from_ms

    def check_and_remember(self, account_id: str, signature: str, now_ms: int) -> bool:
        """True when the pair is new (and now remembered); False for a replay."""
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now_ms:
                break
            del self._seen[key]
        pair = (account_id, signature)
        if pair in self._seen:
            return False
        self._seen[pair] = now_ms + self.ttl_ms
        return True

    def __len__(self) -> int:
        return len(self._seen)


class RequestLedger(Protocol):
    """What the verifier remembers of signed requests: the signatures accepted within
    the replay window, and each account's rate budget. This process's memory
    (:class:`MemoryLedger`), or tables every API process shares
    (``adapters/request_state.SharedLedger``, PostgreSQL)."""

    def covers(self, timestamp_ms: int) -> bool:
        """Whether it can vouch for a request signed at ``timestamp_ms``."""
        ...

    async def over_budget(self, account_id: str, now: float) -> int | None:
        """Seconds to wait when the account has no token left, looking only (before the
        signature is checked); None to go on."""
        ...

    async def accept(self, account_id: str, signature: str, now_ms: int) -> Acceptance:
        """For a request whose signature holds: remembers the signature and spends a token."""
        ...


class MemoryLedger:
    def __init__(self, replays: ReplayCache, limiter: RateLimiter) -> None:
        self.replays = replays
        self.limiter = limiter

    def covers(self, timestamp_ms: int) -> bool:
        return self.replays.covers(timestamp_ms)

    async def over_budget(self, account_id: str, now: float) -> int | None:
        return self.limiter.retry_after(account_id, now, spend=False)

    async def accept(self, account_id: str, signature: str, now_ms: int) -> Acceptance:
        if not self.replays.check_and_remember(account_id, signature, now_ms):
            return Acceptance(False, None)
        return Acceptance(True, self.limiter.retry_after(account_id, now_ms / 1000))


class RateLimiter:
    """A token bucket per service account (spec/gaps.md B7); rate 0 disables it."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def retry_after(self, account_id: str, now: float, *, spend: bool = True) -> int | None:
        """None when the request may go ahead, else whole seconds until a token is free.

        With ``spend=False`` it only looks, taking no token and changing nothing.
        """
        if self.rate <= 0:
            return None
        tokens, last = self._buckets.get(account_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1:
            if spend:
                self._buckets[account_id] = (tokens - 1, now)
            return None
        if spend:
            self._buckets[account_id] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.rate))


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    message: str
    reason: str  # logged only: callers get the short message
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def count(self) -> None:
        """Counts the refusal in the metrics: a 429 as rate limited, else by its reason."""
        if self.status == 429:
            metrics.rate_limited("api")
        else:
            metrics.signature_failed(FAILURE_LABELS.get(self.message, "bad_account_id"))


def _origin_of(scope: Scope, headers: dict[bytes, bytes], trust_forwarded: bool) -> str:
    scheme = str(scope.get("scheme", "http"))
    host = headers.get(b"host", b"").decode("latin-1")
    if trust_forwarded:
        scheme = headers.get(b"x-forwarded-proto", scheme.encode()).decode("latin-1")
        host = headers.get(b"x-forwarded-host", host.encode()).decode("latin-1")
    scheme = scheme.split(",")[0].strip().lower()
    host = host.split(",")[0].strip().lower()
    default_port = {"http": ":80", "https": ":443"}.get(scheme)
    if default_port and host.endswith(default_port):
        host = host[: -len(default_port)]
    return f"{scheme}://{host}"


API_MOUNT = "/v2"


def signed_url_candidates(
    scope: Scope, headers: dict[bytes, bytes], bases: tuple[str, ...], trust_forwarded: bool
) -> Iterator[str]:
    """The URLs the client may have signed: raw target first, then its percent-decoded form.

    A configured base stands for the server's ``/v2`` mount (auth.md §3 step 4):
    the signed URL is the base plus the path below the mount. Paths outside the
    mount (``/admin``) hang off the base with its ``/v2`` removed, or off its
    origin when it has no ``/v2``.
    """
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    suffix = "?" + query if query else ""
    if not bases:
        origins: tuple[str, ...] = (_origin_of(scope, headers, trust_forwarded) + raw_path,)
    else:
        origins = tuple(_from_base(base, raw_path) for base in bases)
    for url in origins:
        target = url + suffix
        yield target
        decoded = unquote(target)
        if decoded != target:
            yield decoded


def _from_base(base: str, raw_path: str) -> str:
    if raw_path == API_MOUNT or raw_path.startswith(API_MOUNT + "/"):
        return base + raw_path[len(API_MOUNT) :]
    if base.endswith(API_MOUNT):
        return base[: -len(API_MOUNT)] + raw_path
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}{raw_path}"


class SignatureVerifier:
    def __init__(
        self,
        *,
        lookup: AccountLookup | AccountCache,
        window_ms: int,
        public_bases: tuple[str, ...],
        trust_forwarded: bool = False,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        rate_limiter: RateLimiter | None = None,
        ledger: RequestLedger | None = None,
    ) -> None:
        """``lookup`` reads an account on every request, or is a cache of them
        (account_cache.py) whose answers the ledger's reading of the counter of account
        changes confirms or sends back to the database."""
        self.accounts = lookup if isinstance(lookup, AccountCache) else Uncached(lookup)
        self.window_ms = window_ms
        self.bases = public_bases
        self.trust_forwarded = trust_forwarded
        self.clock_ms = clock_ms
        # In memory unless shared: the cache is created at start-up, so requests signed
        # before then are refused (see ``ReplayCache.covers``).
        self.ledger: RequestLedger = ledger or MemoryLedger(
            ReplayCache(ttl_ms=2 * window_ms, covers_from_ms=clock_ms()),
            rate_limiter or RateLimiter(0, 1),
        )

    async def admit(self, scope: Scope, headers: dict[bytes, bytes]) -> Admitted | Rejection:
        """Every check that needs no body: a request refused here is refused before its
        body is read, so garbage headers cost no upload and no hashing."""
        account_id = headers.get(b"x-service-account-id", b"").decode("latin-1")
        timestamp = headers.get(b"x-timestamp", b"").decode("latin-1")
        signature = headers.get(b"x-signature", b"").decode("latin-1")
        if not account_id or not timestamp or not signature:
            return Rejection(401, MISSING_HEADERS, "a signing header is missing")
        problem = text_problem(account_id)
        if problem is not None:
            # The account id is looked up in the database, which refuses NUL in text.
            return Rejection(400, f"x-service-account-id: {problem}", "unstorable account id")
        now_ms = self.clock_ms()
        if (
            not _is_ascii_number(timestamp, max_digits=16)
            or abs(now_ms - int(timestamp)) > self.window_ms
        ):
            return Rejection(401, BAD_TIMESTAMP, f"timestamp {timestamp!r} vs now {now_ms}")
        if not self.ledger.covers(int(timestamp)):
            # Signed before this process started: the process before a restart may
            # have accepted it. A client re-signs with a fresh timestamp.
            return Rejection(
                401, BAD_TIMESTAMP, f"timestamp {timestamp} precedes this process's replay cache"
            )
        kept = await self.accounts.get(account_id)
        if kept.account is None:
            return Rejection(401, UNKNOWN_ACCOUNT, f"no service account {account_id!r}")
        # Only looks: a token is spent by a request whose signature holds, so that
        # unsigned requests naming an account cannot use up its budget.
        wait = await self.ledger.over_budget(account_id, now_ms / 1000)
        if wait is not None:
            return _too_many(wait)
        return Admitted(
            account_id, timestamp, signature, kept.account, now_ms, kept.version, kept.cached
        )

    async def check_signature(
        self, scope: Scope, headers: dict[bytes, bytes], body: bytes, admitted: Admitted
    ) -> Principal | Rejection:
        """The signature over the body, then the replay cache and the rate limit."""
        account_id, signature = admitted.account_id, admitted.signature
        account, read_under = admitted.account, admitted.version
        mismatch = self._mismatch(scope, headers, body, admitted, account.public_key_pem)
        if mismatch is not None:
            if not admitted.cached:
                return mismatch
            # The kept key may be one another process has since replaced: ask once more.
            kept = await self.accounts.reload(account_id)
            if kept.account is None:
                return Rejection(401, UNKNOWN_ACCOUNT, f"service account {account_id!r} is gone")
            if kept.account.public_key_pem == account.public_key_pem or self._mismatch(
                scope, headers, body, admitted, kept.account.public_key_pem
            ):
                return mismatch
            account, read_under = kept.account, kept.version
        first, wait, version = await self.ledger.accept(account_id, signature, admitted.now_ms)
        if not first:
            return Rejection(401, REPLAYED, f"signature already used by {account_id}")
        if version is not None and read_under is not None and version != read_under:
            # Accounts changed since this request's was read (by this request's own
            # counter, not the cache's, which another request may have moved on):
            # read it again as of the counter now, and check anew.
            self.accounts.observe(version)
            kept = await self.accounts.get(account_id)
            if kept.account is None:
                return Rejection(401, UNKNOWN_ACCOUNT, f"service account {account_id!r} is gone")
            if kept.account.public_key_pem != account.public_key_pem:
                mismatch = self._mismatch(
                    scope, headers, body, admitted, kept.account.public_key_pem
                )
                if mismatch is not None:
                    return mismatch
            account = kept.account
        if wait is not None:
            return _too_many(wait)
        return account.principal

    def _mismatch(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        body: bytes,
        admitted: Admitted,
        public_key_pem: str,
    ) -> Rejection | None:
        """None when the signature holds for one of the URLs the client may have signed."""
        method = str(scope["method"]).upper()
        tried = []
        for url in signed_url_candidates(scope, headers, self.bases, self.trust_forwarded):
            digest = request_hash(method, url, body)
            message = string_to_sign(admitted.account_id, admitted.timestamp, digest)
            if verify_signature(public_key_pem, admitted.signature, message):
                return None
            tried.append(f"{url} -> {digest}")
        return Rejection(401, BAD_SIGNATURE, "signature did not match; tried " + "; ".join(tried))


def _too_many(wait: int) -> Rejection:
    return Rejection(
        429, "Too Many Requests", "rate limit", ((b"retry-after", str(wait).encode()),)
    )


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request whose headers passed every check but the signature."""

    account_id: str
    timestamp: str
    signature: str
    account: AccountKey
    now_ms: int
    # The counter of account changes ``account`` was read under (None: read just now,
    # uncached), and whether it came from the cache.
    version: int | None = None
    cached: bool = False


class SignedRequestMiddleware:
    """Verifies every request under the protected prefixes before the app sees it."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: SignatureVerifier,
        protected_prefixes: tuple[str, ...] = ("/v2", "/admin"),
        public_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.protected_prefixes = protected_prefixes
        self.public_paths = public_paths

    def _is_protected(self, path: str) -> bool:
        if path in self.public_paths:
            return False
        return any(path == p or path.startswith(p + "/") for p in self.protected_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        admitted = await self.verifier.admit(scope, headers)
        if isinstance(admitted, Rejection):
            log.info("rejected %s %s: %s", scope["method"], scope["path"], admitted.reason)
            admitted.count()
            await send_error(send, admitted.status, admitted.message, admitted.headers)
            return
        # Only now, for a request that may be genuine, is the body read and hashed.
        body = await read_body(receive)
        outcome = await self.verifier.check_signature(scope, headers, body, admitted)
        if isinstance(outcome, Rejection):
            log.info("rejected %s %s: %s", scope["method"], scope["path"], outcome.reason)
            outcome.count()
            await send_error(send, outcome.status, outcome.message, outcome.headers)
            return
        scope.setdefault("state", {})["principal"] = outcome
        # Every log line of the rest of the request names the caller; the edge resets it.
        SERVICE_ACCOUNT_ID.set(outcome.service_account_id)
        problems = body_problems(body)
        if problems:
            await send_error(send, 400, problems)
            return
        if body and b"content-type" not in headers:
            # Bodies of this API are always JSON; a client that forgot the header
            # (the Go example sends it on POST only) still gets its body parsed.
            scope["headers"] = [*scope["headers"], (b"content-type", b"application/json")]
        await self.app(scope, replaying(body, receive), send)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app ``body`` (already read) as the whole request body,
    then passes on to ``receive`` (for the disconnect)."""
    delivered = False

    async def replay_body() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay_body


async def read_body(receive: Receive) -> bytes:
    """The whole body; the edge middleware has already bounded its size."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def caller_of(request: Request) -> Principal:
    """The principal the signing middleware admitted. The hottest reads take the request and
    call this instead of declaring ``Caller``: each dependency FastAPI resolves costs a
    second pass of its parameter machinery, a good part of a cheap request's time."""
    principal: Principal = request.scope["state"]["principal"]
    return principal


async def _principal(request: Request) -> Principal:
    # async: a plain def dependency would cost a worker-thread round trip per request
    return caller_of(request)


Caller = Annotated[Principal, Depends(_principal)]
