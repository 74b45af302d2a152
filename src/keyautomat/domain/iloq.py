"""iLOQ S5 keys as keyautomat tracks them: which unit owns a key and where it is stored.

This is our registry, not the locking system: the rights written in a key live
in the customer's iLOQ system and are reached through the iLOQ port.
"""

from __future__ import annotations

import re
from datetime import datetime

from keyautomat.domain.errors import InvalidInput

KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_KEY_ID = re.compile(KEY_ID_PATTERN)


def check_key_id(value: str, field: str) -> str:
    """iLOQ key ids are UUIDs; other printable ids up to 64 characters are accepted too."""
    if not _KEY_ID.fullmatch(value):
        raise InvalidInput(field, "must be an iLOQ key id (a UUID, at most 64 characters)")
    return value


def short_key_name(key_id: str) -> str:
    """The short printed name of a key, such as ``740FE4C``: the first 7 hex digits of its id."""
    digits = key_id.replace("-", "")
    return digits[:7].upper()


class IloqKey:
    """An electronic key of a unit; ``automat_id``/``locker_index`` say which locker holds it."""

    def __init__(
        self,
        *,
        id: str,  # noqa: A002 - the API's own word
        name: str,
        organization_unit_id: str,
        created_at: datetime,
    ) -> None:
        self.id = id
        self.name = name
        self.organization_unit_id = organization_unit_id
        self.blocked = False
        self.automat_id: str | None = None
        self.locker_index: int | None = None
        self.created_at = created_at

    @property
    def is_stored(self) -> bool:
        return self.automat_id is not None

    def stored_in(self, automat_id: str, locker_index: int) -> None:
        self.automat_id = automat_id
        self.locker_index = locker_index

    def taken_out(self) -> None:
        self.automat_id = None
        self.locker_index = None

    def block(self) -> None:
        """A blocked key is never chosen for a contract nor programmed again (gaps.md C6)."""
        self.blocked = True
