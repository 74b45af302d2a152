"""Device links: how protocol bytes travel between the gateway and the automats.

Two implementations of one small publish/subscribe interface, shaped like MQTT
(topics with ``+``/``#`` wildcards, a will message on abnormal disconnect):

- ``MqttLink`` talks to a real broker through aiomqtt (MQTT 5, or 3.1.1 for a device
  that has only that; QoS 1);
- ``InProcessLink`` routes between connections of one process, for the embedded
  default and the tests. It is thread-safe, so a gateway on one event loop and
  simulators on another can share it.

Everything above this module (gateway, simulator) is the same on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)


class LinkError(Exception):
    """The connection to the broker failed or was lost."""


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


class Connection(Protocol):
    async def subscribe(self, pattern: str) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...

    def messages(self) -> AsyncIterator[tuple[str, bytes]]: ...


class Link(Protocol):
    def connect(
        self,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        credentials: Credentials | None = None,
    ) -> AbstractAsyncContextManager[Connection]: ...


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching: ``+`` is one level, a trailing ``#`` any number."""
    pattern_levels = pattern.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(pattern_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[index]):
            return False
    return len(pattern_levels) == len(topic_levels)


# --- in-process -------------------------------------------------------------------------

_CLOSED = object()


class _InProcessConnection:
    def __init__(
        self,
        link: InProcessLink,
        client_id: str,
        loop: asyncio.AbstractEventLoop,
        will: tuple[str, bytes] | None,
    ) -> None:
        self.link = link
        self.client_id = client_id
        self.loop = loop
        self.will = will
        self.patterns: list[str] = []
        self.closed = False
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    def deliver(self, item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the owner's loop is already closed
            self.loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def subscribe(self, pattern: str) -> None:
        self.patterns.append(pattern)

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.closed:
            raise LinkError("connection closed")
        self.link.route(topic, payload)

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                raise LinkError("connection lost")
            assert isinstance(item, tuple)
            yield item


class InProcessLink:
    """A broker inside the process. ``cut()`` drops a client as a network failure would."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[str, _InProcessConnection] = {}

    @asynccontextmanager
    async def connect(
        self,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        credentials: Credentials | None = None,
    ) -> AsyncIterator[Connection]:
        del credentials  # nothing to authenticate against inside one process
        connection = _InProcessConnection(self, client_id, asyncio.get_running_loop(), will)
        with self._lock:
            previous = self._connections.get(client_id)
            self._connections[client_id] = connection
        if previous is not None:
            # As with MQTT, a second connection under the same client id takes over.
            self._drop(previous, send_will=False)
        abnormal = True
        try:
            yield connection
            abnormal = False
        finally:
            self._drop(connection, send_will=abnormal)

    def cut(self, client_id: str) -> bool:
        """Break the client's connection abruptly (its will is published)."""
        with self._lock:
            connection = self._connections.get(client_id)
        if connection is None:
            return False
        self._drop(connection, send_will=True)
        return True

    def connected(self, client_id: str) -> bool:
        with self._lock:
            return client_id in self._connections

    def _drop(self, connection: _InProcessConnection, *, send_will: bool) -> None:
        with self._lock:
            if connection.closed:
                return
            connection.closed = True
            if self._connections.get(connection.client_id) is connection:
                del self._connections[connection.client_id]
        connection.deliver(_CLOSED)
        if send_will and connection.will is not None:
            self.route(*connection.will)

    def route(self, topic: str, payload: bytes) -> None:
        with self._lock:
            targets = [
                c
                for c in self._connections.values()
                if any(topic_matches(p, topic) for p in c.patterns)
            ]
        for connection in targets:
            connection.deliver((topic, payload))


# --- MQTT -------------------------------------------------------------------------------


class _MqttConnection:
    def __init__(self, client: object) -> None:
        import aiomqtt

        assert isinstance(client, aiomqtt.Client)
        self._client = client

    async def subscribe(self, pattern: str) -> None:
        import aiomqtt

        try:
            await self._client.subscribe(pattern, qos=1)
        except aiomqtt.MqttError as exc:
            raise LinkError(str(exc)) from exc

    async def publish(self, topic: str, payload: bytes) -> None:
        import aiomqtt

        try:
            await self._client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise LinkError(str(exc)) from exc

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        import aiomqtt

        try:
            async for message in self._client.messages:
                payload = message.payload
                if isinstance(payload, str):
                    payload = payload.encode()
                elif not isinstance(payload, bytes | bytearray):
                    continue
                yield str(message.topic), bytes(payload)
        except aiomqtt.MqttError as exc:
            raise LinkError(str(exc)) from exc
        raise LinkError("connection closed")


MqttVersion = Literal["5", "3.1.1"]


class MqttLink:
    """A connection factory for one broker, from ``mqtt://[user:password@]host[:port]``.

    The gateway speaks MQTT 5; ``mqtt_version="3.1.1"`` connects as an embedded device
    with only MQTT 3.1.1 would (the protocol needs nothing of 5: topics, payloads, QoS 1).
    """

    def __init__(
        self,
        url: str,
        *,
        keepalive: int = 30,
        timeout: float = 10.0,
        mqtt_version: MqttVersion = "5",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "tcp"} or not parts.hostname:
            raise ValueError(f"not an mqtt:// URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 1883
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.keepalive = keepalive
        self.timeout = timeout
        self.mqtt_version = mqtt_version

    @asynccontextmanager
    async def connect(
        self,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        credentials: Credentials | None = None,
    ) -> AsyncIterator[Connection]:
        import aiomqtt
        from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY

        username = credentials.username if credentials else self.username
        password = credentials.password if credentials else self.password
        v5 = self.mqtt_version == "5"
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=client_id,
            username=username,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(will[0], will[1], qos=1) if will else None,
            keepalive=self.keepalive,
            timeout=self.timeout,
            # A clean session each time: commands sent while it was away are not delivered
            # late (MQTT 5's clean start; 3.1.1's clean session flag).
            clean_start=MQTT_CLEAN_START_FIRST_ONLY,
            clean_session=None if v5 else True,
            # Without TCP_NODELAY, Nagle's algorithm meets the broker's delayed ACK and
            # every QoS 1 publish waits ~40 ms for its PUBACK (measured on loopback).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        try:
            async with client:
                yield _MqttConnection(client)
        except aiomqtt.MqttError as exc:
            raise LinkError(str(exc)) from exc


def link_from_url(url: str | None) -> Link:
    return MqttLink(url) if url else InProcessLink()
