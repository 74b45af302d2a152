"""What every step shares: the device under test, its lockers as it reported them, and
waiting for it to report what it should."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keyautomat.adapters.device_protocol import (
    Ack,
    CodeEntered,
    KeyEvent,
    LockerEvent,
    LockerInventory,
    PromptEnded,
    Rejected,
)
from keyautomat.devicetest.operator import Operator
from keyautomat.devicetest.server import KitCode, KitServer
from keyautomat.devicetest.traffic import Seen, Traffic
from keyautomat.domain.devices import PincodePurpose, code_type_for


class StepFailed(Exception):
    """The device did not do what the step expects; the message says what it did."""


class StepSkipped(Exception):
    """The step does not apply (a key30 programs no keys, say)."""


@dataclass(frozen=True, slots=True)
class Options:
    product: str = "key20"
    timeout: float = 20.0  # for each reaction the kit waits for
    bind_timeout: float = 600.0  # for the device to bind at the start
    quiet_seconds: float = 2.0  # watched when nothing may happen
    program_seconds: float = 2.0  # the server "programs" a key this long
    max_skew_seconds: float = 30.0  # device clock against the kit's


@dataclass(frozen=True, slots=True)
class Expect:
    """One device event a step waits for."""

    type: str
    what: str  # how it reads in a failure ("key-removed of locker 3")
    match: Callable[[Any], bool] = lambda _data: True


def code_entered(code: KitCode, source: str) -> Expect:
    def match(data: Any) -> bool:
        return isinstance(data, CodeEntered) and data.code == code.code

    return Expect("code-entered", f"code-entered of {code.code} ({source})", match)


def locker_event(type_: str, locker: int) -> Expect:
    def match(data: Any) -> bool:
        return isinstance(data, LockerEvent | KeyEvent) and data.locker_index == locker

    return Expect(type_, f"{type_} of locker {locker}", match)


def prompt_ended(code: str, outcome: str) -> Expect:
    def match(data: Any) -> bool:
        return isinstance(data, PromptEnded) and data.code == code and data.outcome == outcome

    return Expect("prompt-ended", f"prompt-ended {outcome} of {code}", match)


def key_event_of(code: KitCode) -> str:
    return "key-inserted" if code.purpose == PincodePurpose.RETURN else "key-removed"


def cycle(code: KitCode, source: str) -> list[Expect]:
    """What a device reports for a code that opens its locker and the person at it
    taking (fetch) or putting back (return) the key and closing the door."""
    locker = code.locker_index
    return [
        code_entered(code, source),
        locker_event("locker-opened", locker),
        locker_event(key_event_of(code), locker),
        locker_event("locker-closed", locker),
    ]


def hand_action(code: KitCode) -> str:
    """What the person does once the code's locker opens."""
    if code.purpose == PincodePurpose.RETURN:
        return f"put the key back into locker {code.locker_index} and close its door"
    return f"take the key out of locker {code.locker_index} and close its door"


@dataclass(slots=True)
class LockerView:
    key_inside: bool
    key_id: str | None  # the key inside, or the last one taken out


