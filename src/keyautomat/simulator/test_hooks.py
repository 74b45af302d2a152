"""The rig at a simulated automat: obeys instructions on the simulator's hooks topic.

The conformance kit (``keyautomat device-test``, docs/device-test.md) must type at
the keypad, cut the network and enter installation codes; the console's virtual
automat (docs/console.md) presses keys and reads the display and the lockers. At real
hardware a person does that; ``keyautomat simulate --test-hooks`` (every action) or
``--console-control`` (``ping``, ``press`` and ``state`` only) lets them do it over
the broker instead. The wire (topics, instruction, answer) is adapters/device_hooks.py,
and docs/device-protocol.md §11 describes it: beside the device protocol, never part
of it.

The rig has its own broker connection, as a robot finger at the keypad would be
independent of the device's network: it still types while the device is offline.
Nothing subscribes to the hooks unless the simulator is told to; with the broker ACLs
of docs/device-protocol.md a production device could not read them anyway.

Instruction: ``{"id": "...", "action": "...", ...}``; answer: ``{"ref": id, "ok": bool,
"opened": [locker indices opened while the instruction ran], "error": text or null,
"state": what the automat shows (``press`` and ``state``)}``.

=========================== =====================================================
action                      what the rig does
=========================== =====================================================
``ping``                    nothing: answers, so the kit knows the hooks listen
``press`` ``keys``          presses the keys (digits, ``*``, ``#``) at the keypad;
                            the autopilot person takes or puts back keys as usual
``state``                   nothing: answers with the display and the lockers
``go-offline``              cuts the device's network; answers once it is cut
``go-online``               gives the network back (the device reconnects itself)
``enter-installation-code`` the installer types ``code`` at the device
  ``code``
=========================== =====================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from keyautomat.adapters.device_hooks import (
    CONSOLE_ACTIONS,
    TEST_ACTIONS,
    hook_done_pattern,
    hook_done_topic,
    hook_topic,
    instruction,
    keys_problem,
)
from keyautomat.adapters.device_links import Connection, Link, LinkError
from keyautomat.simulator.automat import SimulatedAutomat

log = logging.getLogger(__name__)

__all__ = [
    "CONSOLE_ACTIONS",
    "TEST_ACTIONS",
    "SimulatorHooks",
    "hook_done_pattern",
    "hook_done_topic",
    "hook_topic",
    "instruction",
    "shown",
]


def shown(sim: SimulatedAutomat) -> dict[str, Any]:
    """What someone in front of the automat sees: the display and every locker."""
    return {
        "display": list(sim.display()),
        "online": sim.online,
        "welcomed": sim.welcomed.is_set(),
        "lockers": [
            {
                "lockerIndex": locker.index,
                "doorOpen": locker.door_open,
                "keyInside": locker.key is not None,
                "keyName": locker.key.name[:64] if locker.key else None,
            }
            for locker in sim.lockers
        ],
    }


class SimulatorHooks:
    """Obeys instructions for one simulated automat, on a connection of its own.

    ``actions`` are the ones it obeys: every one for the kit (``TEST_ACTIONS``), or the
    console's (``CONSOLE_ACTIONS``); any other is answered with an error and not done.
    """

    def __init__(
        self, sim: SimulatedAutomat, link: Link, actions: tuple[str, ...] = TEST_ACTIONS
    ) -> None:
        self.sim = sim
        self.link = link
        self.actions = actions
        self.topic = hook_topic(sim.prefix, sim.hw_id)
        self.done_topic = hook_done_topic(sim.prefix, sim.hw_id)
        self.listening = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled; reconnect when the broker connection drops."""
        while True:
            try:
                async with self.link.connect(f"{self.sim.client_id}-test-hooks") as connection:
                    await connection.subscribe(self.topic)
                    self.listening.set()
                    async for _topic, payload in connection.messages():
                        await self._obey(connection, payload)
            except LinkError as exc:
                log.info("test hooks of %s lost the broker: %s", self.sim.hw_id, exc)
            finally:
                self.listening.clear()
            await asyncio.sleep(0.5)

    async def _obey(self, connection: Connection, payload: bytes) -> None:
        try:
            order = json.loads(payload)
            ref = str(order["id"])
            action = str(order["action"])
        except (ValueError, KeyError, TypeError):
            log.warning("test hooks of %s ignored %r", self.sim.hw_id, payload[:200])
            return
        openings = len(self.sim.openings)
        error: str | None = None
        try:
            await self._do(action, order)
        except Exception as exc:  # the answer says what went wrong; the rig carries on
            error = f"{type(exc).__name__}: {exc}"
        answer: dict[str, Any] = {
            "ref": ref,
            "ok": error is None,
            "opened": self.sim.openings[openings:],
            "error": error,
        }
        if action in ("press", "state"):
            answer["state"] = shown(self.sim)
        with contextlib.suppress(LinkError):
            await connection.publish(self.done_topic, json.dumps(answer).encode())

    async def _do(self, action: str, order: dict[str, Any]) -> None:
        if action not in self.actions:
            known = ", ".join(self.actions)
            if action in TEST_ACTIONS:
                raise ValueError(f"action {action!r} is not enabled here; the rig obeys {known}")
            raise ValueError(f"unknown action {action!r}; the rig knows {known}")
        if action in ("ping", "state"):
            return
        if action == "press":
            keys = order.get("keys")
            problem = keys_problem(keys)
            if problem is not None:
                raise ValueError(f"keys {problem}")
            self.sim.press(str(keys))
        elif action == "go-offline":
            await self.sim.go_offline()
        elif action == "go-online":
            self.sim.go_online()
        elif action == "enter-installation-code":
            # The device binds with a new code on its next connection: make one.
            self.sim.installation_pincode = str(order["code"])
            await self.sim.go_offline()
            self.sim.go_online()
        else:  # pragma: no cover - every action of TEST_ACTIONS is handled above
            raise ValueError(f"unknown action {action!r}")
