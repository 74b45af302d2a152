"""Signs webhook deliveries and POSTs them, refusing any target that is not public.

Safety (spec/webhooks.md §8, gaps.md G8): a URL is checked when it is saved and
again at every delivery, and every connection goes through the vetting network
backend that the iLOQ S5 client shares (``adapters/outbound.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import httpcore
from standardwebhooks.webhooks import Webhook

from keyautomat.adapters.outbound import (
    Resolver,
    UnsafeTarget,
    VettingBackend,
    check_url,
    system_resolve,
    vet_url,
    vetted_pool,
)

USER_AGENT = "keyautomat-webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024
# Requests in flight to one receiver (scheme, host, port) at a time, and the
# connections kept alive to it. httpcore's pool checks every idle connection, with
# system calls, each time it assigns one to a request, and wraps each request in
# events and locks; one pool of 100 connections for all receivers made that most of
# a delivery's CPU. So the sender keeps its own short list of idle connections per
# receiver and takes the last one put back (one check per request).
MAX_CONNECTIONS_PER_RECEIVER = 10
KEEPALIVE_EXPIRY = 30.0  # seconds an idle connection is kept
SWEEP_INTERVAL = 1.0  # at most this often a post closes every receiver's expired connections


def signature_header(
    webhook_id: str, timestamp: datetime, body: str, secrets: Sequence[str]
) -> str:
    """``v1,<sig>`` per secret, space-separated (two while a rotated-out secret still signs)."""
    return " ".join(Webhook(s).sign(webhook_id, timestamp, body) for s in secrets)


def delivery_headers(
    *, webhook_id: str, event_type: str, body: str, secrets: Sequence[str], at: datetime
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed at ``at`` (whole seconds)."""
    at = at.astimezone(UTC)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature_header(webhook_id, at, body, secrets),
        "webhook-event-type": event_type,
    }


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender(Protocol):
    timeout: float  # seconds one attempt takes at most

    def turn(self, url: str) -> contextlib.AbstractAsyncContextManager[object]:
        """Wait for a turn at ``url``'s receiver and hold it; a ``post`` to that receiver
        from within it uses this turn rather than waiting for another."""
        ...

    async def vet(self, url: str) -> None:
        """Raise UnsafeTarget unless ``url`` may receive deliveries (checked when saved)."""

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, *, keep_alive: bool = True
    ) -> AttemptResult:
        """One attempt; ``keep_alive=False`` for one-off requests (test deliveries)."""
        ...

    async def aclose(self) -> None:
        """Close the connections kept alive for the running event loop."""


