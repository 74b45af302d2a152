"""The simulator's hooks on the broker: a test rig's hands and eyes at a simulated automat.

NOT part of the device protocol (docs/device-protocol.md §11): only simulated automats
listen here, and only when told to (``keyautomat simulate --test-hooks`` or
``--console-control``, and the demo automats of ``serve --demo``). Two users:

- the conformance kit (``keyautomat device-test``, docs/device-test.md), which types,
  cuts the network and enters installation codes;
- the console's virtual automat (docs/console.md), which presses keys and reads the
  display and the lockers (``press``, ``state``).

An instruction is published on ``P/devices/H/test``; the rig answers on
``P/devices/H/test/done``:

    instruction: {"id": "...", "action": "press", "keys": "482910#"}
    answer:      {"ref": "...", "ok": true, "opened": [0], "error": null, "state": {...}}

This module is the wire: topics, the instruction's bytes, the keypad's keys, and the
answer as a reader may trust it (bounded, typed). The rig is simulator/test_hooks.py;
the console's end is adapters/simulator_control.py.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Every action a rig knows, and the ones the console may use: a simulated automat run for
# the console (``--console-control``, the demo automats) obeys those alone, so that the
# console can never cut a device's network or bind it elsewhere.
TEST_ACTIONS = ("ping", "press", "state", "go-offline", "go-online", "enter-installation-code")
CONSOLE_ACTIONS = ("ping", "press", "state")

KEYPAD_KEYS = "0123456789*#"
MAX_KEYS = 64  # keys in one press instruction
MAX_ANSWER = 256 * 1024  # an answer's bytes (a thousand lockers fit many times over)
MAX_LINE = 64  # characters of one display line


def hook_topic(prefix: str, hw_id: str) -> str:
    """Where instructions for the rig at device ``hw_id`` are published."""
    return f"{prefix}/devices/{hw_id}/test"


def hook_done_topic(prefix: str, hw_id: str) -> str:
    """Where the rig answers each instruction."""
    return f"{prefix}/devices/{hw_id}/test/done"


def hook_done_pattern(prefix: str) -> str:
    return f"{prefix}/devices/+/test/done"


def instruction(instruction_id: str, action: str, **fields: Any) -> bytes:
    """The bytes of one instruction."""
    return json.dumps({"id": instruction_id, "action": action, **fields}).encode()


def keys_problem(keys: object) -> str | None:
    """Why ``keys`` cannot be pressed (None when they can): 1 to 64 of ``0-9``, ``*``, ``#``."""
    if not isinstance(keys, str) or not keys:
        return "must be keypad keys (0-9, * and #)"
    if len(keys) > MAX_KEYS:
        return f"must be at most {MAX_KEYS} keys"
    if any(key not in KEYPAD_KEYS for key in keys):
        return "must be keypad keys (0-9, * and #)"
    return None


Line = Annotated[str, Field(max_length=MAX_LINE)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class LockerShown(_Strict):
    """One locker as someone in front of the automat sees it."""

    locker_index: int = Field(alias="lockerIndex", ge=0, lt=1000)
    door_open: bool = Field(alias="doorOpen")
    key_inside: bool = Field(alias="keyInside")
    key_name: str | None = Field(default=None, alias="keyName", max_length=MAX_LINE)


class AutomatShown(_Strict):
    """What the simulated automat shows: its display (two lines) and its lockers."""

    display: tuple[Line, ...] = Field(max_length=4)
    online: bool
    welcomed: bool
    lockers: tuple[LockerShown, ...] = Field(max_length=1000)


class HookAnswer(_Strict):
    ref: str = Field(max_length=64)
    ok: bool
    opened: tuple[int, ...] = Field(default=(), max_length=1000)
    error: str | None = Field(default=None, max_length=1000)
    state: AutomatShown | None = None


def decode_answer(payload: bytes) -> HookAnswer | None:
    """The answer in ``payload``, or None when it is not one (too big, not JSON, wrong shape):
    anyone with access to the broker could publish on an answer topic."""
    if len(payload) > MAX_ANSWER:
        return None
    try:
        return HookAnswer.model_validate(json.loads(payload))
    except (ValueError, ValidationError):
        return None
