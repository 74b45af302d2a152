"""The device protocol (docs/device-protocol.md): topics, message models, encode and decode.

Transport-neutral: the MQTT link and the in-process link carry the same bytes,
and both the gateway and the simulator speak through this module only.
Decoding never raises anything but ``ProtocolError``, whatever the bytes are,
so a malformed message can be logged and dropped without side effects.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from keyautomat.domain.devices import MAX_LOCKERS
from keyautomat.domain.text import json_problems
from keyautomat.domain.times import format_utc

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
HW_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
_HW_ID = re.compile(HW_ID_PATTERN)

ALARM_TYPES = (
    "DEVICE_ERROR",
    "DEVICE_POWER_DISCONNECTED",
    "DEVICE_LOW_POWER",
    "DEVICE_MOVED",
    "DEVICE_DISCONNECTED",
    "DEVICE_WIFI_OFFLINE",
)
AlarmType = Literal[
    "DEVICE_ERROR",
    "DEVICE_POWER_DISCONNECTED",
    "DEVICE_LOW_POWER",
    "DEVICE_MOVED",
    "DEVICE_DISCONNECTED",
    "DEVICE_WIFI_OFFLINE",
]
Purpose = Literal["default", "fetch", "return"]
CodeType = Literal["right-pincode", "right-return-code", "right-access-code"]


class ProtocolError(Exception):
    """A message that is not valid under this protocol version; it is dropped, never applied."""


Time = Annotated[AwareDatetime, PlainSerializer(format_utc, return_type=str)]
MessageId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
HwId = Annotated[StrictStr, Field(pattern=HW_ID_PATTERN)]
MAX_CODE_LENGTH = 32
Code = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CODE_LENGTH)]
LockerIndex = Annotated[StrictInt, Field(ge=0, le=999)]
KeyId = Annotated[StrictStr, Field(min_length=1, max_length=128)]


class Data(BaseModel):
    """Base of every message body: camelCase on the wire, unknown fields ignored (forward
    compatibility within one protocol version)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# --- device to server -------------------------------------------------------------------


class Hello(Data):
    installation_pincode: Code | None = None
    product: Literal["key20", "key30"]
    locker_count: Annotated[StrictInt, Field(ge=1, le=MAX_LOCKERS)]
    firmware: Annotated[StrictStr, Field(max_length=64)] | None = None
    sync_version: StrictInt | None = None


class Empty(Data):
    pass


class Ack(Data):
    ref: MessageId
    ok: StrictBool = True
    reason: Annotated[StrictStr, Field(max_length=64)] | None = None


class LockerState(Data):
    locker_index: LockerIndex
    door_open: StrictBool = False
    key_inside: StrictBool
    key_id: KeyId | None = None
    key_name: Annotated[StrictStr, Field(max_length=128)] | None = None
    rfid: Annotated[StrictStr, Field(max_length=64)] | None = None


class LockerInventory(Data):
    lockers: Annotated[list[LockerState], Field(max_length=MAX_LOCKERS)]


class CodeEntered(Data):
    code: Code
    code_type: CodeType
    locker_index: LockerIndex | None = None
    key_id: KeyId | None = None
    pincode_id: StrictStr | None = None
    source: Literal["keypad", "remote"] = "keypad"


class LockerEvent(Data):
    locker_index: LockerIndex


class KeyEvent(Data):
    locker_index: LockerIndex
    key_id: KeyId | None = None
    key_name: Annotated[StrictStr, Field(max_length=128)] | None = None
    rfid: Annotated[StrictStr, Field(max_length=64)] | None = None


class AlarmEvent(Data):
    alarm_type: AlarmType


class PromptEnded(Data):
    code: Code
    outcome: Literal["confirmed", "cancelled", "expired"]


class KeypadLocked(Data):
    failures: StrictInt
    until: Time


class KeyProgrammed(Data):
    ref: MessageId
    locker_index: LockerIndex
    key_id: KeyId | None = None
    ok: StrictBool
    reason: StrictStr | None = None


# Messages the device sends about its own connection; never queued, never stored.
DEVICE_SESSION_MESSAGES: dict[str, type[Data]] = {
    "hello": Hello,
    "heartbeat": Empty,
    "goodbye": Empty,
    "ack": Ack,
}
# Events: queued on the device while offline, applied once by the server, acked after.
DEVICE_EVENTS: dict[str, type[Data]] = {
    "locker-inventory": LockerInventory,
    "code-entered": CodeEntered,
    "locker-opened": LockerEvent,
    "locker-closed": LockerEvent,
    "key-removed": KeyEvent,
    "key-inserted": KeyEvent,
    "alarm-raised": AlarmEvent,
    "alarm-cleared": AlarmEvent,
    "prompt-ended": PromptEnded,
    "keypad-locked": KeypadLocked,
    "key-programmed": KeyProgrammed,
}
DEVICE_MESSAGES = {**DEVICE_SESSION_MESSAGES, **DEVICE_EVENTS}

# --- server to device -------------------------------------------------------------------


class Welcome(Data):
    automat_id: StrictStr
    device_token: StrictStr | None = None
    heartbeat_seconds: float
    server_time: Time


