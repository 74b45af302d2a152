"""The simulated automat as the console's virtual automat shows it: its display, its
unhurried autopilot person, the rig that obeys the console's actions only, and the
console's end of the hooks (docs/device-protocol.md §11). No server, no database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyautomat.adapters.device_hooks import (
    CONSOLE_ACTIONS,
    decode_answer,
    hook_done_topic,
    hook_topic,
    instruction,
    keys_problem,
)
from keyautomat.adapters.device_links import InProcessLink
from keyautomat.adapters.simulator_control import ControlFailed, SimulatorControl, Unreachable
from keyautomat.service_layer.virtual_keypad import masked
from keyautomat.simulator import SimKey, SimulatedAutomat
from keyautomat.simulator.automat import StoredPincode
from keyautomat.simulator.test_hooks import SimulatorHooks

PREFIX = "rules/v1"
SINCE = datetime.now(UTC) - timedelta(hours=1)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def a_device(*, person_seconds: float = 0.0) -> SimulatedAutomat:
    """A bound key20 with a key in locker 1 and a fetch code 482910 for it."""
    device = SimulatedAutomat(
        link=InProcessLink(),
        hw_id="SIM-VIRTUAL",
        token="t",
        locker_count=3,
        prefix=PREFIX,
        person_seconds=person_seconds,
    )
    device.automat_id = "A1"
    device.stock([SimKey("k1", "Key one")], start=1)
    device.pincodes["p"] = StoredPincode("p", "482910", 1, SINCE, None, "fetch", None)
    return device


def test_the_display_masks_typed_digits_and_clears_them_with_star() -> None:
    async def scenario() -> None:
        device = a_device()
        assert device.display() == ("Enter your code", "then press #")
        device.press("4829")
        assert device.display() == ("Code \u2022\u2022\u2022\u2022", "# to enter, * to clear")
        device.press("*")
        assert device.display() == ("Enter your code", "then press #")

    run(scenario)


def test_the_display_says_a_wrong_code_then_locks_after_too_many() -> None:
    async def scenario() -> None:
        device = a_device()
        device.max_failures = 2
        device.press("111111#")
        assert device.display() == ("Wrong code", "Try again")
        device.press("222222#")
        first, second = device.display()
        assert first == "Keypad locked"
        assert second == "Try again in 60 s"

    run(scenario)


def test_the_display_names_the_locker_a_right_code_opened() -> None:
    async def scenario() -> None:
        device = a_device(person_seconds=30)
        device.press("482910#")
        assert device.display() == ("Locker 1 open", "Take the key")
        device.message_seconds = 0
        device._say("")  # the message is over; the door is still open
        assert device.display() == ("Locker 1 open", "Close the door when done")

    run(scenario)


def test_the_display_asks_for_hash_while_a_proximity_prompt_waits() -> None:
    async def scenario() -> None:
        from keyautomat.simulator.automat import _Prompt

        device = a_device()
        device.prompt = _Prompt("482910", asyncio.get_running_loop().time() + 60)
        assert device.display() == ("Press # to confirm", "")
        device.press("#")
        assert device.prompt is None
        assert device.openings == [1]

    run(scenario)


def test_an_unbound_device_says_so_and_the_keypad_keeps_at_most_32_digits() -> None:
    device = SimulatedAutomat(link=InProcessLink(), hw_id="SIM-NEW")
    assert device.display() == ("Not installed", "")
    device.press("1" * 40)
    assert len(device._buffer) == 32


def test_the_unhurried_person_takes_the_key_and_closes_the_door_one_act_at_a_time() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        later: list[tuple[float, Callable[[], None]]] = []

        def call_later(delay: float, callback: Callable[[], None]) -> None:
            later.append((delay, callback))  # run by the test, not by the clock

        loop.call_later = call_later  # type: ignore[method-assign,assignment]
        device = a_device(person_seconds=1.5)
        device.press("482910#")
        locker = device.lockers[1]
        assert (locker.door_open, locker.key is not None) == (True, True)
        delay, take = later.pop()
        assert delay == 1.5
        take()
        assert (locker.door_open, locker.key) == (True, None)
        _, close = later.pop()
        close()
        assert locker.door_open is False
        types = [queued.type for queued in device.outbox.values()]
        assert types[-3:] == ["locker-opened", "key-removed", "locker-closed"]

    run(scenario)


def test_keys_for_a_press_are_keypad_keys_and_the_audit_masks_digits() -> None:
    assert keys_problem("482910#") is None
    assert keys_problem("*") is None
    assert keys_problem("") is not None
    assert keys_problem("12a") is not None
    assert keys_problem("1" * 65) is not None
    assert keys_problem(7) is not None
    assert masked("4829#*") == "\u2022\u2022\u2022\u2022#*"


async def _ask_rig(actions: tuple[str, ...], order: bytes) -> dict[str, Any]:
    link = InProcessLink()
    device = a_device()
    device.link = link
    rig = SimulatorHooks(device, link, actions)
    listening = asyncio.create_task(rig.run())
    try:
        await asyncio.wait_for(rig.listening.wait(), 5)
        async with link.connect("asker") as asker:
            await asker.subscribe(hook_done_topic(PREFIX, device.hw_id))
            await asker.publish(hook_topic(PREFIX, device.hw_id), order)
            async for _topic, payload in asker.messages():
                answer: dict[str, Any] = json.loads(payload)
                return answer
    finally:
        listening.cancel()
    raise AssertionError("no answer")


def test_a_console_rig_refuses_to_cut_the_network_and_does_nothing() -> None:
    answer = asyncio.run(_ask_rig(CONSOLE_ACTIONS, instruction("a", "go-offline")))
    assert answer["ok"] is False
    assert "'go-offline' is not enabled here" in answer["error"]


def test_a_rig_refuses_keys_that_are_not_on_a_keypad() -> None:
    answer = asyncio.run(_ask_rig(CONSOLE_ACTIONS, instruction("a", "press", keys="12;rm")))
    assert answer["ok"] is False
    assert "keys must be keypad keys" in answer["error"]


def test_a_rig_answers_a_press_with_what_the_automat_shows() -> None:
    answer = asyncio.run(_ask_rig(CONSOLE_ACTIONS, instruction("a", "press", keys="482910#")))
    assert answer["ok"] is True
    assert answer["opened"] == [1]
    shown = decode_answer(json.dumps(answer).encode())
    assert shown is not None
    assert shown.state is not None
    assert shown.state.display == ("Locker 1 open", "Take the key")
    assert [(lk.locker_index, lk.key_inside) for lk in shown.state.lockers] == [
        (0, False),
        (1, False),
        (2, False),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"ref": "a"}',
        json.dumps({"ref": "a", "ok": True, "state": {"display": ["x" * 65]}}).encode(),
        b'{"ref": "a", "ok": true, "pad": "' + b"x" * 300_000 + b'"}',
    ],
)
def test_an_answer_that_is_not_one_is_dropped(payload: bytes) -> None:
    assert decode_answer(payload) is None


def test_the_console_gets_the_answer_to_its_own_question_from_its_rig_only() -> None:
    async def scenario() -> None:
        link = InProcessLink()
        device = a_device()
        rig = SimulatorHooks(device, link, CONSOLE_ACTIONS)
        listening = asyncio.create_task(rig.run())
        control = SimulatorControl(link, PREFIX, timeout=2)
        try:
            await asyncio.wait_for(rig.listening.wait(), 5)
            shown = await control.state(device.hw_id)
            assert shown.display == ("Enter your code", "then press #")
            answer = await control.press(device.hw_id, "482910#")
            assert answer.opened == (1,)
            # Several pages polling at once share one fresh answer.
            assert (await control.state(device.hw_id)).display[0] == "Locker 1 open"
        finally:
            listening.cancel()
            await control.close()

    run(scenario)


def test_a_simulator_that_does_not_listen_is_reported_as_not_answering() -> None:
    async def scenario() -> None:
        control = SimulatorControl(InProcessLink(), PREFIX, timeout=0.05)
        try:
            with pytest.raises(ControlFailed) as refused:
                await control.press("REAL-DEVICE", "1")
            assert refused.value.reason is Unreachable.NO_ANSWER
        finally:
            await control.close()

    run(scenario)
