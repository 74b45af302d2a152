"""Outbound connections to addresses our users chose: webhook receivers and iLOQ S5 systems.

Both are server-side requests to a URL a tenant typed, so both are vetted the
same way (spec/webhooks.md §8, gaps.md G8, issue 11 item 4): the URL's syntax
when it is saved, and at every connection the host is resolved inside our own
network backend, every address it resolves to is vetted, and the connection is
made to a vetted address, so a DNS answer that changes between the check and
the connect (DNS rebinding) cannot steer a request into the private network.
TLS still verifies the certificate against the URL's host name: httpcore passes
the origin host as SNI and server name whatever address the socket reached.
Redirects are never followed (httpcore has no notion of them; the iLOQ client
does not ask httpx to follow them).

Refusals never echo what the host resolved to: the message would otherwise
tell a tenant what our internal DNS answers (issue 11 item 12).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

# httpcore's own alias (not exported): setsockopt arguments.
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnsafeTarget(Exception):
    """The URL or an address its host resolves to may not be connected to."""

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


def _not_reachable(host: str) -> UnsafeTarget:
    """The one refusal for a host we will not connect to, whatever the reason."""
    return UnsafeTarget(f"host {host!r} is not a publicly reachable address")


def check_url(url: str, *, allow_private: bool, allow_query: bool = True) -> tuple[str, int]:
    """Syntax rules of a target URL (no DNS); returns its host and port.

    https only (plain http too when private targets are allowed), a host, no
    credentials, no fragment, optionally no query; an IP literal must be public
    unless private targets are allowed.
    """
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
    if parts.fragment or url.endswith("#"):
        raise UnsafeTarget("must not carry a fragment")
    if not allow_query and (parts.query or "?" in url):
        raise UnsafeTarget("must not carry a query")
    if not allow_private and _is_ip_literal(host) and not is_public_address(host):
        raise _not_reachable(host)
    return host, port or (443 if parts.scheme == "https" else 80)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


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
    connection might otherwise reach the private one. A host that does not
    resolve gets the same refusal as one that resolves to a private address,
    so the answer says nothing about our DNS.
    """
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise _not_reachable(host) from exc
    if not addresses:
        raise _not_reachable(host)
    if not allow_private and not all(is_public_address(a) for a in addresses):
        raise _not_reachable(host)
    return addresses


async def vet_url(
    url: str, *, allow_private: bool, allow_query: bool = True, resolve: Resolver = system_resolve
) -> None:
    """The check made when a target URL is saved: syntax, then every address of its host."""
    host, port = check_url(url, allow_private=allow_private, allow_query=allow_query)
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
        raise UnsafeTarget("unix sockets are not allowed targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def vetted_pool(
    *, allow_private: bool, resolve: Resolver = system_resolve, **options: Any
) -> httpcore.AsyncConnectionPool:
    """An httpcore connection pool whose every connection goes through :class:`VettingBackend`."""
    return httpcore.AsyncConnectionPool(
        network_backend=VettingBackend(allow_private=allow_private, resolve=resolve), **options
    )


class VettedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over a vetted pool, for clients written against httpx.

    httpx offers no way to hand its transport a network backend, so the pool it
    built is replaced by one with the same TLS context and a vetting backend;
    httpx's request mapping and error translation are kept as they are.
    """

    def __init__(self, *, allow_private: bool, resolve: Resolver = system_resolve) -> None:
        super().__init__()
        self._pool = vetted_pool(
            allow_private=allow_private, resolve=resolve, ssl_context=httpx.create_ssl_context()
        )
