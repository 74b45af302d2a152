"""The device protocol's encode/decode and the link's topic matching, without I/O."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyautomat.adapters.device_links import topic_matches
from keyautomat.adapters.device_protocol import (
    CodeEntered,
    ProtocolError,
    Sync,
    decode_from_device,
    decode_from_server,
    encode,
    hw_id_of_up_topic,
)

NOW = datetime(2030, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)


def test_an_event_survives_encoding_with_its_id_time_and_fields() -> None:
    payload = encode(
        "code-entered",
        CodeEntered(code="482910", code_type="right-pincode", locker_index=1),
        hw_id="SIM-1",
        occurred_at=NOW,
        token="t",
        message_id="abc",
    )
    message = decode_from_device(payload)
    assert message.id == "abc"
    assert message.occurred_at == NOW
    assert message.envelope.token == "t"
    assert isinstance(message.data, CodeEntered)
    assert message.data.locker_index == 1


def test_server_messages_are_not_accepted_from_devices() -> None:
    payload = encode("sync", Sync(full=True, version=1, pincodes=[]), hw_id="X", occurred_at=NOW)
    assert isinstance(decode_from_server(payload).data, Sync)
    with pytest.raises(ProtocolError):
        decode_from_device(payload)


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_message_or_a_protocol_error(payload: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_from_device(payload)


@given(st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(max_size=10)))
def test_any_json_object_decodes_to_a_message_or_a_protocol_error(raw: dict[str, object]) -> None:

    with contextlib.suppress(ProtocolError):
        decode_from_device(json.dumps(raw).encode())


def test_topic_filters_match_like_mqtt() -> None:
    assert topic_matches("p/devices/+/up", "p/devices/A/up")
    assert not topic_matches("p/devices/+/up", "p/devices/A/B/up")
    assert not topic_matches("p/devices/+/up", "p/devices/A/down")
    assert topic_matches("p/#", "p/devices/A/up")
    assert not topic_matches("p/devices/+", "p/devices")


def test_the_hardware_id_is_read_from_the_up_topic_only_when_valid() -> None:
    assert hw_id_of_up_topic("p", "p/devices/SIM-1/up") == "SIM-1"
    assert hw_id_of_up_topic("p", "p/devices/a b/up") is None
    assert hw_id_of_up_topic("p", "q/devices/SIM-1/up") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("firmware", "f\u0000"),
        ("installationPincode", "12345\u0000"),
        ("firmware", "\ud800"),
    ],
)
def test_a_device_message_with_text_no_database_can_store_is_refused_naming_the_field(
    field: str, value: str
) -> None:
    data: dict[str, object] = {"product": "key20", "lockerCount": 2, field: value}
    raw = {
        "v": 1,
        "id": "abc",
        "type": "hello",
        "occurredAt": "2030-01-01T00:00:00Z",
        "hwId": "SIM-1",
        "data": data,
    }
    with pytest.raises(ProtocolError, match=f"data\\.{field}: must not contain"):
        decode_from_device(json.dumps(raw).encode())


def test_a_property_name_with_nul_in_a_device_message_is_refused() -> None:
    raw = {
        "v": 1,
        "id": "abc",
        "type": "heartbeat",
        "occurredAt": "2030-01-01T00:00:00Z",
        "hwId": "SIM-1",
        "data": {"x\u0000": 1},
    }
    with pytest.raises(ProtocolError, match="data: a property name must not contain"):
        decode_from_device(json.dumps(raw).encode())
