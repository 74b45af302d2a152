"""Test hooks: the hands and eyes of a test rig at a simulated automat. TEST-ONLY.

The conformance kit (``keyautomat device-test``, docs/device-test.md) must type at
the keypad, cut the network and enter installation codes. At real hardware a person
does that (``device-test --interactive``); ``keyautomat simulate --test-hooks`` lets
the kit do it over the broker instead, so that CI can run the kit against the
simulator unattended.

The hooks live on topics of their own, beside the device protocol and never part
of it: the kit publishes an instruction on ``P/devices/H/test``, the rig obeys and
answers on ``P/devices/H/test/done``. The rig has its own broker connection, as a
robot finger at the keypad would be independent of the device's network: it still
types while the device is offline. No keyautomat server publishes on these topics,
and nothing subscribes to them unless ``--test-hooks`` is given; with the broker ACLs
of docs/device-protocol.md a production device could not read them anyway.

Instruction: ``{"id": "...", "action": "...", ...}``; answer: ``{"ref": id, "ok": bool,
"opened": [locker indices opened while the instruction ran], "error": text or null}``.

=========================== =====================================================
action                      what the rig does
=========================== =====================================================
``ping``                    nothing: answers, so the kit knows the hooks listen
``press`` ``keys``          presses the keys (digits, ``*``, ``#``) at the keypad;
                            the autopilot person takes or puts back keys as usual
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

from keyautomat.adapters.device_links import Connection, Link, LinkError
from keyautomat.simulator.automat import SimulatedAutomat

log = logging.getLogger(__name__)

ACTIONS = ("ping", "press", "go-offline", "go-online", "enter-installation-code")


def hook_topic(prefix: str, hw_id: str) -> str:
    """Where the kit publishes instructions for the rig at device ``hw_id``."""
    return f"{prefix}/devices/{hw_id}/test"


def hook_done_topic(prefix: str, hw_id: str) -> str:
    """Where the rig answers each instruction."""
    return f"{prefix}/devices/{hw_id}/test/done"


def hook_done_pattern(prefix: str) -> str:
    return f"{prefix}/devices/+/test/done"


def instruction(instruction_id: str, action: str, **fields: Any) -> bytes:
    """The bytes of one instruction (what the kit publishes)."""
    return json.dumps({"id": instruction_id, "action": action, **fields}).encode()


class SimulatorHooks:
    """Obeys the kit's instructions for one simulated automat, on a connection of its own."""

    def __init__(self, sim: SimulatedAutomat, link: Link) -> None:
        self.sim = sim
        self.link = link
        self.topic = hook_topic(sim.prefix, sim.hw_id)
        self.done_topic = hook_done_topic(sim.prefix, sim.hw_id)
        self.listening = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled; reconnect when the broker connection drops."""
        while True:
            try:
                async with self.link.connect(f"sim-{self.sim.hw_id}-test-hooks") as connection:
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
        answer = {
            "ref": ref,
            "ok": error is None,
            "opened": self.sim.openings[openings:],
            "error": error,
        }
        with contextlib.suppress(LinkError):
            await connection.publish(self.done_topic, json.dumps(answer).encode())

    async def _do(self, action: str, order: dict[str, Any]) -> None:
        if action == "ping":
            return
        if action == "press":
            self.sim.press(str(order["keys"]))
        elif action == "go-offline":
            await self.sim.go_offline()
        elif action == "go-online":
            self.sim.go_online()
        elif action == "enter-installation-code":
            # The device binds with a new code on its next connection: make one.
            self.sim.installation_pincode = str(order["code"])
            await self.sim.go_offline()
            self.sim.go_online()
        else:
            raise ValueError(f"unknown action {action!r}; the rig knows {', '.join(ACTIONS)}")
