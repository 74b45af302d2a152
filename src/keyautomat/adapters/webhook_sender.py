"""Signs webhook deliveries and POSTs them, refusing any target that is not public.

Safety (spec/webhooks.md §8, gaps.md G8): a URL is checked when it is saved and
again at every delivery. At delivery the host is resolved inside our own
network backend, every address it resolves to is vetted, and the connection is
made to a vetted address, so a DNS answer that changes between the check and
the connect (DNS rebinding) cannot steer a delivery into the private network.
TLS still verifies the certificate against the URL's host name: httpcore passes
the origin host as SNI and server name whatever address the socket reached.
Redirects are never followed (httpcore has no notion of them).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

import httpcore
from standardwebhooks.webhooks import Webhook

USER_AGENT = "keyautomat-webhooks/1"
MAX_RESPONSE_BYTES = 64 * 1024

# httpcore's own alias (not exported): setsockopt arguments.
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnsafeTarget(Exception):
    """The URL or an address its host resolves to may not receive deliveries."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Ranges that ``ipaddress``'s ``is_global`` would call public yet that carry an
# embedded IPv4 address we must vet in its own right.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address; embedded IPv4 forms are unwrapped."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(str(embedded))
    return bool(ip.is_global) and not ip.is_multicast


def check_url(url: str, *, allow_private: bool) -> tuple[str, int]:
    """Syntax rules of a receiver URL; returns its host and port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"is not a valid URL ({exc})") from exc
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeTarget("must be an https:// URL")
    host = parts.hostname
    if not host:
        raise UnsafeTarget("must name a host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("must not carry credentials")
    if parts.fragment:
        raise UnsafeTarget("must not carry a fragment")
    return host, port or (443 if parts.scheme == "https" else 80)


async def system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


async def vet_host(host: str, port: int, *, allow_private: bool, resolve: Resolver) -> list[str]:
    """Resolve ``host`` and return its addresses, or refuse if any of them is not public.

    One non-public address is enough to refuse: with several A records the
    connection might otherwise reach the private one.
    """
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise UnsafeTarget(f"host {host!r} cannot be resolved ({exc})") from exc
    if not addresses:
        raise UnsafeTarget(f"host {host!r} cannot be resolved")
    if not allow_private:
        for address in addresses:
            if not is_public_address(address):
                raise UnsafeTarget(f"host {host!r} resolves to non-public address {address}")
    return addresses


async def vet_url(url: str, *, allow_private: bool, resolve: Resolver = system_resolve) -> None:
    """The check made when a subscription's URL is saved."""
    host, port = check_url(url, allow_private=allow_private)
    await vet_host(host, port, allow_private=allow_private, resolve=resolve)


class VettingBackend(httpcore.AsyncNetworkBackend):
    """Connects only to vetted addresses of the requested host."""

    def __init__(self, *, allow_private: bool, resolve: Resolver) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await asyncio.wait_for(
            vet_host(host, port, allow_private=self.allow_private, resolve=self.resolve), timeout
        )
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeTarget("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


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
        return httpcore.AsyncConnectionPool(
            max_connections=100,
            max_keepalive_connections=keepalive,
            keepalive_expiry=30.0,
            network_backend=VettingBackend(allow_private=self.allow_private, resolve=self.resolve),
        )

    def _pool(self) -> httpcore.AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = self._new_pool(keepalive=20)
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
