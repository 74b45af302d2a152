"""Webhook events: the envelope, the four ``data`` shapes, ids, secrets and ordering lanes.

Everything here is exactly the wire format of spec/webhooks.md §4-§5; nothing
does I/O, and every timestamp comes in as an argument.
"""

from __future__ import annotations

import base64
import enum
import json
import os
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.times import format_utc

SPEC_VERSION = "1"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


class EventType(enum.StrEnum):
    KEY_STATUS = "key-status"
    CONTRACT_UPDATE = "contract-update"
    CODE_ENTERED = "code-entered"
    DEVICE_ALARM = "device-alarm"


EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)

KEY_STATES = (
    "key-fetched",
    "key-returned",
    "key-not-fetched",
    "key-not-returned",
    # keyautomat's own, in the same shape (docs/webhooks.md, "Key states of our own"): a
    # key reported lost, and a key still out when the next contract's period starts.
    "key-lost",
    "key-delayed",
)
STORAGE_TYPES = ("device", "manualStorage")
CONTRACT_TYPES = ("default", "fetch", "return")
CODE_TYPES = ("right-pincode", "right-return-code", "right-access-code")
ALARM_TYPES = (
    "DEVICE_ERROR",
    "DEVICE_POWER_DISCONNECTED",
    "DEVICE_LOW_POWER",
    "DEVICE_MOVED",
    "DEVICE_DISCONNECTED",
    "DEVICE_WIFI_OFFLINE",
    # keyautomat's own alarms, in the spec's shape (docs/webhooks.md, "Alarm types"):
    # a bind, repeated wrong installation pincodes, a keypad lockout, a refused inventory.
    "DEVICE_BOUND",
    "DEVICE_BIND_FAILURES",
    "DEVICE_KEYPAD_LOCKED",
    "DEVICE_BAD_INVENTORY",
)
ALARM_STATES = ("activated", "deactivated")


