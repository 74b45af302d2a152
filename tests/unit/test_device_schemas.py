"""The JSON Schema files of the device protocol: committed as the models make them, and
accepting exactly the messages the decoders accept (checked with an independent
validator, jsonschema-rs, formats included)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyautomat.adapters.device_protocol import (
    DEVICE_MESSAGES,
    SERVER_MESSAGES,
    Ack,
    AlarmEvent,
    CancelPrompt,
    CodeEntered,
    Data,
    Empty,
    Hello,
    KeyEvent,
    KeypadLocked,
    KeyProgrammed,
    LockerEvent,
    LockerInventory,
    LockerState,
    Message,
    OpenLocker,
    PincodeEntry,
    ProgramKey,
    PromptEnded,
    ProtocolError,
    ProximityPrompt,
    Rejected,
    RejectReason,
    RemoteCode,
    Sync,
    Welcome,
    decode_from_device,
    decode_from_server,
    encode,
)
from keyautomat.adapters.device_schemas import schema_files, stale_files

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol" / "v1"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

DEVICE_SAMPLES: dict[str, Data] = {
    "hello": Hello(
        installation_pincode="123456",
        product="key20",
        locker_count=4,
        firmware="fw-1",
        sync_version=3,
    ),
    "heartbeat": Empty(),
    "goodbye": Empty(),
    "ack": Ack(ref="r-1", ok=False, reason="busy"),
    "locker-inventory": LockerInventory(
        lockers=[
            LockerState(
                locker_index=0, door_open=True, key_inside=True, key_id="k", key_name="n", rfid="r"
            ),
            LockerState(locker_index=1, key_inside=False),
        ]
    ),
    "code-entered": CodeEntered(
        code="1234",
        code_type="right-pincode",
        locker_index=1,
        key_id="k",
        pincode_id="p-1",
        source="remote",
    ),
    "locker-opened": LockerEvent(locker_index=1),
    "locker-closed": LockerEvent(locker_index=1),
    "key-removed": KeyEvent(locker_index=1, key_id="k", key_name="n", rfid="r"),
    "key-inserted": KeyEvent(locker_index=1, key_id="k", key_name="n", rfid="r"),
    "alarm-raised": AlarmEvent(alarm_type="DEVICE_ERROR"),
    "alarm-cleared": AlarmEvent(alarm_type="DEVICE_MOVED"),
    "prompt-ended": PromptEnded(code="1234", outcome="expired"),
    "keypad-locked": KeypadLocked(failures=5, until=NOW),
    "key-programmed": KeyProgrammed(ref="r-1", locker_index=0, key_id="k", ok=False, reason="x"),
}
SERVER_SAMPLES: dict[str, Data] = {
    "welcome": Welcome(automat_id="a-1", device_token="t", heartbeat_seconds=30.0, server_time=NOW),
    "rejected": Rejected(
        reason=RejectReason.MALFORMED, ref="m-1", pointer="/data/lockerIndex", detail="d"
    ),
    "ack": Ack(ref="m-1"),
    "sync": Sync(
        full=False,
        version=7,
        pincodes=[
            PincodeEntry(
                id="p-1",
                code="1234",
                locker_index=0,
                valid_from=NOW,
                valid_until=NOW,
                purpose="fetch",
                key_id="k",
                program_first=True,
            )
        ],
        removed=["p-0"],
    ),
    "remote-code": RemoteCode(code="1234"),
    "proximity-prompt": ProximityPrompt(code="1234", timeout_seconds=60.0),
    "cancel-prompt": CancelPrompt(code="1234"),
    "open-locker": OpenLocker(locker_index=0, reason="pincode", pincode_id="p-1"),
    "program-key": ProgramKey(
        locker_index=0, key_id="k", access_right_ids=["r"], valid_from=NOW, valid_until=NOW
    ),
}


def _validator(name: str) -> Any:
    schema = json.loads((PROTOCOL / name).read_text(encoding="utf-8"))
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def _sample(type_: str, data: Data) -> dict[str, Any]:
    payload = encode(type_, data, hw_id="SIM-1", occurred_at=NOW, token="t", message_id="m-1")
    raw: dict[str, Any] = json.loads(payload)
    return raw


def _decodes(decode: Callable[[bytes], Message], raw: Any) -> bool:
    try:
        decode(json.dumps(raw).encode())
    except ProtocolError:
        return False
    return True


def test_the_committed_schema_files_are_what_the_models_generate() -> None:
    # After changing a message model: uv run python -m keyautomat.adapters.device_schemas
    assert stale_files(PROTOCOL) == []


def test_every_message_of_each_direction_has_a_schema_file_besides_its_envelope() -> None:
    expected = {"device.schema.json", "server.schema.json"}
    for direction, types in (("device", DEVICE_MESSAGES), ("server", SERVER_MESSAGES)):
        expected |= {f"{direction}/{t}.schema.json" for t in [*types, "envelope"]}
    assert set(schema_files()) == expected
    assert set(DEVICE_SAMPLES) == set(DEVICE_MESSAGES)
    assert set(SERVER_SAMPLES) == set(SERVER_MESSAGES)


@pytest.mark.parametrize(
    ("direction", "samples", "decode"),
    [
        ("device", DEVICE_SAMPLES, decode_from_device),
        ("server", SERVER_SAMPLES, decode_from_server),
    ],
)
def test_every_sample_message_passes_its_schema_and_an_optional_field_may_be_null(
    direction: str, samples: dict[str, Data], decode: Callable[[bytes], Message]
) -> None:
    for type_, data in samples.items():
        raw = _sample(type_, data)
        schema = json.loads((PROTOCOL / direction / f"{type_}.schema.json").read_text())
        data_schema = schema["properties"]["data"]
        ref = data_schema.get("$ref") or data_schema["anyOf"][0]["$ref"]
        body = schema["$defs"][ref.rsplit("/", 1)[-1]]
        validator = jsonschema_rs.validator_for(schema, validate_formats=True)
        assert validator.is_valid(raw), type_
        optional = [name for name in body["properties"] if name not in body.get("required", [])]
        for name in [*optional, "token"]:
            nulled = copy.deepcopy(raw)
            target = nulled if name == "token" else nulled["data"]
            target[name] = None
            assert validator.is_valid(nulled), (type_, name)
            assert _decodes(decode, nulled), (type_, name)


# Values a mutation puts somewhere: the edges of each rule, and values of the wrong type.
_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    2.5,
    999,
    1000,
    1001,
    2**53 - 1,
    "",
    "x",
    "1234",
    "a" * 33,
    "a" * 65,
    "a" * 300,
    "a b",
    "key20",
    "right-pincode",
    "fetch",
    "DEVICE_ERROR",
    "confirmed",
    "remote",
    "malformed",
    "hello",
    "heartbeat",
    "locker-opened",
    "sync",
    "welcome",
    "2030-01-01T00:00:00Z",
    "2030-01-01T00:00:00.5+02:00",
    "2030-01-01 00:00:00Z",
    "2030-01-01T00:00:00",
    "2030-02-30T00:00:00Z",
    "1999-12-31T23:59:59Z",
    [],
    {},
    [1],
    ["p-1"],
    {"lockerIndex": 0, "keyInside": True},
    [{"lockerIndex": 0, "keyInside": True}],
    {"id": "p", "code": "1", "lockerIndex": 0, "validFrom": "2030-01-01T00:00:00Z"},
]
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=70)
_ANY_VALUE = st.one_of(
    st.sampled_from(_VALUES), _TEXT, st.integers(-(2**53) + 1, 2**53 - 1), st.floats(-1e6, 1e6)
)


def _places(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a decoded JSON document."""
    places: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        for key, child in node.items():
            places.append((node, key))
            places.extend(_places(child))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            places.append((node, index))
            places.extend(_places(child))
    return places


