"""One run of the conformance kit: the server side up, the automat installed, the steps
run in order, each verdict printed as it is reached."""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from keyautomat.devicetest import DEFAULT_PREFIX
from keyautomat.devicetest.kit import Kit, Options, StepFailed, StepSkipped
from keyautomat.devicetest.operator import (
    HookOperator,
    Operator,
    OperatorGone,
    PersonOperator,
    Terminal,
)
from keyautomat.devicetest.server import KitServer, Timings
from keyautomat.devicetest.steps import STEPS, Step
from keyautomat.devicetest.traffic import Traffic

log = logging.getLogger(__name__)

Status = Literal["PASS", "FAIL", "SKIP"]
PRODUCTION_PREFIX = "keyautomat/v1"  # KEYAUTOMAT_MQTT_TOPIC_PREFIX's default


@dataclass(frozen=True, slots=True)
class Verdict:
    step: str
    status: Status
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        took = f" [{self.seconds:.1f} s]" if self.status != "SKIP" else ""
        return f"{self.status} {self.step}: {self.detail}{took}"


def select_steps(names: list[str] | None) -> list[Step]:
    """The steps named, with every step they need, in the kit's order (all when None)."""
    if not names:
        return list(STEPS)
    by_name = {step.name: step for step in STEPS}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"no such step: {', '.join(unknown)} (see --list)")
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].needs)
    return [step for step in STEPS if step.name in wanted]


class DeviceTest:
    """The server side of one conformance run, from installing the automat to the verdicts.

    ``broker`` None runs on an in-process link (the tests' simulators connect to
    ``server.link``)."""

    def __init__(
        self,
        *,
        broker: str | None,
        prefix: str = DEFAULT_PREFIX,
        options: Options | None = None,
        timings: Timings | None = None,
        interactive: bool = False,
        out: Terminal | None = None,
        read: Callable[[str], str] | None = None,
    ) -> None:
        self.broker = broker
        self.prefix = prefix
        self.options = options or Options()
        self.timings = timings or Timings(
            heartbeat_seconds=5.0,
            ack_timeout_seconds=10.0,
            proximity_seconds=max(60.0, self.options.timeout),
        )
        self.interactive = interactive
        self.out: Terminal = out or sys.stdout
        self.read = read  # a person's answers (``input`` unless given)
        self._workdir = tempfile.TemporaryDirectory(prefix="keyautomat-device-test-")
        self.server: KitServer | None = None
        self.traffic: Traffic | None = None
        self.operator: Operator | None = None
        self.installation_code = ""

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    async def __aenter__(self) -> DeviceTest:
        try:
            await self._open()
        except BaseException:
            await self._close()
            raise
        return self

    async def _open(self) -> None:
        self.server = KitServer.create(
            broker=self.broker,
            prefix=self.prefix,
            workdir=Path(self._workdir.name),
            product=self.options.product,
            timings=self.timings,
        )
        self.traffic = Traffic(
            self.server.link,
            self.prefix,
            self.server.clock,
            client_id=f"keyautomat-device-test-watch-{uuid.uuid4().hex[:12]}",
        )
        await self.traffic.start()
        await self.server.start()
        self.installation_code = await self.server.install()
        self.operator = (
            PersonOperator(self.out, self.read)
            if self.interactive
            else HookOperator(self.traffic, self.prefix, timeout=self.options.timeout)
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.traffic is not None:
            await self.traffic.stop()
        if self.server is not None:
            self.server.close()
        self._workdir.cleanup()

    def introduce(self) -> None:
        """What the person installing the device needs to know."""
        self.say("keyautomat device-test: the server's side of device protocol v1")
        self.say(f"  broker:            {self.broker or '(in-process link)'}")
        self.say(f"  topic prefix:      {self.prefix}")
        self.say(f"  product:           {self.options.product}")
        self.say(f"  Installation code: {self.installation_code}")
        if self.prefix == PRODUCTION_PREFIX:
            self.say(
                f"WARNING: {PRODUCTION_PREFIX} is the production prefix: a keyautomat gateway "
                "listening on this broker would compete for the device under test"
            )
        mode = "you act at the device when asked" if self.interactive else "test hooks"
        self.say(
            f"Bind the device under test now (mode: {mode}): point it at the broker with the "
            "topic prefix above and enter the installation code. At least two lockers must "
            f"hold keys. Waiting up to {self.options.bind_timeout:g} s for its hello."
        )

    async def run(self, steps: list[Step] | None = None) -> list[Verdict]:
        """Run ``steps`` (all by default), printing each verdict as it is reached."""
        assert self.server is not None
        assert self.traffic is not None
        assert self.operator is not None
        kit = Kit(self.server, self.traffic, self.operator, self.options)
        verdicts: list[Verdict] = []
        status: dict[str, Status] = {}
        stopped: str | None = None
        for step in steps if steps is not None else list(STEPS):
            missing = [name for name in step.needs if status.get(name) != "PASS"]
            if stopped is not None:
                verdict = Verdict(step.name, "SKIP", stopped)
            elif missing:
                verdict = Verdict(step.name, "SKIP", f"needs {', '.join(missing)} to pass first")
            else:
                if self.interactive:
                    self.say(f"---- {step.name}: {step.expected}")
                verdict = await self._run_one(kit, step)
                if verdict.status == "PASS" and step.name == "binding":
                    try:
                        await self.operator.ready(kit.hw_id)
                    except OperatorGone as exc:
                        stopped = f"nobody acts at the device: {exc}"
                        self.say(f"ERROR {stopped}")
            status[step.name] = verdict.status
            verdicts.append(verdict)
            self.say(verdict.line())
            if verdict.status == "FAIL":
                self.say(f"     expected: {step.expected}")
            if verdict.status == "FAIL" and verdict.detail.startswith("nobody acts"):
                stopped = verdict.detail
        if self.server.errors:
            self.say(
                f"note: the kit's server failed to handle {self.server.errors} device messages "
                "(see the log above): a server error, not necessarily the device's"
            )
        return verdicts

    async def _run_one(self, kit: Kit, step: Step) -> Verdict:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status: Status
        try:
            status, detail = "PASS", await step.run(kit)
        except StepSkipped as exc:
            status, detail = "SKIP", str(exc)
        except StepFailed as exc:
            status, detail = "FAIL", str(exc)
        except OperatorGone as exc:
            status, detail = "FAIL", f"nobody acts at the device: {exc}"
        except Exception as exc:
            log.exception("step %s failed in the kit", step.name)
            status, detail = "FAIL", f"the kit itself failed: {exc!r}"
        return Verdict(step.name, status, detail, loop.time() - started)


def summary(verdicts: list[Verdict]) -> str:
    counts = {status: sum(v.status == status for v in verdicts) for status in ("PASS", "FAIL")}
    skipped = len(verdicts) - counts["PASS"] - counts["FAIL"]
    result = "FAIL" if counts["FAIL"] else "PASS"
    failed = [v.step for v in verdicts if v.status == "FAIL"]
    tail = f" ({', '.join(failed)})" if failed else ""
    return (
        f"device-test {result}: {counts['PASS']} passed, {counts['FAIL']} failed{tail}, "
        f"{skipped} skipped"
    )
