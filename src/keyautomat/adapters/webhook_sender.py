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
# Connections of the worker's pool: at least the worker's deliveries in flight
# (OutboxWorker.max_in_flight), all kept alive between deliveries. With fewer kept
# alive than in flight, every batch to a receiver closed the surplus and opened
# them again (a TCP handshake and a vetting of the address each).
MAX_CONNECTIONS = 100


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
    """The real sender: one connection pool per event loop, every connection vetted."""

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
            asyncio.AbstractEventLoop, httpcore.AsyncConnectionPool
        ] = weakref.WeakKeyDictionary()

    def _new_pool(self, *, keepalive: int) -> httpcore.AsyncConnectionPool:
        return vetted_pool(
            allow_private=self.allow_private,
            resolve=self.resolve,
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=keepalive,
            keepalive_expiry=30.0,
        )

    def _pool(self) -> httpcore.AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = self._new_pool(keepalive=MAX_CONNECTIONS)
        return pool

    async def vet(self, url: str) -> None:
        await vet_url(url, allow_private=self.allow_private, resolve=self.resolve)

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, *, keep_alive: bool = True
    ) -> AttemptResult:
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            check_url(url, allow_private=self.allow_private)
            async with asyncio.timeout(self.timeout):
                if keep_alive:
                    status = await self._send(self._pool(), url, headers, body)
                else:
                    async with self._new_pool(keepalive=0) as pool:
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
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.aclose()
