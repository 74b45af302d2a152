"""The conformance kit's server answers the device under test and no other device on its
prefix: it knows no other, and refusing one (a token it never issued) would make a real
device wipe its codes."""

from __future__ import annotations

import asyncio

from keyautomat.devicetest.kit import Options
from keyautomat.devicetest.runner import DeviceTest, Verdict, select_steps
from keyautomat.devicetest.server import Timings
from keyautomat.simulator import SimulatedAutomat

PREFIX = "keyautomat-device-test/v1"


async def run_among_other_devices() -> tuple[list[Verdict], set[str], str | None]:
    """The kit's binding and heartbeat steps, with a bound device of someone else's and a
    device guessing installation codes on the same prefix; the devices the server
    answered, and the foreign device's token afterwards."""
    async with DeviceTest(
        broker=None,
        prefix=PREFIX,
        options=Options(timeout=5.0),
        timings=Timings(heartbeat_seconds=0.3, ack_timeout_seconds=2.0, proximity_seconds=5.0),
        interactive=True,  # nothing to do at the device in these steps
        out=NullTerminal(),
    ) as run:
        assert run.server is not None
        assert run.traffic is not None
        link = run.server.link

        def device(
            hw_id: str, token: str | None = None, code: str | None = None
        ) -> SimulatedAutomat:
            return SimulatedAutomat(
                link=link,
                hw_id=hw_id,
                token=token,
                installation_pincode=code,
                prefix=PREFIX,
                locker_count=4,
                tick_seconds=0.02,
            )

        foreign = device("SIM-ELSEWHERE", token="issued-by-production")
        guessing = device("SIM-GUESSING", code="000000")
        tested = device("SIM-UNDER-TEST", code=run.installation_code)
        devices = [foreign, guessing, tested]
        tasks = [asyncio.create_task(sim.run()) for sim in devices]
        try:
            verdicts = await run.run(select_steps(["heartbeat"]))
        finally:
            for sim in devices:
                await sim.stop()
            for task in tasks:
                task.cancel()
        answered = {seen.hw_id for seen in run.traffic.seen if seen.direction == "down"}
        return verdicts, answered, foreign.token


class NullTerminal:
    def write(self, text: str, /) -> int:
        return len(text)

    def flush(self) -> None:
        return None


def test_the_kits_server_answers_only_the_device_that_presents_its_installation_code() -> None:
    verdicts, answered, foreign_token = asyncio.run(run_among_other_devices())
    assert [(v.step, v.status) for v in verdicts] == [("binding", "PASS"), ("heartbeat", "PASS")]
    assert answered == {"SIM-UNDER-TEST"}
    assert foreign_token == "issued-by-production"
