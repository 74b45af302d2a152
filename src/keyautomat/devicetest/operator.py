"""Who acts at the device under test: a person (``--interactive``) or a test rig (hooks).

Some steps need hands at the device: typing a code, taking a key, cutting the
network, entering an installation code. At real hardware the kit prints what to do
and a person does it; against ``keyautomat simulate --test-hooks`` (or hardware
whose test rig speaks the same hooks) the kit sends the instruction over the
broker (simulator/test_hooks.py). Either way the kit then judges the device by what
it reports, never by the operator's word, except where the device cannot report:
whether a door opened while the device was offline or refused by the server.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from keyautomat.adapters.device_hooks import hook_topic, instruction
from keyautomat.adapters.device_protocol import new_message_id
from keyautomat.devicetest.traffic import Traffic


class Terminal(Protocol):
    """Where the kit prints (stdout, or a test's scripted person)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class OperatorGone(Exception):
    """Nobody can act at the device: the rig does not answer, or input ended."""


@dataclass(frozen=True, slots=True)
class Done:
    """What the operator saw while acting: the lockers that opened (None: not asked)."""

    opened: list[int] | None = None


class Operator(Protocol):
    interactive: bool

    async def ready(self, hw_id: str) -> None:
        """Raise OperatorGone unless instructions reach the device ``hw_id``."""

    async def press(self, keys: str, *, then: str = "", wait: bool = False) -> Done:
        """Type ``keys`` at the keypad, then do ``then`` (take a key, close the door).
        ``wait``: the device cannot show it was done (it is offline), so the person
        says when."""

    async def press_expecting_shut(self, keys: str, why: str) -> Done:
        """Type ``keys``, which must open nothing; ``opened`` says what did."""

    async def go_offline(self) -> None: ...

    async def go_online(self) -> None: ...

    async def enter_installation_code(self, code: str) -> None: ...

    async def act(self, what: str) -> None:
        """Something only a person can do at the device (the rig's autopilot does it)."""


class HookOperator:
    """The test rig at ``keyautomat simulate --test-hooks``, over the broker."""

    interactive = False

    def __init__(self, traffic: Traffic, prefix: str, timeout: float = 10.0) -> None:
        self.traffic = traffic
        self.prefix = prefix
        self.timeout = timeout
        self.hw_id = ""

    async def ready(self, hw_id: str) -> None:
        self.hw_id = hw_id
        try:
            await self._instruct("ping", timeout=min(self.timeout, 5.0))
        except OperatorGone as exc:
            raise OperatorGone(
                f"{exc}; run keyautomat simulate with --test-hooks, or test real hardware "
                "with --interactive"
            ) from None

    async def _instruct(self, action: str, *, timeout: float | None = None, **fields: Any) -> Done:
        timeout = timeout or self.timeout
        ref = new_message_id()
        since = self.traffic.mark()
        await self.traffic.publish(
            hook_topic(self.prefix, self.hw_id), instruction(ref, action, **fields)
        )
        answer = await self.traffic.wait_for(
            self.hw_id,
            "hook",
            lambda seen: seen.hook is not None and seen.hook.get("ref") == ref,
            timeout=timeout,
            since=since,
        )
        if answer is None or answer.hook is None:
            raise OperatorGone(
                f"the test rig of {self.hw_id} did not answer {action!r} within {timeout:g} s"
            )
        if not answer.hook.get("ok"):
            raise OperatorGone(f"the test rig could not {action}: {answer.hook.get('error')}")
        opened = answer.hook.get("opened")
        return Done([int(i) for i in opened] if isinstance(opened, list) else None)

    async def press(self, keys: str, *, then: str = "", wait: bool = False) -> Done:
        return await self._instruct("press", keys=keys)

    async def press_expecting_shut(self, keys: str, why: str) -> Done:
        return await self._instruct("press", keys=keys)

    async def go_offline(self) -> None:
        await self._instruct("go-offline")

    async def go_online(self) -> None:
        await self._instruct("go-online")

    async def enter_installation_code(self, code: str) -> None:
        await self._instruct("enter-installation-code", code=code)

    async def act(self, what: str) -> None:
        return None


class PersonOperator:
    """A person at real hardware, told what to do on the terminal."""

    interactive = True

    def __init__(
        self, out: Terminal | None = None, read: Callable[[str], str] | None = None
    ) -> None:
        self.out: Terminal = out or sys.stdout
        self._read = read or input

    def _say(self, text: str) -> None:
        print(f"  >>> {text}", file=self.out, flush=True)

    async def _ask(self, prompt: str) -> str:
        """The person's answer. Read on a daemon thread: a run cut short (Ctrl-C) must not
        wait at exit for a line nobody will type."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        def settle(text: str | None, error: BaseException | None) -> None:
            if answer.done():
                return
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(text or "")

        # The question on a line of its own: with input piped in (a script, a log) nothing
        # echoes the answer's newline, and the next line would run on after the question.
        print(f"  ... {prompt}", file=self.out, flush=True)

        def read() -> None:
            try:
                text = str(self._read(""))
            except BaseException as exc:  # handed to the loop, which raises it in _ask
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, text, None)

        threading.Thread(target=read, name="device-test-operator", daemon=True).start()
        try:
            return (await answer).strip()
        except EOFError:
            raise OperatorGone("the terminal closed: nobody to act at the device") from None

    async def ready(self, hw_id: str) -> None:
        self._say(f"The device {hw_id} is bound. Stay at it: the next steps need your hands.")

    async def press(self, keys: str, *, then: str = "", wait: bool = False) -> Done:
        self._say(f"At the keypad type  {keys}" + (f"  then {then}" if then else ""))
        if wait:
            await self._ask("Press Enter when done.")
        return Done()

    async def press_expecting_shut(self, keys: str, why: str) -> Done:
        self._say(f"At the keypad type  {keys}  ({why}: no locker may open)")
        answer = await self._ask("Did any locker door open? [y/N]")
        return Done([-1] if answer.lower().startswith("y") else [])

    async def go_offline(self) -> None:
        self._say(
            "Cut the device's network now (unplug the cable, switch off the Wi-Fi or the "
            "access point); keep the device powered."
        )
        await self._ask("Press Enter once it is offline.")

    async def go_online(self) -> None:
        self._say("Give the device its network back now.")

    async def enter_installation_code(self, code: str) -> None:
        self._say(f"Enter the installation code  {code}  at the device, as an installer would.")

    async def act(self, what: str) -> None:
        self._say(what)