class HttpWebhookSender:
    """The real sender: per event loop, one connection pool per receiver, every connection
    vetted. At most ``MAX_CONNECTIONS_PER_RECEIVER`` requests go to one receiver at a time;
    the rest wait their turn before their attempt (and its timeout) starts, so a slow
    receiver holds its own deliveries only. Idle connections are closed once expired, by
    the next post to any receiver; a receiver with none left and no turn taken is dropped."""

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout: float = 15.0,
        connect_timeout: float = 5.0,
        resolve: Resolver = system_resolve,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keepalive_expiry = keepalive_expiry
        self.monotonic = monotonic
        self._swept_at: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, float] = (
            weakref.WeakKeyDictionary()
        )
        self.allow_private = allow_private
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.resolve = resolve
        # Pools are bound to the loop that opened their connections; the API (in
        # tests, a portal thread) and the worker may run on different loops.
        self._pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[bytes, bytes, int], _Receiver]
        ] = weakref.WeakKeyDictionary()

    def _receiver(self, url: str) -> _Receiver:
        receivers = self._pools.setdefault(asyncio.get_running_loop(), {})
        # The origin exactly as httpcore derives it from the URL: a connection refuses
        # a request for any other.
        origin = httpcore.URL(url).origin
        key = (origin.scheme, origin.host, origin.port)
        receiver = receivers.get(key)
        if receiver is None:
            backend = VettingBackend(allow_private=self.allow_private, resolve=self.resolve)
            receiver = receivers[key] = _Receiver(origin, backend, self.keepalive_expiry)
        return receiver

    async def _sweep(self) -> None:
        """At most once per ``SWEEP_INTERVAL``: close the expired idle connections of every
        receiver of the running loop, and drop the receivers left unused."""
        loop = asyncio.get_running_loop()
        now = self.monotonic()
        if now - self._swept_at.get(loop, -SWEEP_INTERVAL) < SWEEP_INTERVAL:
            return
        self._swept_at[loop] = now
        receivers = self._pools.get(loop, {})
        for key, receiver in list(receivers.items()):
            await receiver.close_expired()
            if receiver.unused():
                del receivers[key]

    def kept_alive(self) -> dict[str, int]:
        """The idle connections kept per receiver (``host:port``) for the running loop."""
        receivers = self._pools.get(asyncio.get_running_loop(), {})
        return {f"{host.decode()}:{port}": len(r.idle) for (_, host, port), r in receivers.items()}

    @contextlib.asynccontextmanager
    async def turn(self, url: str) -> AsyncIterator[object]:
        receiver = self._receiver(url)
        receiver.users += 1
        try:
            async with receiver.turn:
                held = _HELD.set(receiver)
                try:
                    yield receiver
                finally:
                    _HELD.reset(held)
        finally:
            receiver.users -= 1

    async def vet(self, url: str) -> None:
        await vet_url(url, allow_private=self.allow_private, resolve=self.resolve)

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, *, keep_alive: bool = True
    ) -> AttemptResult:
        try:
            check_url(url, allow_private=self.allow_private)
        except UnsafeTarget as exc:
            return AttemptResult(None, 0, f"refused: {exc.reason}")
        if not keep_alive:
            async with vetted_pool(
                allow_private=self.allow_private, resolve=self.resolve, max_keepalive_connections=0
            ) as pool:
                return await self._attempt(pool, url, headers, body)
        await self._sweep()
        receiver = self._receiver(url)
        if _HELD.get() is receiver:  # within a turn taken with ``turn``
            return await self._post(receiver, url, headers, body)
        async with self.turn(url):
            return await self._post(receiver, url, headers, body)

    async def _post(
        self, receiver: _Receiver, url: str, headers: dict[str, str], body: bytes
    ) -> AttemptResult:
        connection = await receiver.take()
        try:
            return await self._attempt(connection, url, headers, body)
        finally:
            await receiver.give_back(connection)

    async def _attempt(
        self, via: _Requester, url: str, headers: dict[str, str], body: bytes
    ) -> AttemptResult:
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._send(via, url, headers, body)
        except UnsafeTarget as exc:
            error = f"refused: {exc.reason}"
        except TimeoutError:
            error = f"timed out after {self.timeout:g} s"
        except httpcore.TimeoutException as exc:
            error = f"timed out: {type(exc).__name__}"
        except Exception as exc:  # any network or protocol failure fails this attempt only
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency_ms = round((time.perf_counter() - started) * 1000)
        if status is not None and not 200 <= status < 300:
            error = f"HTTP {status}" + (
                " (redirects are not followed)" if 300 <= status < 400 else ""
            )
        return AttemptResult(status, latency_ms, error)

    async def _send(self, via: _Requester, url: str, headers: dict[str, str], body: bytes) -> int:
        extensions = {
            "timeout": {
                "connect": self.connect_timeout,
                "read": self.timeout,
                "write": self.timeout,
                "pool": self.timeout,
            }
        }
        async with via.stream(
            "POST", url, headers=list(headers.items()), content=body, extensions=extensions
        ) as response:
            # Read (a bounded part of) the answer so the connection can be reused.
            received = 0
            async for chunk in response.aiter_stream():
                received += len(chunk)
                if received > MAX_RESPONSE_BYTES:
                    break
            return int(response.status)

    async def aclose(self) -> None:
        """Close the kept-alive connections of the running loop (call before the loop ends)."""
        receivers = self._pools.pop(asyncio.get_running_loop(), {})
        for receiver in receivers.values():
            await receiver.aclose()


_Requester = httpcore.AsyncConnectionPool | httpcore.AsyncHTTPConnection
# The receiver whose turn the current task holds (see ``HttpWebhookSender.turn``).
_HELD: contextvars.ContextVar[_Receiver | None] = contextvars.ContextVar(
    "webhook_receiver_turn", default=None
)


class _Receiver:
    """One receiver's connections: a turn per request in flight, and the idle ones kept."""

    def __init__(
        self, origin: httpcore.Origin, backend: VettingBackend, keepalive_expiry: float
    ) -> None:
        self.origin = origin
        self.backend = backend
        self.keepalive_expiry = keepalive_expiry
        self.turn = asyncio.Semaphore(MAX_CONNECTIONS_PER_RECEIVER)
        self.users = 0  # requests holding or waiting for a turn
        self.idle: list[httpcore.AsyncHTTPConnection] = []

    async def close_expired(self) -> None:
        """Close the idle connections that expired (or that the server closed)."""
        idle, self.idle = self.idle, []
        keep: list[httpcore.AsyncHTTPConnection] = []
        for connection in idle:
            if connection.is_idle() and not connection.has_expired():
                keep.append(connection)
            else:
                await connection.aclose()
        self.idle[:0] = keep  # before any put back meanwhile: those are the most recent

    def unused(self) -> bool:
        return not self.idle and self.users == 0

    async def take(self) -> httpcore.AsyncHTTPConnection:
        """The most recently used idle connection still usable, else a new (vetted) one."""
        while self.idle:
            connection = self.idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return httpcore.AsyncHTTPConnection(
            self.origin, keepalive_expiry=self.keepalive_expiry, network_backend=self.backend
        )

    async def give_back(self, connection: httpcore.AsyncHTTPConnection) -> None:
        """Keep it for the next request if it is ready for one; close it otherwise (a
        failed attempt, an answer not read to its end, a server that said close)."""
        if connection.is_idle() and not connection.is_closed():
            self.idle.append(connection)
        else:
            await connection.aclose()

    async def aclose(self) -> None:
        idle, self.idle = self.idle, []
        for connection in idle:
            await connection.aclose()