@dataclass(slots=True)
class Kit:
    server: KitServer
    traffic: Traffic
    operator: Operator
    options: Options
    hw_id: str = ""
    token: str | None = None
    locker_count: int = 0
    heartbeat_seconds: float = 0.0
    welcome_seq: int = 0
    inventory_seq: int | None = None
    # Lockers that held a key in the first inventory: the ones steps open.
    stocked: list[int] = field(default_factory=list)
    # Codes steps leave for later steps, by name ("fetched": the code fetch-at-keypad used).
    codes: dict[str, KitCode] = field(default_factory=dict)

    @property
    def timeout(self) -> float:
        return self.options.timeout

    # --- what the device reported -------------------------------------------------------

    def events(self, since: int = 0, until: int | None = None) -> list[Seen]:
        """The device's decoded messages, each message id once (its first arrival)."""
        ids: set[str] = set()
        first: list[Seen] = []
        for seen in self.traffic.select(self.hw_id, since=since, until=until):
            if seen.message is None or seen.message.id in ids:
                continue
            ids.add(seen.message.id)
            first.append(seen)
        return first

    def lockers(self) -> dict[int, LockerView]:
        """Every locker as the device last reported it: its inventory, then key events."""
        view: dict[int, LockerView] = {}
        for seen in self.events(self.welcome_seq):
            data = seen.data()
            if isinstance(data, LockerInventory):
                view = {
                    state.locker_index: LockerView(state.key_inside, state.key_id)
                    for state in data.lockers
                }
            elif isinstance(data, KeyEvent):
                known = view.get(data.locker_index)
                key_id = data.key_id or (known.key_id if known else None)
                view[data.locker_index] = LockerView(seen.type == "key-inserted", key_id)
        return view

    def opening_locker(self) -> int:
        """The locker the steps open: the first that held a key in the inventory."""
        if not self.stocked:
            raise StepFailed(
                "no locker held a key in the device's inventory: put keys into at least two "
                "lockers before running the kit"
            )
        return self.stocked[0]

    def holds_key(self, locker: int) -> bool:
        view = self.lockers().get(locker)
        return view is not None and view.key_inside

    async def code_that_opens(self, locker: int) -> KitCode:
        """A code that opens ``locker`` now: a fetch while it holds a key, else a return of
        the key last taken out of it. Synced to the device before it is returned."""
        view = self.lockers().get(locker)
        if view is not None and view.key_inside:
            code = await self.server.add_code(locker, PincodePurpose.FETCH)
        else:
            key_id = view.key_id if view is not None else None
            code = await self.server.add_code(locker, PincodePurpose.RETURN, key_id=key_id)
        await self.synced(code.version)
        return code

    async def synced(self, version: int) -> None:
        since = self.traffic.mark()
        if not await self.server.until_synced(version, self.timeout):
            heard = self.traffic.select(self.hw_id, since=since)
            said_no = [
                seen.body for seen in heard if isinstance(seen.body, Ack) and not seen.body.ok
            ]
            why = " (it sent nothing at all meanwhile)" if not heard else ""
            if said_no:
                why = f" (it answered ok:false, reason {said_no[0].reason!r})"
            raise StepFailed(
                f"the device did not acknowledge sync version {version} within "
                f"{self.timeout:g} s{why}" + self.meanwhile(since)
            )

    async def retire(self, *codes: KitCode) -> None:
        """Remove used codes, as contracts do, and wait until the device knows."""
        version = 0
        for code in codes:
            version = await self.server.remove_code(code)
        if version:
            await self.synced(version)

    # --- waiting for the device ---------------------------------------------------------

    async def expect(
        self, since: int, expected: list[Expect], *, timeout: float | None = None
    ) -> list[Seen]:
        """The device's events matching ``expected``, in that order (others may come in
        between); StepFailed naming the first that did not come in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.timeout)
        used: set[str] = set()
        found: list[Seen] = []
        position = since
        for wanted in expected:

            def match(seen: Seen, wanted: Expect = wanted) -> bool:
                return (
                    seen.message is not None
                    and seen.message.id not in used
                    and seen.type == wanted.type
                    and wanted.match(seen.message.data)
                )

            seen = await self.traffic.wait_for(
                self.hw_id, "up", match, timeout=max(0.0, deadline - loop.time()), since=position
            )
            if seen is None:
                got = ", ".join(f"{s.what}" for s in expected[: len(found)]) or "nothing"
                raise StepFailed(
                    f"expected {wanted.what}, which did not come within "
                    f"{timeout if timeout is not None else self.timeout:g} s "
                    f"(got {got})" + self.meanwhile(since)
                )
            assert seen.message is not None
            used.add(seen.message.id)
            found.append(seen)
            position = seen.seq + 1
        return found

    def meanwhile(self, since: int) -> str:
        """What else went wrong since ``since``: malformed messages, server refusals."""
        notes = []
        for bad in self.traffic.malformed(self.hw_id, since=since)[:3]:
            notes.append(f"the device sent a malformed message: {bad.problem}")
        for refusal in self.traffic.select(
            self.hw_id,
            "down",
            since=since,
            match=lambda s: s.type == "rejected" and s.id not in self.traffic.own,
        )[:3]:
            data = refusal.data()
            assert isinstance(data, Rejected)
            notes.append(f"the server refused message {data.ref}: {data.reason}")
        return "; meanwhile " + "; ".join(notes) if notes else ""

    async def quiet(self, since: int, match: Callable[[Seen], bool]) -> list[Seen]:
        """Watch ``quiet_seconds``; the device's messages from ``since`` that match."""
        await asyncio.sleep(self.options.quiet_seconds)
        return self.traffic.select(self.hw_id, since=since, match=match)

    def check_code_entered(self, seen: Seen, code: KitCode, source: str) -> None:
        data = seen.data()
        assert isinstance(data, CodeEntered)
        problems = []
        code_type = code_type_for(code.purpose)
        if data.code_type != code_type:
            problems.append(f"codeType {data.code_type!r}, not {code_type!r}")
        if data.source != source:
            problems.append(f"source {data.source!r}, not {source!r}")
        if data.locker_index is not None and data.locker_index != code.locker_index:
            problems.append(f"lockerIndex {data.locker_index}, not {code.locker_index}")
        if data.pincode_id is not None and data.pincode_id != code.id:
            problems.append(f"pincodeId {data.pincode_id!r}, not the synced id {code.id!r}")
        if problems:
            raise StepFailed(f"code-entered of {code.code} has " + ", ".join(problems))

    def check_in_time_order(self, events: list[Seen]) -> None:
        times: list[datetime] = []
        for seen in events:
            assert seen.message is not None
            times.append(seen.message.occurred_at)
        for before, after, seen in zip(times, times[1:], events[1:], strict=False):
            if after < before:
                raise StepFailed(
                    f"{seen.type} says it happened at {after.isoformat()}, before the event "
                    f"reported ahead of it ({before.isoformat()}): occurredAt must be when "
                    "each thing happened, in order"
                )

    async def acked(self, seen: Seen) -> Seen | None:
        """The device's ack of the server message ``seen``."""
        assert seen.message is not None
        ref = seen.message.id
        return await self.traffic.wait_for(
            self.hw_id,
            "up",
            lambda s: s.type == "ack" and s.data().ref == ref,
            timeout=self.timeout,
            since=seen.seq,
        )