def url_for_people(url: str) -> str:
    """The endpoint URL as shown outside the admin API (an email): scheme, host, port and
    path only, since a query or user info may carry the receiver's credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def format_time(value: datetime) -> str:
    """UTC with milliseconds and ``Z``: ``2025-08-03T05:46:40.000Z``."""
    if value.tzinfo is None:
        raise ValueError("naive datetime in a webhook event")
    return format_utc(value)


def _optional_time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(allowed)}, not {value!r}")
    return value


# -- the four data shapes (spec §5); absent fields are left out, never null ----


def key_status_data(
    *,
    state: str,
    key_id: str,
    contract_id: str,
    contract_object_id: str,
    device_id: str | None = None,
    locker_index: int | None = None,
) -> dict[str, Any]:
    """``key-status``; ``device_id``/``locker_index`` only for keys kept in an automat."""
    if (device_id is None) != (locker_index is None):
        raise ValueError("device keys carry both deviceId and lockerIndex, manual keys neither")
    data: dict[str, Any] = {
        "state": _one_of("state", state, KEY_STATES),
        "storageType": "device" if device_id is not None else "manualStorage",
    }
    if device_id is not None and locker_index is not None:
        data["deviceId"] = device_id
        data["lockerIndex"] = int(locker_index)
    data["keyId"] = key_id
    data["contractId"] = contract_id
    data["contractObjectId"] = contract_object_id
    return data


def contract_update_data(
    *,
    contract_type: str,
    contract_id: str,
    contract_object_id: str,
    key_id: str,
    start: datetime,
    end: datetime | None,
    pincode: str | None = None,
    device_id: str | None = None,
) -> dict[str, Any]:
    """``contract-update``, one key per payload; manual-storage keys omit deviceId and pincode."""
    data: dict[str, Any] = {
        "contractType": _one_of("contractType", contract_type, CONTRACT_TYPES),
        "contractId": contract_id,
        "contractObjectId": contract_object_id,
    }
    if pincode is not None:
        data["pincode"] = pincode
    data["start"] = format_time(start)
    data["end"] = _optional_time(end)
    if device_id is not None:
        data["deviceId"] = device_id
    data["keyId"] = key_id
    return data


def code_entered_data(
    *,
    code_type: str,
    code: str,
    device_id: str,
    locker_index: int | None = None,
    key_id: str | None = None,
    contract_id: str | None = None,
    contract_object_id: str | None = None,
) -> dict[str, Any]:
    """``code-entered``: lockerIndex/keyId absent for access codes, contractId for return codes."""
    data: dict[str, Any] = {
        "codeType": _one_of("codeType", code_type, CODE_TYPES),
        "code": code,
        "deviceId": device_id,
    }
    if locker_index is not None:
        data["lockerIndex"] = int(locker_index)
    if key_id is not None:
        data["keyId"] = key_id
    if contract_id is not None:
        data["contractId"] = contract_id
    if contract_object_id is not None:
        data["contractObjectId"] = contract_object_id
    return data


def device_alarm_data(
    *,
    alarm_type: str,
    state: str,
    device_id: str,
    start: datetime,
    end: datetime | None,
    acknowledged: bool,
) -> dict[str, Any]:
    """``device-alarm``: on activation, acknowledgement and deactivation."""
    return {
        "alarmType": _one_of("alarmType", alarm_type, ALARM_TYPES),
        "state": _one_of("state", state, ALARM_STATES),
        "deviceId": device_id,
        "start": format_time(start),
        "end": _optional_time(end),
        "acknowledged": bool(acknowledged),
    }


# -- placeholder payloads of test deliveries (spec §9) --------------------------


def sample_data(event_type: str, now: datetime) -> dict[str, Any]:
    """The live shape with placeholder values: device ``"000000"``, never a real code."""
    if event_type == EventType.KEY_STATUS:
        return key_status_data(
            state="key-fetched",
            device_id="000000",
            locker_index=0,
            key_id="test-key",
            contract_id="test-contract",
            contract_object_id="test-contract",
        )
    if event_type == EventType.CONTRACT_UPDATE:
        return contract_update_data(
            contract_type="default",
            contract_id="test-contract",
            contract_object_id="test-contract",
            pincode="000000",
            start=now,
            end=None,
            device_id="000000",
            key_id="test-key",
        )
    if event_type == EventType.CODE_ENTERED:
        return code_entered_data(
            code_type="right-pincode",
            code="000000",
            device_id="000000",
            locker_index=0,
            key_id="test-key",
            contract_id="test-contract",
            contract_object_id="test-contract",
        )
    if event_type == EventType.DEVICE_ALARM:
        return device_alarm_data(
            alarm_type="DEVICE_ERROR",
            state="activated",
            device_id="000000",
            start=now,
            end=None,
            acknowledged=False,
        )
    raise ValueError(f"unknown event type {event_type!r}")


# -- envelope, ids, lanes, secrets ---------------------------------------------


def envelope(
    *,
    event_type: str,
    organization_unit_id: str,
    data: dict[str, Any],
    occurred_at: datetime,
    created_at: datetime,
) -> dict[str, Any]:
    """The one delivery body of spec §4, keys in the documented order."""
    return {
        "specVersion": SPEC_VERSION,
        "type": _one_of("type", event_type, EVENT_TYPES),
        "occurredAt": format_time(occurred_at),
        "createdAt": format_time(created_at),
        "organizationUnitId": organization_unit_id,
        "data": data,
    }


def serialise(body: dict[str, Any]) -> str:
    """Compact JSON, serialised once per event and sent byte for byte on every attempt."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(now: datetime) -> str:
    """A ULID: 48 bits of milliseconds, 80 random bits, Crockford base32 (26 characters)."""
    value = (int(now.timestamp() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_webhook_id(now: datetime) -> str:
    """The ``webhook-id`` of one delivery: ``msg_`` + ULID (gaps.md G7)."""
    return "msg_" + new_ulid(now)


def source_key(data: dict[str, Any], organization_unit_id: str) -> str:
    """What an ordering lane is about: the device, else the key, else the unit (gaps.md G4)."""
    for field in ("deviceId", "keyId"):
        value = data.get(field)
        if isinstance(value, str) and value:
            return value
    return organization_unit_id


def new_secret() -> str:
    """``whsec_`` + standard Base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def validate_event_types(values: list[str], field: str = "eventTypes") -> list[str]:
    """At least one known type; duplicates collapse, catalog order kept."""
    if not values:
        raise InvalidInput(field, "must name at least one event type")
    unknown = [v for v in values if v not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            field, f"unknown event type {unknown[0]!r}; expected any of {', '.join(EVENT_TYPES)}"
        )
    return [t for t in EVENT_TYPES if t in values]
