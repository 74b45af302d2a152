"""The console's end of the simulator hooks (adapters/device_hooks.py): press keys at a
simulated automat and read what it shows, over the device link.

Any process with the device link can do it: the hooks are plain topics on the broker
(or on the in-process link of ``serve`` without a broker, where the demo automats
live), so an API process without the gateway (``serve --no-gateway``) reaches a
simulator just as well as the process holding its lease. Each process opens one
connection of its own for this, on first use, and answers are matched to their
instruction by id (and by the topic of the hwId asked).

Which hwIds may be asked is not decided here: the console sends only to automats the
server knows are simulated (service_layer/virtual_keypad.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import uuid
from typing import Any

from keyautomat.adapters.device_hooks import (
    AutomatShown,
    HookAnswer,
    decode_answer,
    hook_done_pattern,
    hook_done_topic,
    hook_topic,
    instruction,
)
from keyautomat.adapters.device_links import Connection, Link, LinkError

log = logging.getLogger(__name__)


class Unreachable(enum.Enum):
    NO_LINK = "no-link"  # no connection to the broker
    NO_ANSWER = "no-answer"  # nothing listens there, or it did not answer in time
    BUSY = "busy"  # too many instructions waiting in this process
    REFUSED = "refused"  # the rig answered, but did not do it


class ControlFailed(Exception):
    def __init__(self, reason: Unreachable, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class SimulatorControl:
    def __init__(
        self,
        link: Link,
        prefix: str,
        *,
        timeout: float = 3.0,
        max_waiting: int = 64,
        state_max_age: float = 0.5,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.timeout = timeout
        self.max_waiting = max_waiting
        # Several pages polling one automat share one question while it is this fresh.
        self.state_max_age = state_max_age
        self.client_id = f"keyautomat-console-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._connection: Connection | None = None
        self._ready = asyncio.Event()
        self._waiting: dict[str, tuple[str, asyncio.Future[HookAnswer]]] = {}
        self._states: dict[str, tuple[float, AutomatShown]] = {}
        self._asking: dict[str, asyncio.Future[AutomatShown]] = {}

    async def press(self, hw_id: str, keys: str) -> HookAnswer:
        """Press ``keys`` at the simulated automat; its answer, with what it shows after."""
        loop = self._bind_loop()
        answer = await self._ask(hw_id, "press", keys=keys)
        if answer.state is not None:
            self._states[hw_id] = (loop.time(), answer.state)
        return answer

    async def state(self, hw_id: str) -> AutomatShown:
        """What the simulated automat shows now (at most ``state_max_age`` old)."""
        loop = self._bind_loop()
        known = self._states.get(hw_id)
        if known is not None and loop.time() - known[0] <= self.state_max_age:
            return known[1]
        asking = self._asking.get(hw_id)
        if asking is not None:
            try:
                return await asyncio.shield(asking)
            except asyncio.CancelledError:
                if asking.cancelled():  # the one who asked went away, not this caller
                    raise ControlFailed(Unreachable.NO_ANSWER) from None
                raise
        asking = loop.create_future()
        self._asking[hw_id] = asking
        try:
            answer = await self._ask(hw_id, "state")
            if answer.state is None:
                raise ControlFailed(Unreachable.REFUSED, "the answer shows nothing")
            self._states[hw_id] = (loop.time(), answer.state)
            asking.set_result(answer.state)
            return answer.state
        except ControlFailed as exc:
            asking.set_exception(exc)
            asking.exception()  # retrieved: nobody else may be waiting for it
            raise
        except BaseException:
            asking.cancel()  # the asker went away (cancelled): the others ask again
            raise
        finally:
            if self._asking.get(hw_id) is asking:
                del self._asking[hw_id]

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, LinkError):
                await task
        self._states.clear()

    # --- the connection ---------------------------------------------------------------

    async def _ask(self, hw_id: str, action: str, **fields: Any) -> HookAnswer:
        if len(self._waiting) >= self.max_waiting:
            raise ControlFailed(Unreachable.BUSY)
        connection = await self._connected()
        loop = asyncio.get_running_loop()
        ref = uuid.uuid4().hex
        answered: asyncio.Future[HookAnswer] = loop.create_future()
        self._waiting[ref] = (hw_id, answered)
        try:
            try:
                await connection.publish(
                    hook_topic(self.prefix, hw_id), instruction(ref, action, **fields)
                )
            except LinkError as exc:
                raise ControlFailed(Unreachable.NO_LINK, str(exc)) from None
            try:
                answer = await asyncio.wait_for(answered, self.timeout)
            except TimeoutError:
                raise ControlFailed(Unreachable.NO_ANSWER) from None
        finally:
            self._waiting.pop(ref, None)
        if not answer.ok:
            raise ControlFailed(Unreachable.REFUSED, answer.error or "")
        return answer

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (a restarted application in tests): nothing of the old one
            # can be awaited here.
            self._loop, self._task, self._connection = loop, None, None
            self._ready = asyncio.Event()
            self._waiting.clear()
            self._asking.clear()
            self._states.clear()
        return loop

    async def _connected(self) -> Connection:
        loop = self._bind_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._listen(), name="simulator-control")
        if not self._ready.is_set():
            # Until connected, or the attempt failed (then at once, not after the timeout).
            ready = loop.create_task(self._ready.wait())
            try:
                await asyncio.wait(
                    {ready, self._task}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                ready.cancel()
        if self._connection is None:
            raise ControlFailed(Unreachable.NO_LINK, "no connection to the device link")
        return self._connection

    async def _listen(self) -> None:
        try:
            async with self.link.connect(self.client_id) as connection:
                await connection.subscribe(hook_done_pattern(self.prefix))
                self._connection = connection
                self._ready.set()
                async for topic, payload in connection.messages():
                    self._answered(topic, payload)
        except LinkError as exc:
            log.warning("the console's simulator control lost the device link: %s", exc)
        finally:
            self._connection = None
            self._ready.clear()

    def _answered(self, topic: str, payload: bytes) -> None:
        answer = decode_answer(payload)
        if answer is None:
            return
        waiting = self._waiting.get(answer.ref)
        if waiting is None:
            return  # someone else's (the conformance kit's), or too late
        hw_id, answered = waiting
        if topic != hook_done_topic(self.prefix, hw_id) or answered.done():
            return  # an answer to our id on another device's topic: not our rig's
        answered.set_result(answer)
