"""What the kit sees on the broker: every message on the device topics of its prefix.

The kit listens beside its gateway, on a connection of its own, to both directions
(``up`` from devices, ``down`` from the server) and to the test rig's answers, and
keeps them in the order they arrived. Steps wait for messages that match a
condition, and judge what the device did from this record, not from the server's
reading of it: a message the server would drop still shows here, with the reason
it does not decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from keyautomat.adapters.device_hooks import hook_done_pattern
from keyautomat.adapters.device_links import Connection, Link, LinkError
from keyautomat.adapters.device_protocol import Data as ProtocolData
from keyautomat.adapters.device_protocol import (
    Message,
    ProtocolError,
    decode_from_device,
    decode_from_server,
    down_topic,
    encode,
    new_message_id,
    up_pattern,
)
from keyautomat.service_layer.clock import Clock

log = logging.getLogger(__name__)

Direction = Literal["up", "down", "hook"]


@dataclass(frozen=True, slots=True)
class Seen:
    """One message as the kit received it."""

    seq: int  # its place in the record, from 0
    direction: Direction
    hw_id: str
    at: float  # the kit's monotonic time (event loop) at arrival
    received: datetime  # the kit's wall clock at arrival
    payload: bytes
    message: Message | None  # decoded; None when it is malformed (see ``problem``)
    problem: str | None = None
    hook: dict[str, Any] | None = None  # a test rig's answer

    @property
    def type(self) -> str | None:
        return self.message.type if self.message is not None else None

    @property
    def body(self) -> ProtocolData | None:
        """The decoded ``data`` of the message, None when it did not decode."""
        return self.message.data if self.message is not None else None

    @property
    def id(self) -> str | None:
        return self.message.id if self.message is not None else None

    def data(self) -> Any:
        """The decoded ``data``, for a message known to decode (typed loosely, to match)."""
        assert self.message is not None
        return self.message.data


class Traffic:
    """The record of one prefix's device traffic, from ``start()`` on."""

    def __init__(self, link: Link, prefix: str, clock: Clock, client_id: str) -> None:
        self.link = link
        self.prefix = prefix
        self.clock = clock
        self.client_id = client_id
        self.seen: list[Seen] = []
        self.own: set[str] = set()  # ids of the server messages the kit itself sent
        self._arrived = asyncio.Event()
        self._connection: Connection | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lost: str | None = None

    async def start(self, timeout: float = 10.0) -> None:
        self._task = asyncio.create_task(self._listen())
        waiting = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            {waiting, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting not in done:
            waiting.cancel()
            if self._task in done:
                self._task.result()
            raise LinkError(f"the broker did not accept the kit's connection within {timeout} s")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, LinkError):
                await self._task

    async def _listen(self) -> None:
        async with self.link.connect(self.client_id) as connection:
            prefix = self.prefix
            for pattern in (up_pattern(prefix), f"{prefix}/devices/+/down"):
                await connection.subscribe(pattern)
            await connection.subscribe(hook_done_pattern(prefix))
            self._connection = connection
            self._ready.set()
            try:
                async for topic, payload in connection.messages():
                    self._record(topic, payload)
            except LinkError as exc:
                self._lost = str(exc)
                log.error("the kit lost the broker: %s", exc)
                raise
            finally:
                self._connection = None

    def _record(self, topic: str, payload: bytes) -> None:
        head = f"{self.prefix}/devices/"
        if not topic.startswith(head):
            return
        hw_id, _, rest = topic[len(head) :].partition("/")
        direction: Direction
        message = problem = hook = None
        if rest == "up":
            direction = "up"
            try:
                message = decode_from_device(payload)
            except ProtocolError as exc:
                problem = str(exc)
            if message is not None and message.hw_id != hw_id:
                problem = f"hwId {message.hw_id!r} differs from the topic's {hw_id!r}"
        elif rest == "down":
            direction = "down"
            with contextlib.suppress(ProtocolError):
                message = decode_from_server(payload)
        elif rest == "test/done":
            direction = "hook"
            try:
                hook = json.loads(payload)
            except ValueError:
                return
            if not isinstance(hook, dict):
                return
        else:
            return
        loop_now = asyncio.get_running_loop().time()
        self.seen.append(
            Seen(
                len(self.seen),
                direction,
                hw_id,
                loop_now,
                self.clock.now(),
                payload,
                message,
                problem,
                hook,
            )
        )
        self._arrived.set()

    # --- reading ------------------------------------------------------------------------

    def mark(self) -> int:
        """The position the next message will take: ``since`` for waits that follow."""
        return len(self.seen)

    def select(
        self,
        hw_id: str,
        direction: Direction = "up",
        *,
        since: int = 0,
        until: int | None = None,
        match: Callable[[Seen], bool] | None = None,
    ) -> list[Seen]:
        return [
            seen
            for seen in self.seen[since:until]
            if seen.hw_id == hw_id
            and seen.direction == direction
            and (match is None or match(seen))
        ]

    async def wait_for(
        self,
        hw_id: str | None,
        direction: Direction,
        match: Callable[[Seen], bool],
        *,
        timeout: float,
        since: int = 0,
    ) -> Seen | None:
        """The first message from ``since`` on that matches, waiting up to ``timeout``;
        None when none came. ``hw_id`` None matches any device."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        position = since
        while True:
            while position < len(self.seen):
                seen = self.seen[position]
                position += 1
                if (
                    (hw_id is None or seen.hw_id == hw_id)
                    and seen.direction == direction
                    and match(seen)
                ):
                    return seen
            left = deadline - loop.time()
            if left <= 0 or self._lost is not None:
                return None
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    def malformed(self, hw_id: str, *, since: int = 0) -> list[Seen]:
        """The device's messages from ``since`` on that do not decode."""
        return self.select(hw_id, since=since, match=lambda s: s.problem is not None)

    # --- writing ------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes) -> None:
        connection = self._connection
        if connection is None:
            raise LinkError(f"the kit is not connected to the broker ({self._lost})")
        await connection.publish(topic, payload)

    async def send_as_server(
        self, hw_id: str, type_: str, data: ProtocolData, *, message_id: str | None = None
    ) -> None:
        """Publish a server message to the device, as the gateway would."""
        message_id = message_id or new_message_id()
        self.own.add(message_id)
        payload = encode(
            type_, data, hw_id=hw_id, occurred_at=self.clock.now(), message_id=message_id
        )
        await self.publish(down_topic(self.prefix, hw_id), payload)
