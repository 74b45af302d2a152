"""``keyautomat device-test`` against ``keyautomat simulate --test-hooks`` over the real
Mosquitto, each a process of its own (issue 19 item 4): the simulator passes every step,
and a simulator that breaks one rule fails the step that checks it, by name."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyautomat.devicetest.steps import STEPS
from keyautomat.entrypoints.cli import main
from tests.e2e.mqtt_support import BROKER
from tests.processes import KeyautomatProcess, Processes, clean_env, free_port, prints
from tests.services import MQTT_HOST, MQTT_PORT, need

pytestmark = pytest.mark.mqtt

# Short timings: the simulator answers in milliseconds, and every window the kit watches
# for something that must not happen costs its length.
FAST = (
    "--heartbeat-seconds",
    "0.5",
    "--ack-timeout",
    "3",
    "--timeout",
    "10",
    "--quiet-seconds",
    "0.3",
    "--program-seconds",
    "0.3",
)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Processes with no keyautomat settings at all: the kit brings its own server."""
    need("MQTT", MQTT_HOST, MQTT_PORT)
    with Processes(tmp_path / "processes", clean_env()) as started:
        yield started


def device_test(processes: Processes, prefix: str, *args: str) -> tuple[KeyautomatProcess, str]:
    """Start the kit; it and the installation code it prints for the device."""
    kit = processes.start(
        "device-test",
        "--broker",
        BROKER,
        "--prefix",
        prefix,
        *FAST,
        *args,
        ready=prints("Installation code: "),
    )
    found = re.search(r"Installation code: (\d+)", kit.stdout())
    assert found, kit.output()
    return kit, found.group(1)


def simulate(processes: Processes, prefix: str, code: str, *args: str) -> KeyautomatProcess:
    return processes.simulate(
        "--broker",
        BROKER,
        "--prefix",
        prefix,
        "--installation-pincode",
        code,
        "--hw-id",
        f"SIM-{uuid.uuid4().hex[:8]}",
        "--lockers",
        "6",
        "--keys",
        "3",
        "--resend-seconds",
        "0.5",
        "--test-hooks",
        *args,
    )


def verdicts(output: str) -> dict[str, str]:
    """step name -> PASS, FAIL or SKIP, from the kit's verdict lines."""
    return {
        name: status for status, name in re.findall(r"^(PASS|FAIL|SKIP) ([a-z-]+): ", output, re.M)
    }


def a_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}/device-test/v1"


def test_the_simulator_with_test_hooks_passes_every_step_of_the_conformance_kit(
    processes: Processes,
) -> None:
    prefix = a_prefix()
    kit, code = device_test(processes, prefix)
    simulate(processes, prefix, code)
    status = kit.wait(120)
    output = kit.stdout()
    seen = verdicts(output)
    assert list(seen) == [step.name for step in STEPS], output
    assert seen == {step.name: "PASS" for step in STEPS}, output
    assert status == 0, output
    assert "device-test PASS: 17 passed, 0 failed" in output


def test_a_simulator_that_opens_a_program_first_locker_at_once_fails_the_program_first_step(
    processes: Processes,
) -> None:
    prefix = a_prefix()
    kit, code = device_test(processes, prefix, "--steps", "program-first")
    simulate(processes, prefix, code, "--break", "open-program-first-at-once")
    status = kit.wait(120)
    output = kit.stdout()
    assert status == 1, output
    assert verdicts(output) == {
        "binding": "PASS",
        "locker-inventory": "PASS",
        "program-first": "FAIL",
    }, output
    assert re.search(r"^FAIL program-first: locker \d+ opened", output, re.M), output
    assert "device-test FAIL: 2 passed, 1 failed (program-first)" in output


def test_a_simulator_that_sends_its_queue_without_waiting_for_acks_fails_the_refusal_step(
    processes: Processes,
) -> None:
    prefix = a_prefix()
    kit, code = device_test(processes, prefix, "--steps", "drops-refused-message")
    simulate(processes, prefix, code, "--break", "send-queue-at-once")
    status = kit.wait(120)
    output = kit.stdout()
    assert status == 1, output
    assert verdicts(output)["drops-refused-message"] == "FAIL", output
    assert re.search(
        r"^FAIL drops-refused-message: the device sent locker-opened while its code-entered "
        "was not yet acknowledged",
        output,
        re.M,
    ), output


def test_the_kit_says_so_when_the_device_answers_no_test_hooks(processes: Processes) -> None:
    prefix = a_prefix()
    kit, code = device_test(processes, prefix, "--steps", "locker-inventory", "--timeout", "2")
    processes.simulate(
        "--broker", BROKER, "--prefix", prefix, "--installation-pincode", code, "--hw-id", "SIM-X"
    )
    status = kit.wait(60)
    output = kit.stdout()
    assert status == 2, output
    assert (
        "run keyautomat simulate with --test-hooks, or test real hardware with --interactive"
        in (output)
    )
    assert verdicts(output) == {"binding": "PASS", "locker-inventory": "SKIP"}, output


def test_the_kit_without_a_broker_to_reach_says_so_and_runs_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["device-test", "--broker", f"mqtt://127.0.0.1:{free_port()}"]) == 2
    assert "device-test could not start: " in capsys.readouterr().err