def _mutate(raw: dict[str, Any], data: st.DataObject) -> None:
    places = _places(raw)
    container, key = data.draw(st.sampled_from(places)) if places else (raw, "id")
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    # Copies: the sample values are shared, and later mutations change what they hold.
    if action == "replace":
        container[key] = copy.deepcopy(data.draw(_ANY_VALUE))
    elif action == "delete":
        del container[key]
    elif isinstance(container, dict):
        name = data.draw(st.sampled_from(["extra", "locker_index", "lockerIndex", "keyId", "v"]))
        container[name] = copy.deepcopy(data.draw(_ANY_VALUE))


_CASES = {
    "device": (DEVICE_SAMPLES, decode_from_device, DEVICE_MESSAGES),
    "server": (SERVER_SAMPLES, decode_from_server, SERVER_MESSAGES),
}
_VALIDATORS = {
    direction: (
        _validator(f"{direction}.schema.json"),
        _validator(f"{direction}/envelope.schema.json"),
        {t: _validator(f"{direction}/{t}.schema.json") for t in types},
    )
    for direction, (_samples, _decode, types) in _CASES.items()
}


@pytest.mark.parametrize("direction", ["device", "server"])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_message_is_decoded_exactly_when_its_schemas_accept_it(
    direction: str, data: st.DataObject
) -> None:
    samples, decode, _types = _CASES[direction]
    any_message, envelope, of_type = _VALIDATORS[direction]
    type_ = data.draw(st.sampled_from(sorted(samples)))
    raw = _sample(type_, samples[type_])
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(raw, data)
    decoded = _decodes(decode, raw)
    assert any_message.is_valid(raw) == decoded, raw
    if decoded:
        assert envelope.is_valid(raw), raw
    kind = raw.get("type") if isinstance(raw, dict) else None
    if isinstance(kind, str) and kind in of_type:
        assert of_type[kind].is_valid(raw) == decoded, raw
