"""The device protocol (docs/device-protocol.md): topics, message models, encode and decode.

Transport-neutral: the MQTT link and the in-process link carry the same bytes,
and both the gateway and the simulator speak through this module only.

The models here are the protocol's one definition: the JSON Schema files in
``protocol/v1/`` are generated from them (``adapters/device_schemas.py``), and
decoding validates each message against the model its schema was made from.
Decoding never raises anything but ``ProtocolError``, whatever the bytes are; the
error says which message it was about (``ref``) when its id can be read, and
where it went wrong (a JSON pointer), so that the device can be told.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic.alias_generators import to_camel

from keyautomat.domain.devices import MAX_LOCKERS
from keyautomat.domain.text import MAX_JSON_INTEGER, json_problems_at
from keyautomat.domain.times import format_utc

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
HW_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_HW_ID = re.compile(HW_ID_PATTERN)
_MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)
# RFC 3339 with an upper-case ``T``, seconds and an offset (``Z`` or ``±hh:mm``), in
# the years 2000-2999 (the range of every time the server accepts, domain/times.py).
# Written with [0-9] rather than \d: a schema's pattern is an ECMA-262 regex, and
# Python's \d would also match other scripts' digits.
TIME_PATTERN = (
    r"^2[0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TIME = re.compile(TIME_PATTERN)
# A refusal's pointer and text are bounded whatever the message held.
MAX_POINTER = 256
MAX_DETAIL = 256

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
    """A message that is not valid under this protocol version; it is dropped, never applied.

    ``ref`` is the message's id when it could be read (the device can then be told,
    with ``pointer``, a JSON pointer to the offending field, and ``detail``).
    """

    def __init__(self, detail: str, *, ref: str | None = None, pointer: str | None = None) -> None:
        self.detail = bounded(detail, MAX_DETAIL)
        self.ref = ref
        self.pointer = None if pointer is None else bounded(pointer, MAX_POINTER)
        super().__init__(self.detail if pointer is None else f"{self.pointer}: {self.detail}")


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the types fields are made of -------------------------------------------------------


def _integral(value: object) -> object:
    # JSON does not tell 1 from 1.0, and JSON Schema's "integer" accepts both: so does
    # the decoder. Booleans stay refused (StrictInt), as the schema refuses them.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _rfc3339(value: object) -> object:
    # Objects built in Python carry datetimes; everything decoded is text, and only
    # the one shape the schema's pattern admits (no epoch numbers, no space for T).
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 time with seconds and an offset, years 2000-2999, "
            "e.g. 2030-01-01T12:00:00.000Z"
        )
    return value


def _not_a_boolean(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")  # True == 1 in Python
    return value


_INTEGRAL = BeforeValidator(_integral)
Time = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    PlainSerializer(format_utc, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIME_PATTERN}),
]
Version = Annotated[Literal[1], BeforeValidator(_not_a_boolean)]
MessageId = Annotated[StrictStr, Field(pattern=MESSAGE_ID_PATTERN)]
HwId = Annotated[StrictStr, Field(pattern=HW_ID_PATTERN)]
Token = Annotated[StrictStr, Field(max_length=256)]
MAX_CODE_LENGTH = 32
Code = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CODE_LENGTH)]
LockerIndex = Annotated[StrictInt, Field(ge=0, le=999), _INTEGRAL]
LockerCount = Annotated[StrictInt, Field(ge=1, le=MAX_LOCKERS), _INTEGRAL]
Count = Annotated[StrictInt, Field(ge=0, le=MAX_JSON_INTEGER), _INTEGRAL]
Seconds = Annotated[StrictFloat, Field(gt=0)]
KeyId = Annotated[StrictStr, Field(min_length=1, max_length=128)]
KeyName = Annotated[StrictStr, Field(max_length=128)]
Rfid = Annotated[StrictStr, Field(max_length=64)]
ObjectId = Annotated[StrictStr, Field(min_length=1, max_length=64)]
Reason = Annotated[StrictStr, Field(max_length=64)]


class Wire(BaseModel):
    """What every object on the wire shares: camelCase names, unknown fields ignored
    (forward compatibility within one protocol version), and an optional field that
    is null counts as absent: both mean its default."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="ignore"
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        optional = _optional_names(cls)
        if not any(value.get(name, False) is None for name in optional):
            return value
        return {k: v for k, v in value.items() if not (v is None and k in optional)}


