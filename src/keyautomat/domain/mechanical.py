"""Mechanical keys: a caller-named key, its home storage and where it is now (endpoints §8).

A storage is either an automat (``automatId``) or free text describing a
manual place (``manualStorageInfo``, e.g. "Shelf 1, Drawer 1"). ``selected``
is the key's home; ``stored`` is where it is right now, ``None`` while it is
away. For keys in an automat the device's reports decide ``stored``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime

from keyautomat.domain.errors import InvalidInput

MAX_KEY_ID = 128
MAX_RFID_HEX = 64
_HEX = re.compile(r"^[0-9A-Fa-f]+$")


@dataclass(frozen=True, slots=True)
class Storage:
    """Exactly one of ``automat_id`` and ``manual_info`` is set."""

    automat_id: str | None = None
    manual_info: str | None = None

    @property
    def is_device(self) -> bool:
        return self.automat_id is not None

    @classmethod
    def device(cls, automat_id: str) -> Storage:
        return cls(automat_id=automat_id)

    @classmethod
    def manual(cls, info: str) -> Storage:
        return cls(manual_info=info)

    @classmethod
    def parse(cls, automat_id: str | None, manual_info: str | None, field: str) -> Storage:
        """A storage object of a request: exactly one of its two properties."""
        if automat_id is not None and manual_info is not None:
            raise InvalidInput(field, "give either automatId or manualStorageInfo, not both")
        if automat_id is not None:
            if not automat_id:
                raise InvalidInput(f"{field}.automatId", "must not be empty")
            return cls.device(automat_id)
        if manual_info is not None:
            if not manual_info.strip():
                raise InvalidInput(f"{field}.manualStorageInfo", "must not be empty")
            return cls.manual(manual_info)
        raise InvalidInput(field, "must have automatId (device) or manualStorageInfo (manual)")


def check_key_id(value: str, field: str = "id") -> str:
    """Caller-chosen ids: 1-128 printable characters without ``/`` (gaps.md A5)."""
    if not 1 <= len(value) <= MAX_KEY_ID or not value.isprintable() or "/" in value:
        raise InvalidInput(field, "must be 1-128 printable characters without '/'")
    return value


def normalize_rfid(value: str | None, field: str = "rfidHex") -> str | None:
    """RFID ids are hex digits; stored upper-case so that device reads match in any case."""
    if value is None:
        return None
    if len(value) > MAX_RFID_HEX or not _HEX.fullmatch(value):
        raise InvalidInput(field, f"must be 1-{MAX_RFID_HEX} hexadecimal digits, e.g. 1A00D1")
    return value.upper()


def device_rfid(read: str | None) -> str | None:
    """A tag as a device read it, in the form keys are registered with; None when the
    read is not hex (it cannot name one of our keys)."""
    try:
        return normalize_rfid(read)
    except InvalidInput:
        return None


class MechanicalKey:
    """A mechanical key. ``id`` is unique per root organization (gaps.md F7)."""

    def __init__(
        self,
        *,
        object_id: str,
        id: str,  # noqa: A002 - the API's own word
        root_unit_id: str,
        organization_unit_id: str,
        name: str | None,
        rfid_hex: str | None,
        selected: Storage,
        shared: bool,
        created_at: datetime,
    ) -> None:
        self.object_id = object_id
        self.id = id
        self.root_unit_id = root_unit_id
        self.organization_unit_id = organization_unit_id
        self.name = name
        self.rfid_hex = rfid_hex
        self.selected_automat_id: str | None = None
        self.selected_manual_info: str | None = None
        self.shared = False
        self.stored_automat_id: str | None = None
        self.stored_locker_index: int | None = None
        self.stored_manual_info: str | None = None
        # Reported lost by staff: no new contract may book it until it is found (put back
        # into a storage).
        self.lost_at: datetime | None = None
        self.created_at = created_at
        self.select_storage(selected, shared=shared)

    @property
    def selected(self) -> Storage:
        return Storage(self.selected_automat_id, self.selected_manual_info)

    @property
    def storage(self) -> Storage | None:
        if self.stored_automat_id is None and self.stored_manual_info is None:
            return None
        return Storage(self.stored_automat_id, self.stored_manual_info)

    @property
    def available(self) -> bool:
        """F9: a key is available when it is in a storage."""
        return self.storage is not None

    def select_storage(self, selected: Storage, *, shared: bool) -> None:
        """Overlapping contracts are for keys handed out by automats only (gaps.md F6)."""
        if shared and not selected.is_device:
            raise InvalidInput("shared", "is only allowed for keys stored in an automat")
        self.selected_automat_id = selected.automat_id
        self.selected_manual_info = selected.manual_info
        self.shared = shared

    def put_in(self, storage: Storage, locker_index: int | None = None) -> None:
        """The key is in ``storage`` (a locker of it): a key lost is found."""
        self.lost_at = None
        self.stored_automat_id = storage.automat_id
        self.stored_manual_info = storage.manual_info
        self.stored_locker_index = locker_index if storage.is_device else None

    def take_away(self) -> None:
        self.stored_automat_id = None
        self.stored_locker_index = None
        self.stored_manual_info = None

    def report_lost(self, now: datetime) -> None:
        """Staff report the key lost: it is in no storage, and is not offered any more. A key
        reported inside a locker is there (the automat's report is the physical truth)."""
        if self.stored_automat_id is not None:
            raise InvalidInput(
                "id",
                f"is inside locker {self.stored_locker_index} of automat "
                f"{self.stored_automat_id}: only a key that is out can be lost",
            )
        self.take_away()
        self.lost_at = self.lost_at or now


# A drawn signature is shown to staff later, so only raster images whose bytes
# are what they claim are kept: no SVG (scripts), no other types, no mislabels.
_SIGNATURE_IMAGES = {
    "data:image/png;base64,": b"\x89PNG\r\n\x1a\n",
    "data:image/jpeg;base64,": b"\xff\xd8\xff",
}


def check_signature_image(data: str, field: str = "signature") -> str:
    """``data`` if it is a base64 data URL of a PNG or JPEG image (checked by its
    magic bytes after decoding), else InvalidInput naming ``field``."""
    for prefix, magic in _SIGNATURE_IMAGES.items():
        if data.startswith(prefix):
            try:
                image = base64.b64decode(data[len(prefix) :], validate=True)
            except ValueError:
                break
            if image.startswith(magic):
                return data
            break
    raise InvalidInput(field, "must be a PNG or JPEG image as a base64 data URL")
