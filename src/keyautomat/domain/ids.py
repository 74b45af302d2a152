"""Identifier formats (spec/gaps.md A5)."""

from __future__ import annotations

import os
import re
import secrets
import time

_OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
_counter = int.from_bytes(os.urandom(3), "big")


def new_object_id(now_seconds: float | None = None) -> str:
    """A 24-hex-digit id shaped like a MongoDB ObjectId: seconds, randomness, a counter.

    The leading timestamp makes ids roughly sortable by creation time, which
    keeps B-tree inserts local.
    """
    global _counter
    _counter = (_counter + 1) % 0xFFFFFF
    seconds = int(time.time() if now_seconds is None else now_seconds)
    return f"{seconds & 0xFFFFFFFF:08x}{secrets.token_hex(5)}{_counter:06x}"


def is_object_id(value: str) -> bool:
    return bool(_OBJECT_ID.fullmatch(value))


def format_automat_id(number: int) -> str:
    """Automat ids are six-digit, zero-padded decimal strings such as ``"000111"``."""
    return f"{number:06d}"


def new_pincode(length: int = 6) -> str:
    """A pincode of random digits drawn from a CSPRNG."""
    return "".join(secrets.choice("0123456789") for _ in range(length))