@functools.cache
def _optional_names(model: type[BaseModel]) -> frozenset[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        if not info.is_required():
            names.update({name, info.alias or name})
    return frozenset(names)


class Data(Wire):
    """Base of every message body."""


# --- device to server -------------------------------------------------------------------


class Hello(Data):
    """First message on every connection. With the envelope's `token`: a reconnect. With
    `installationPincode` and no valid token: binding to the automat waiting for that code."""

    installation_pincode: Code | None = Field(
        default=None, description="The code the installer entered; only to bind."
    )
    product: Literal["key20", "key30"]
    locker_count: LockerCount
    firmware: Annotated[StrictStr, Field(max_length=64)] | None = None
    sync_version: Count | None = Field(
        default=None,
        description="The version of the last sync the device applied and holds, even an "
        "empty one; absent when none. 0 and absent both get a full sync.",
    )


class Empty(Data):
    """No fields."""


class Ack(Data):
    """The answer to a message that asks for one: from the server to a device event, from a
    device to a server command or sync."""

    ref: MessageId = Field(description="The id of the message answered.")
    ok: StrictBool = Field(
        default=True,
        description="False when a device refuses a command (a sync so answered counts as "
        "not acknowledged). The server's acks are always true: it refuses with `rejected`.",
    )
    reason: Reason | None = Field(
        default=None,
        description="Why a device refused (ok false); `busy` while a session is in progress.",
    )


class LockerState(Data):
    locker_index: LockerIndex = Field(description="0-based.")
    door_open: StrictBool = False
    key_inside: StrictBool
    key_id: KeyId | None = None
    key_name: KeyName | None = None
    rfid: Rfid | None = Field(default=None, description="The tag read of the key inside.")


class LockerInventory(Data):
    """The full state of every locker."""

    lockers: Annotated[list[LockerState], Field(max_length=MAX_LOCKERS)]


class CodeEntered(Data):
    """A code the device honours was entered (or sent with `remote-code`)."""

    code: Code
    code_type: CodeType
    locker_index: LockerIndex | None = None
    key_id: KeyId | None = None
    pincode_id: ObjectId | None = Field(default=None, description="The synced pincode's id.")
    source: Literal["keypad", "remote"] = "keypad"


class LockerEvent(Data):
    """A locker's door opened or closed."""

    locker_index: LockerIndex


class KeyEvent(Data):
    """The key sensor of a locker saw a key go or come."""

    locker_index: LockerIndex
    key_id: KeyId | None = None
    key_name: KeyName | None = None
    rfid: Rfid | None = None


class AlarmEvent(Data):
    """An alarm of the device starts or ends."""

    alarm_type: AlarmType


class PromptEnded(Data):
    """A proximity prompt ended."""

    code: Code
    outcome: Literal["confirmed", "cancelled", "expired"]


class KeypadLocked(Data):
    """Too many wrong codes at the keypad: it is locked until `until`."""

    failures: Count
    until: Time


class KeyProgrammed(Data):
    """The outcome of a `program-key` command."""

    ref: MessageId = Field(description="The id of the `program-key` command.")
    locker_index: LockerIndex
    key_id: KeyId | None = None
    ok: StrictBool
    reason: Annotated[StrictStr, Field(max_length=200)] | None = None


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
    """The device is authenticated (or bound)."""

    automat_id: ObjectId
    device_token: Token | None = Field(
        default=None,
        description="Present only when a credential is issued (binding): store it. "
        "Absent on a reconnect, where the stored one stays valid.",
    )
    heartbeat_seconds: Seconds
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


# Refusals of one message only: the device drops that message (never resends it) and
# carries on; its session and credential stand. Every other reason ends the session.
MESSAGE_REFUSALS = frozenset(
    {RejectReason.MALFORMED, RejectReason.UNKNOWN_LOCKER, RejectReason.BAD_INVENTORY}
)


class Rejected(Data):
    """The server refused a message; it changed nothing."""

    reason: RejectReason
    # The id of the message refused, so a device can tell a refusal of its own
    # messages from one provoked by someone else writing on its topic.
    ref: MessageId = Field(description="The id of the refused message.")
    pointer: Annotated[StrictStr, Field(max_length=MAX_POINTER)] | None = Field(
        default=None,
        description="malformed: a JSON pointer (RFC 6901) to the field that is wrong or "
        "missing, e.g. /data/lockerIndex; empty for the message as a whole.",
    )
    detail: Annotated[StrictStr, Field(max_length=MAX_DETAIL)] | None = Field(
        default=None, description="A short human-readable explanation, for logs."
    )


class PincodeEntry(Data):
    id: ObjectId
    code: Code
    locker_index: LockerIndex
    valid_from: Time
    valid_until: Time | None = Field(default=None, description="Absent: no end.")
    purpose: Purpose
    key_id: KeyId | None = None
    # The server programs the key in this locker before it may be taken (iLOQ
    # just-in-time programming): on a match the device reports ``code-entered``
    # and opens only when ``open-locker`` names this pincode.
    program_first: StrictBool = False


class Sync(Data):
    """The pincodes the automat honours: all of them (`full`), or the changes since the
    version the device acknowledged last."""

    full: StrictBool
    version: Count
    since: Count | None = Field(
        default=None,
        description="Incremental syncs only: the changes are those since this version.",
    )
    pincodes: list[PincodeEntry]
    removed: list[ObjectId] = []


class RemoteCode(Data):
    """Act as if `code` were typed on the keypad."""

    code: Code


class ProximityPrompt(Data):
    """Wait up to `timeoutSeconds` for `#`, then act as if `code` were typed."""

    code: Code
    timeout_seconds: Seconds


class CancelPrompt(Data):
    """End the proximity prompt for `code`."""

    code: Code


class OpenLocker(Data):
    """Open a locker: a service opening, or the completion of a program-first pincode."""

    locker_index: LockerIndex
    reason: Reason = "service"
    # Set when the opening completes a ``program_first`` pincode the device is holding:
    # the device then treats the opening as that code's (fetch, return, ...).
    pincode_id: ObjectId | None = None


class ProgramKey(Data):
    """Program the iLOQ key in a locker (key20)."""

    locker_index: LockerIndex
    key_id: KeyId | None = None
    access_right_ids: list[Annotated[StrictStr, Field(max_length=128)]]
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

# --- the envelope -----------------------------------------------------------------------


class Header(Wire):
    """What every message carries besides its ``data``."""

    v: Version = Field(description="The protocol version.")
    id: MessageId = Field(description="Unique per sender; a resent message keeps its id.")
    type: StrictStr
    occurred_at: Time = Field(description="When it happened at the sender (its clock).")
    hw_id: HwId = Field(description="The device's hardware id; equals the topic's.")


class DeviceHeader(Header):
    """A device's messages carry its credential as well (the server's carry none)."""

    token: Token | None = Field(
        default=None, description="The credential issued at binding; absent before it."
    )


def _envelope(
    name: str, types: Mapping[str, type[Data]], doc: str, base: type[Header]
) -> type[Header]:
    """The envelope alone, for any message of one direction (``data`` left open)."""
    kinds: Any = Literal[tuple(types)]
    return create_model(
        name,
        __base__=base,
        __doc__=doc,
        type=(kinds, Field(description="The message type; what `data` holds depends on it.")),
        data=(dict[str, Any], Field(default_factory=dict)),
    )


class Typed(Header):
    """A message of one type: the envelope and the body of that type."""

    data: Data


class DeviceTyped(Typed, DeviceHeader):
    """A device's message of one type."""


def _message(type_: str, body: type[Data], direction: str, base: type[Typed]) -> type[Typed]:
    """The model of one message type: the envelope with its ``type`` and typed ``data``."""
    name = "".join(part.capitalize() for part in type_.split("-"))
    kind: Any = Literal[type_]
    required = any(info.is_required() for info in body.model_fields.values())
    data: Any = Field() if required else Field(default_factory=body)
    doc = f"`{type_}` ({direction}). {body.__doc__ or ''}".strip()
    return create_model(
        f"{name}Message", __base__=base, __doc__=doc, type=(kind, Field()), data=(body, data)
    )


DEVICE_ENVELOPE = _envelope(
    "DeviceEnvelope",
    DEVICE_MESSAGES,
    "The envelope of every message a device sends.",
    DeviceHeader,
)
SERVER_ENVELOPE = _envelope(
    "ServerEnvelope", SERVER_MESSAGES, "The envelope of every message the server sends.", Header
)
DEVICE_MESSAGE_MODELS = {
    t: _message(t, body, "device to server", DeviceTyped) for t, body in DEVICE_MESSAGES.items()
}
SERVER_MESSAGE_MODELS = {
    t: _message(t, body, "server to device", Typed) for t, body in SERVER_MESSAGES.items()
}


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message: its envelope and its typed body."""

    envelope: Typed
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
    def token(self) -> str | None:
        """The credential a device's message carries (None: none, or the server's)."""
        return self.envelope.token if isinstance(self.envelope, DeviceHeader) else None

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
    """The message's bytes. Fields that are None are left out: nothing is sent as null
    (the receiver must still accept null for an optional field, as absent)."""
    envelope: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "id": message_id or new_message_id(),
        "type": type_,
        "occurredAt": format_utc(occurred_at),
        "hwId": hw_id,
        "data": data.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    if token is not None:
        envelope["token"] = token
    return json.dumps(envelope, separators=(",", ":")).encode()


def _decode(payload: bytes, envelope: type[Header], models: Mapping[str, type[Typed]]) -> Message:
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("not JSON") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("not a JSON object")
    message_id = raw.get("id")
    ref = message_id if isinstance(message_id, str) and _MESSAGE_ID.fullmatch(message_id) else None
    # The text rules of every edge (domain/text.py): NUL or a lone surrogate in any
    # field would otherwise reach SQL, where PostgreSQL fails on it.
    problems = json_problems_at(raw)
    if problems:
        path, reason = problems[0]
        raise ProtocolError(reason, ref=ref, pointer=_pointer(path))
    model = models.get(raw["type"]) if isinstance(raw.get("type"), str) else None
    # Of a known type, the message is validated once: its fields are declared envelope
    # first, so the first problem found is the envelope's before the body's. Of an
    # unknown type, the envelope alone says what is wrong (a version, say) before the type.
    try:
        message = (model or envelope).model_validate(raw, by_name=False)
    except ValidationError as exc:
        raise _invalid(exc, raw, ref) from None
    if not isinstance(message, Typed):
        raise ProtocolError("unknown message type", ref=ref, pointer="/type")
    return Message(envelope=message, data=message.data)


def decode_from_device(payload: bytes) -> Message:
    return _decode(payload, DEVICE_ENVELOPE, DEVICE_MESSAGE_MODELS)


def decode_from_server(payload: bytes) -> Message:
    return _decode(payload, SERVER_ENVELOPE, SERVER_MESSAGE_MODELS)


def _invalid(exc: ValidationError, raw: dict[str, Any], ref: str | None) -> ProtocolError:
    """The first problem of a failed validation, placed by a JSON pointer into ``raw``."""
    error = exc.errors(include_url=False, include_input=False)[0]
    if error["loc"] == ("type",):
        return ProtocolError("unknown message type", ref=ref, pointer="/type")
    path: list[str | int] = []
    here: Any = raw
    # Pydantic's location may end in names of its own (the member of a union that
    # failed): only what leads through the document, or the missing field, is kept.
    for step in error["loc"]:
        if isinstance(here, dict) and isinstance(step, str):
            path.append(step)
            if step not in here:
                break
            here = here[step]
        elif isinstance(here, list) and isinstance(step, int) and 0 <= step < len(here):
            path.append(step)
            here = here[step]
        else:
            break
    return ProtocolError(error["msg"], ref=ref, pointer=_pointer(path))


def _pointer(path: tuple[str | int, ...] | list[str | int]) -> str:
    """A JSON pointer (RFC 6901) to ``path``."""
    return "".join("/" + str(step).replace("~", "~0").replace("/", "~1") for step in path)


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
