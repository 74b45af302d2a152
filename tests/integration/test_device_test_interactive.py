"""``keyautomat device-test --interactive``, the way a hardware maker runs it: the kit
prints what to do at the device and asks what it cannot see. Here a scripted person
reads those instructions and does them at a simulated automat, all on the in-process
link, so the instructions are shown to be enough to pass the steps."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import Future

from keyautomat.devicetest.kit import Options
from keyautomat.devicetest.runner import DeviceTest, Verdict, select_steps
from keyautomat.devicetest.server import Timings
from keyautomat.simulator import SimulatedAutomat, blank_iloq_keys

PREFIX = "keyautomat-device-test/v1"
OPTIONS = Options(timeout=10.0, quiet_seconds=0.3, program_seconds=0.3)
TIMINGS = Timings(heartbeat_seconds=0.5, ack_timeout_seconds=3.0, proximity_seconds=10.0)


class ScriptedPerson:
    """Stands at the automat and does what the kit prints, nothing else; answers its
    questions from what they saw (the doors that opened)."""

    def __init__(self) -> None:
        self.sim: SimulatedAutomat | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lines: list[str] = []
        self.asked: list[str] = []
        self._partial = ""
        self._opened_before = 0
        self._busy: list[asyncio.Task[None]] = []

    # The kit prints to this "terminal", from its event loop.
    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self.lines.append(line)
            self._follow(line)
        return len(text)

    def flush(self) -> None:
        return None

    def _follow(self, line: str) -> None:
        sim = self.sim
        if sim is None or ">>>" not in line:
            return
        typed = re.search(r"type  (\S+)", line)
        if typed:
            self._opened_before = len(sim.openings)
            sim.press(typed.group(1))  # the autopilot takes or puts back the key
        elif "Cut the device's network" in line:
            self._busy.append(asyncio.get_running_loop().create_task(sim.go_offline()))
        elif "network back" in line:
            sim.go_online()

    # The kit prints its question on a line of its own, then reads the answer from a
    # thread of its own (as ``input`` would block).
    def read(self, _prompt: str) -> str:
        prompt = self.question()
        self.asked.append(prompt)
        assert self.loop is not None
        settled: Future[None] = asyncio.run_coroutine_threadsafe(self._settle(), self.loop)
        settled.result(timeout=10)
        if "Did any locker door open?" in prompt:
            assert self.sim is not None
            return "y" if len(self.sim.openings) > self._opened_before else "n"
        return ""

    def question(self) -> str:
        """What the kit asked last."""
        return next(line for line in reversed(self.lines) if line.startswith("  ... ")).strip()

    async def _settle(self) -> None:
        busy, self._busy = self._busy, []
        for task in busy:
            await task


async def run_interactively(person: ScriptedPerson, steps: list[str]) -> list[Verdict]:
    person.loop = asyncio.get_running_loop()
    async with DeviceTest(
        broker=None,
        prefix=PREFIX,
        options=OPTIONS,
        timings=TIMINGS,
        interactive=True,
        out=person,
        read=person.read,
    ) as run:
        run.introduce()
        assert run.server is not None
        sim = SimulatedAutomat(
            link=run.server.link,
            hw_id="SIM-AT-THE-BENCH",
            locker_count=6,
            installation_pincode=run.installation_code,
            prefix=PREFIX,
            resend_seconds=0.5,
            tick_seconds=0.02,
        )
        sim.stock(blank_iloq_keys(3))
        person.sim = sim
        device = asyncio.create_task(sim.run())
        try:
            return await run.run(select_steps(steps))
        finally:
            await sim.stop()
            device.cancel()


def test_a_person_who_follows_the_printed_instructions_passes_the_steps_at_the_device() -> None:
    person = ScriptedPerson()
    steps = ["codes-that-must-not-open", "proximity-prompt", "offline-replay", "program-first"]
    verdicts = asyncio.run(run_interactively(person, steps))
    assert {v.step: v.status for v in verdicts} == {
        "binding": "PASS",
        "locker-inventory": "PASS",
        "sync": "PASS",
        "fetch-at-keypad": "PASS",
        "return-at-keypad": "PASS",
        "codes-that-must-not-open": "PASS",
        "proximity-prompt": "PASS",
        "offline-replay": "PASS",
        "program-first": "PASS",
    }, "\n".join(person.lines)
    told = "\n".join(line for line in person.lines if ">>>" in line)
    assert "take the key out of locker 0 and close its door" in told
    assert "put the key back into locker 0 and close its door" in told
    assert "Cut the device's network now" in told
    assert "do NOT press #" in told
    assert "Press Enter once it is offline." in "\n".join(person.asked)


class SeesDoorsOpen(ScriptedPerson):
    """Says a door opened whenever asked."""

    def read(self, prompt: str) -> str:
        answer = super().read(prompt)
        return "y" if "Did any locker door open?" in self.question() else answer


def test_a_person_who_saw_a_door_open_for_a_code_that_must_not_open_fails_that_step() -> None:
    person = SeesDoorsOpen()
    verdicts = asyncio.run(run_interactively(person, ["codes-that-must-not-open"]))
    failed = [v for v in verdicts if v.status == "FAIL"]
    assert [v.step for v in failed] == ["codes-that-must-not-open"]
    assert "was honoured: a door opening" in failed[0].detail
