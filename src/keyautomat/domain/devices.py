"""Rules of the device link that need no I/O: device credentials, pincode purposes,
domain events derived from device events."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# The most lockers one automat may report (device protocol); no contract can
# hold more keys than one automat has lockers.
MAX_LOCKERS = 1000


class PincodePurpose(enum.StrEnum):
    """What a pincode opens its locker for; the device uses it to know what to expect."""

    DEFAULT = "default"  # key out and back again with the same code (gaps.md C9)
    FETCH = "fetch"  # the key is taken; the code is spent once it is
    RETURN = "return"  # a key is put in; the code is spent once it is


def inventory_problem(indices: Sequence[int], locker_count: int) -> str | None:
    """Why a ``locker-inventory`` listing ``indices`` is not exactly the lockers
    ``0 … locker_count-1``, each once (docs/device-protocol.md, "Lockers"); None when it is.
    Short, for the log: the device is told only ``bad-inventory``."""
    if not indices:
        return "lists no locker"
    counts = Counter(indices)
    seen = set(counts)
    twice = sorted(i for i, n in counts.items() if n > 1)
    beyond = sorted(i for i in seen if i >= locker_count)
    missing = sorted(set(range(locker_count)) - seen)
    problems = [
        f"{what} {_some(found)}"
        for what, found in (
            ("listed twice:", twice),
            (f"beyond lockerCount {locker_count}:", beyond),
            ("missing:", missing),
        )
        if found
    ]
    return "; ".join(problems) or None


def _some(indices: list[int], shown: int = 5) -> str:
    more = f" and {len(indices) - shown} more" if len(indices) > shown else ""
    return ", ".join(str(i) for i in indices[:shown]) + more


def clock_suspect(occurred_at: datetime, received_at: datetime, skew: timedelta) -> bool:
    """A device time further ahead of the server's receive time than ``skew`` cannot be
    true (docs/device-protocol.md, "Clock"). Times in the past are not suspect: a device
    delivers what it queued offline with the times it happened, however long ago."""
    return occurred_at - received_at > skew


def code_type_for(purpose: str) -> str:
    """The ``codeType`` of a correct code (webhooks.md §5.3)."""
    return "right-return-code" if purpose == PincodePurpose.RETURN else "right-pincode"


class AutomatEventType(enum.StrEnum):
    """Domain events recorded from device events, for contracts, webhooks and notifications."""

    CODE_ENTERED = "code-entered"
    KEY_REMOVED = "key-removed"
    KEY_INSERTED = "key-inserted"
    DEVICE_ALARM = "device-alarm"


@dataclass(frozen=True, slots=True)
class AutomatEvent:
    id: int
    automat_id: str
    type: str
    occurred_at: datetime
    locker_index: int | None = None
    key_id: str | None = None
    code: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    recorded_at: datetime | None = None  # when the server applied it (webhook createdAt)


def new_device_token() -> str:
    """The credential a device receives at bind; only its hash is stored."""
    return secrets.token_urlsafe(32)


def secret_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def secret_matches(value: str | None, stored_hash: str | None) -> bool:
    if value is None or stored_hash is None:
        return False
    return hmac.compare_digest(secret_hash(value), stored_hash)


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA-256 of a low-entropy secret (a six-digit installation code) under a server
    key: unlike a plain hash, a table dump does not reveal the code by trying all 10^6."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def keyed_hash_matches(key: bytes, value: str, stored_hash: str | None) -> bool:
    if stored_hash is None:
        return False
    return hmac.compare_digest(keyed_hash(key, value), stored_hash)
