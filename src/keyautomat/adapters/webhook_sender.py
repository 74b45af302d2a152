"""Signs webhook deliveries and POSTs them, refusing any target that is not public.

Safety (spec/webhooks.md §8, gaps.md G8): a URL is checked when it is saved and
again at every delivery, and every connection goes through the vetting network
backend that the iLOQ S5 client shares (``adapters/outbound.py``).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

import httpcore
from standardwebhooks.webhooks import Webhook

from keyautomat.adapters.outbound import (
    Resolver,
    UnsafeTarget,
    check_url,
    system_resolve,
    vet_url,
    vetted_pool,
)

USER_AGENT = "keyautomat-webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024
# Requests in flight to one receiver (scheme, host, port) at a time, and the
# connections kept alive to it: each receiver has its own small pool. One pool
# for all receivers cost O(connections) per request (httpcore checks every idle
# connection, with two system calls each, whenever it assigns one: most of a
# delivery's CPU with 100 connections), and keeping fewer connections alive than
# were in use closed and reopened the surplus on every batch.
MAX_CONNECTIONS_PER_RECEIVER = 10


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
    receiver holds its own deliveries only."""

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout: float = 15.0,
        connect_timeout: float = 5.0,
        resolve: Resolver = system_resolve,
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.resolve = resolve
        # Pools are bound to the loop that opened their connections; the API (in
        # tests, a portal thread) and the worker may run on different loops.
        self._pools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[str, str, int], _Receiver]
        ] = weakref.WeakKeyDictionary()

    def _new_pool(self, *, keepalive: int) -> httpcore.AsyncConnectionPool:
        return vetted_pool(
            allow_private=self.allow_private,
            resolve=self.resolve,
            max_connections=MAX_CONNECTIONS_PER_RECEIVER,
            max_keepalive_connections=keepalive,
            keepalive_expiry=30.0,
        )

    def _receiver(self, url: str, host: str, port: int) -> _Receiver:
        receivers = self._pools.setdefault(asyncio.get_running_loop(), {})
        origin = (urlsplit(url).scheme, host, port)
        receiver = receivers.get(origin)
        if receiver is None:
            receiver = receivers[origin] = _Receiver(
                self._new_pool(keepalive=MAX_CONNECTIONS_PER_RECEIVER),
                asyncio.Semaphore(MAX_CONNECTIONS_PER_RECEIVER),
            )
        return receiver

    async def vet(self, url: str) -> None:
        await vet_url(url, allow_private=self.allow_private, resolve=self.resolve)

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, *, keep_alive: bool = True
    ) -> AttemptResult:
        try:
            host, port = check_url(url, allow_private=self.allow_private)
        except UnsafeTarget as exc:
            return AttemptResult(None, 0, f"refused: {exc.reason}")
        if not keep_alive:
            async with self._new_pool(keepalive=0) as pool:
                return await self._attempt(pool, url, headers, body)
        receiver = self._receiver(url, host, port)
        async with receiver.turn:
            return await self._attempt(receiver.pool, url, headers, body)

    async def _attempt(
        self, pool: httpcore.AsyncConnectionPool, url: str, headers: dict[str, str], body: bytes
    ) -> AttemptResult:
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._send(pool, url, headers, body)
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

    async def _send(
        self, pool: httpcore.AsyncConnectionPool, url: str, headers: dict[str, str], body: bytes
    ) -> int:
        extensions = {
            "timeout": {
                "connect": self.connect_timeout,
                "read": self.timeout,
                "write": self.timeout,
                "pool": self.timeout,
            }
        }
        async with pool.stream(
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
            await receiver.pool.aclose()


@dataclass(frozen=True, slots=True)
class _Receiver:
    pool: httpcore.AsyncConnectionPool
    turn: asyncio.Semaphore  # MAX_CONNECTIONS_PER_RECEIVER requests at a time