class RejectReason(StrEnum):
    """Why the server refused a device's message: the ``reason`` of ``rejected``, from
    this set only. docs/device-protocol.md says what a device does on each."""

    UNAUTHENTICATED = "unauthenticated"  # no or wrong credential, or an unknown device
    REPLACED = "replaced"  # the automat is bound to other hardware now
    DEACTIVATED = "deactivated"  # the automat was uninstalled or deactivated
    WRONG_INSTALLATION_CODE = "wrong-installation-code"  # binding refused, whatever the cause
    LOCKED_OUT = "locked-out"  # too many wrong installation codes: wait before the next
    MALFORMED = "malformed"  # the message breaks its schema: drop it, never resend it
    UNKNOWN_LOCKER = "unknown-locker"  # names a locker the automat does not have
    BAD_INVENTORY = "bad-inventory"  # a locker-inventory that is not exactly 0..lockerCount-1


class Rejected(Data):
    reason: StrictStr
    # The id of the message refused, so a device can tell a refusal of its own
    # messages from one provoked by someone else writing on its topic.
    ref: MessageId | None = None


class PincodeEntry(Data):
    id: StrictStr
    code: Code
    locker_index: LockerIndex
    valid_from: Time
    valid_until: Time | None = None
    purpose: Purpose
    key_id: KeyId | None = None
    # The server programs the key in this locker before it may be taken (iLOQ
    # just-in-time programming): on a match the device reports ``code-entered``
    # and opens only when ``open-locker`` names this pincode.
    program_first: StrictBool = False


class Sync(Data):
    full: StrictBool
    version: StrictInt
    pincodes: list[PincodeEntry]
    removed: list[StrictStr] = []


class RemoteCode(Data):
    code: Code


class ProximityPrompt(Data):
    code: Code
    timeout_seconds: float


class CancelPrompt(Data):
    code: Code


class OpenLocker(Data):
    locker_index: LockerIndex
    reason: StrictStr = "service"
    # Set when the opening completes a ``program_first`` pincode the device is holding:
    # the device then treats the opening as that code's (fetch, return, ...).
    pincode_id: StrictStr | None = None


class ProgramKey(Data):
    locker_index: LockerIndex
    key_id: KeyId | None = None
    access_right_ids: list[StrictStr]
    valid_from: Time | None = None
    valid_until: Time | None = None


SERVER_MESSAGES: dict[str, type[Data]] = {
    "welcome": Welcome,
    "rejected": Rejected,
    "ack": Ack,
    "sync": Sync,
    "remote-code": RemoteCode,
    "proximity-prompt": ProximityPrompt,
    "cancel-prompt": CancelPrompt,
    "open-locker": OpenLocker,
    "program-key": ProgramKey,
}


class Envelope(BaseModel):
    """What every message carries besides its ``data``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    v: StrictInt
    id: MessageId
    type: StrictStr
    occurred_at: Time
    hw_id: HwId
    token: Annotated[StrictStr, Field(max_length=256)] | None = None
    data: dict[str, Any] = {}


_ENVELOPE = TypeAdapter(Envelope)


class Message(BaseModel):
    """A decoded message: its envelope and its typed body."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    envelope: Envelope
    data: Data

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def hw_id(self) -> str:
        return self.envelope.hw_id

    @property
    def occurred_at(self) -> datetime:
        return self.envelope.occurred_at


def new_message_id() -> str:
    return uuid.uuid4().hex


def encode(
    type_: str,
    data: Data,
    *,
    hw_id: str,
    occurred_at: datetime,
    token: str | None = None,
    message_id: str | None = None,
) -> bytes:
    envelope: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "id": message_id or new_message_id(),
        "type": type_,
        "occurredAt": format_utc(occurred_at),
        "hwId": hw_id,
        "data": data.model_dump(mode="json", by_alias=True),
    }
    if token is not None:
        envelope["token"] = token
    return json.dumps(envelope, separators=(",", ":")).encode()


def _decode(payload: bytes, registry: dict[str, type[Data]]) -> Message:
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("not JSON") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("not a JSON object")
    # The text rules of every edge (domain/text.py): NUL or a lone surrogate in any
    # field would otherwise reach SQL, where PostgreSQL fails on it.
    problems = json_problems(raw)
    if problems:
        raise ProtocolError("; ".join(problems[:5]))
    try:
        envelope = _ENVELOPE.validate_python(raw)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from None
    if envelope.v != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {envelope.v}")
    model = registry.get(envelope.type)
    if model is None:
        raise ProtocolError(f"unknown message type {envelope.type!r}")
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        raise ProtocolError(f"{envelope.type}: {_describe(exc)}") from None
    return Message(envelope=envelope, data=data)


def decode_from_device(payload: bytes) -> Message:
    return _decode(payload, DEVICE_MESSAGES)


def decode_from_server(payload: bytes) -> Message:
    return _decode(payload, SERVER_MESSAGES)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# --- topics -----------------------------------------------------------------------------


def up_topic(prefix: str, hw_id: str) -> str:
    return f"{prefix}/devices/{hw_id}/up"


def down_topic(prefix: str, hw_id: str) -> str:
    return f"{prefix}/devices/{hw_id}/down"


def up_pattern(prefix: str) -> str:
    return f"{prefix}/devices/+/up"


def hw_id_of_up_topic(prefix: str, topic: str) -> str | None:
    head = f"{prefix}/devices/"
    if not topic.startswith(head) or not topic.endswith("/up"):
        return None
    hw_id = topic[len(head) : -len("/up")]
    return hw_id if _HW_ID.fullmatch(hw_id) else None


def valid_hw_id(value: str) -> bool:
    return bool(_HW_ID.fullmatch(value))
