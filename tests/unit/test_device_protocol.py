"""The device protocol's encode/decode, what a malformed message is refused with, and the
link's topic matching, without I/O."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyautomat.adapters.device_links import topic_matches
from keyautomat.adapters.device_protocol import (
    MAX_DETAIL,
    MAX_POINTER,
    Ack,
    CodeEntered,
    Empty,
    LockerEvent,
    PincodeEntry,
    ProtocolError,
    Rejected,
    RejectReason,
    Sync,
    Welcome,
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
    assert message.token == "t"
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
    with pytest.raises(ProtocolError, match="must not contain") as refused:
        decode_from_device(json.dumps(raw).encode())
    assert (refused.value.ref, refused.value.pointer) == ("abc", f"/data/{field}")


def test_a_property_name_with_nul_in_a_device_message_is_refused() -> None:
    raw = {
        "v": 1,
        "id": "abc",
        "type": "heartbeat",
        "occurredAt": "2030-01-01T00:00:00Z",
        "hwId": "SIM-1",
        "data": {"x\u0000": 1},
    }
    with pytest.raises(ProtocolError, match="a property name must not contain") as refused:
        decode_from_device(json.dumps(raw).encode())
    assert refused.value.pointer == "/data"


def _raw(type_: str, data: object, **envelope: object) -> dict[str, object]:
    message: dict[str, object] = {
        "v": 1,
        "id": "m-1",
        "type": type_,
        "occurredAt": "2030-01-01T12:00:00.000Z",
        "hwId": "SIM-1",
        "token": "t",
        "data": data,
    }
    message.update(envelope)
    return message


def _refusal(raw: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as refused:
        decode_from_device(json.dumps(raw).encode())
    return refused.value


@pytest.mark.parametrize(
    ("raw", "pointer"),
    [
        (_raw("locker-opened", {"lockerIndex": "1"}), "/data/lockerIndex"),
        (_raw("locker-opened", {"lockerIndex": -1}), "/data/lockerIndex"),
        (_raw("locker-opened", {"lockerIndex": True}), "/data/lockerIndex"),
        (_raw("locker-opened", {}), "/data/lockerIndex"),
        (_raw("locker-opened", [0]), "/data"),
        (
            _raw("locker-opened", {"lockerIndex": 0}, occurredAt="2030-01-01T12:00:00"),
            "/occurredAt",
        ),
        (_raw("code-entered", {"code": "1", "codeType": "right-code"}), "/data/codeType"),
        (_raw("no-such-type", {}), "/type"),
        (_raw("sync", {"full": True, "version": 1, "pincodes": []}), "/type"),
        (_raw("heartbeat", {}, v=2), "/v"),
        (_raw("heartbeat", {}, v=True), "/v"),
        (_raw("heartbeat", {}, hwId="a b"), "/hwId"),
        (_raw("heartbeat", {}, token=7), "/token"),
        (
            _raw("locker-inventory", {"lockers": [{"lockerIndex": 0, "keyInside": True}, {}]}),
            "/data/lockers/1/lockerIndex",
        ),
        (_raw("keypad-locked", {"failures": 5, "until": 1893499200}), "/data/until"),
    ],
)
def test_a_malformed_message_names_its_id_and_the_offending_field_by_a_json_pointer(
    raw: dict[str, object], pointer: str
) -> None:
    refused = _refusal(raw)
    assert refused.ref == "m-1"
    assert refused.pointer == pointer
    assert refused.detail


@pytest.mark.parametrize("message_id", ["a" * 65, "", "a b", 17, None])
def test_a_message_whose_id_cannot_be_read_refers_to_nothing(message_id: object) -> None:
    raw = _raw("locker-opened", {"lockerIndex": 0}, id=message_id)
    assert _refusal(raw).ref is None
    assert _refusal(b"not json".decode()).ref is None


@pytest.mark.parametrize(
    "time",
    [
        "2030-01-01 12:00:00Z",  # a space for T
        "2030-01-01T12:00:00+0100",  # an offset without its colon
        "2030-01-01t12:00:00z",
        "2030-01-01T12:00Z",  # no seconds
        "1999-12-31T23:59:59Z",  # before the years any time is accepted in
        "2030-02-30T12:00:00Z",
    ],
)
def test_times_are_only_rfc_3339_with_seconds_and_an_offset(time: str) -> None:
    assert _refusal(_raw("heartbeat", {}, occurredAt=time)).pointer == "/occurredAt"


def test_a_time_with_any_offset_or_fraction_is_read_as_its_instant() -> None:
    raw = _raw("heartbeat", {}, occurredAt="2030-01-01T14:00:00.123456+02:00")
    message = decode_from_device(json.dumps(raw).encode())
    assert message.occurred_at == NOW.replace(microsecond=123456)


def test_an_optional_field_that_is_null_counts_as_absent() -> None:
    raw = _raw(
        "code-entered",
        {"code": "1", "codeType": "right-pincode", "lockerIndex": None, "source": None},
        token=None,
    )
    message = decode_from_device(json.dumps(raw).encode())
    assert isinstance(message.data, CodeEntered)
    assert (message.data.locker_index, message.data.source) == (None, "keypad")
    assert message.token is None
    ack = decode_from_device(json.dumps(_raw("ack", {"ref": "x", "ok": None})).encode())
    assert isinstance(ack.data, Ack)
    assert ack.data.ok is True
    heartbeat = decode_from_device(json.dumps(_raw("heartbeat", None)).encode())
    assert isinstance(heartbeat.data, Empty)


def test_a_required_field_that_is_null_is_missing() -> None:
    assert _refusal(_raw("locker-opened", {"lockerIndex": None})).pointer == "/data/lockerIndex"
    assert _refusal(_raw("hello", None)).pointer == "/data"


def test_fields_are_read_by_their_camel_case_names_only() -> None:
    refused = _refusal(_raw("locker-opened", {"locker_index": 0}))
    assert refused.pointer == "/data/lockerIndex"
    assert _refusal({**_raw("heartbeat", {}), "occurred_at": "x", "occurredAt": None}).pointer == (
        "/occurredAt"
    )


def test_a_whole_number_written_with_a_fraction_is_an_integer() -> None:
    message = decode_from_device(json.dumps(_raw("locker-opened", {"lockerIndex": 2.0})).encode())
    assert isinstance(message.data, LockerEvent)
    assert message.data.locker_index == 2
    assert _refusal(_raw("locker-opened", {"lockerIndex": 2.5})).pointer == "/data/lockerIndex"


def test_what_is_sent_leaves_out_optional_fields_rather_than_sending_null() -> None:
    welcome = Welcome(automat_id="a1", heartbeat_seconds=30.0, server_time=NOW)
    sync = Sync(
        full=True,
        version=1,
        pincodes=[PincodeEntry(id="p1", code="1", locker_index=0, valid_from=NOW, purpose="fetch")],
    )
    for type_, data in (("welcome", welcome), ("sync", sync)):
        payload = encode(type_, data, hw_id="SIM-1", occurred_at=NOW)
        assert b"null" not in payload
        assert "token" not in json.loads(payload)
    assert (
        "deviceToken"
        not in json.loads(encode("welcome", welcome, hw_id="H", occurred_at=NOW))["data"]
    )


def test_the_pointer_and_the_detail_of_a_refusal_are_bounded() -> None:
    refused = ProtocolError("x" * 10_000, ref="m", pointer="/" + "y" * 10_000)
    assert len(refused.detail) <= MAX_DETAIL
    assert refused.pointer is not None
    assert len(refused.pointer) <= MAX_POINTER
    Rejected(reason=RejectReason.MALFORMED, ref="m", pointer=refused.pointer, detail=refused.detail)


def test_a_pointer_escapes_the_characters_json_pointers_reserve() -> None:
    raw = _raw("heartbeat", {"a/b~c\u0000": 1})
    raw["data"] = {"k/~": "\u0000"}
    assert _refusal(raw).pointer == "/data/k~1~0"
