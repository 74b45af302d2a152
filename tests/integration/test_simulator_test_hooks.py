"""What the simulator offers tests of the conformance kit only: the test rig of
``keyautomat simulate --test-hooks`` (simulator/test_hooks.py), which obeys instructions
on its own topic and says what it saw, and protocol rules broken on purpose (``--break``)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from keyautomat.adapters.device_links import InProcessLink
from keyautomat.simulator import SimulatedAutomat, blank_iloq_keys
from keyautomat.simulator.automat import StoredPincode
from keyautomat.simulator.test_hooks import (
    SimulatorHooks,
    hook_done_topic,
    hook_topic,
    instruction,
)

PREFIX = "rig/v1"


async def instruct(orders: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Give a rig at a simulated automat (one fetch code, 482910, for locker 0, which
    holds a key) these (id, action, fields) and collect its answers."""
    link = InProcessLink()
    sim = SimulatedAutomat(link=link, hw_id="SIM-RIG", locker_count=4, prefix=PREFIX)
    sim.stock(blank_iloq_keys(1))
    since = datetime(2020, 1, 1, tzinfo=UTC)
    sim.pincodes["p1"] = StoredPincode("p1", "482910", 0, since, None, "fetch", None)
    rig = SimulatorHooks(sim, link)
    listening = asyncio.create_task(rig.run())
    try:
        await asyncio.wait_for(rig.listening.wait(), 5)
        async with link.connect("the-kit") as kit:
            await kit.subscribe(hook_done_topic(PREFIX, "SIM-RIG"))
            for order_id, action, fields in orders:
                await kit.publish(
                    hook_topic(PREFIX, "SIM-RIG"), instruction(order_id, action, **fields)
                )
            answers = []
            async for _topic, payload in kit.messages():
                answers.append(json.loads(payload))
                if len(answers) == len(orders):
                    return answers
    finally:
        listening.cancel()
    pytest.fail("the rig stopped answering")


def test_the_rig_presses_keys_and_says_which_lockers_opened() -> None:
    answers = asyncio.run(
        instruct(
            [
                ("a", "ping", {}),
                ("b", "press", {"keys": "000000#"}),
                ("c", "press", {"keys": "482910#"}),
            ]
        )
    )
    assert [(a["ref"], a["ok"], a["opened"]) for a in answers] == [
        ("a", True, []),
        ("b", True, []),
        ("c", True, [0]),
    ]


def test_the_rig_answers_an_action_it_does_not_know_with_the_reason() -> None:
    (answer,) = asyncio.run(instruct([("a", "open-every-door", {})]))
    assert answer["ok"] is False
    assert "unknown action 'open-every-door'" in answer["error"]


def test_a_simulator_refuses_to_break_a_rule_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="unknown faults: open-every-door"):
        SimulatedAutomat(link=InProcessLink(), hw_id="SIM-1", faults=frozenset({"open-every-door"}))


async def broker_ids(client_id: str | None = None) -> list[str]:
    """The client ids a simulator of SIM-RIG and its rig are connected under."""
    link = InProcessLink()
    sim = SimulatedAutomat(
        link=link, hw_id="SIM-RIG", locker_count=4, prefix=PREFIX, client_id=client_id
    )
    rig = SimulatorHooks(sim, link)
    running = [asyncio.create_task(sim.run()), asyncio.create_task(rig.run())]
    try:
        await asyncio.wait_for(rig.listening.wait(), 5)
        for _ in range(500):
            if sim.online:
                break
            await asyncio.sleep(0.01)
        candidates = ("sim-SIM-RIG", "sim-SIM-RIG-test-hooks", "run-7", "run-7-test-hooks")
        return [candidate for candidate in candidates if link.connected(candidate)]
    finally:
        await sim.stop()
        for task in running:
            task.cancel()


def test_a_simulator_and_its_rig_connect_as_sim_and_its_hw_id_by_default() -> None:
    assert asyncio.run(broker_ids()) == ["sim-SIM-RIG", "sim-SIM-RIG-test-hooks"]


def test_a_simulator_given_a_client_id_connects_with_it_and_so_does_its_rig() -> None:
    # Simulators of one hwId under two topic prefixes (two test workers, two deployments)
    # on one broker would otherwise take each other's connection.
    assert asyncio.run(broker_ids("run-7")) == ["run-7", "run-7-test-hooks"]
