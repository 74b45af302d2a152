"""The iLOQ port: what keyautomat asks of a customer's iLOQ S5 locking system.

Two adapters implement it (``adapters/iloq/``): a built-in emulator that keeps
the locking system in our own database, and a client of the iLOQ S5 public
API. ``adapters/iloq/factory.py`` picks one per organization unit; see
``docs/iloq.md``.

Every failure is an ``IloqError``. The contract code must **fail closed**
(gaps.md C10): whatever the error, a key whose programming did not succeed is
not handed out. ``IloqTransientError`` says a retry may succeed (network,
timeouts, iLOQ answering 5xx); ``IloqPermanentError`` says it will not
(an access right that is not API-enabled, a blocklisted or unknown key, wrong
credentials) until someone changes the locking system.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import bindparam, select

from keyautomat.adapters import orm
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import PlainQuery, Reads
from keyautomat.service_layer.principal import unit_lineage


class IloqError(Exception):
    """The locking system did not do what was asked; nothing may be assumed done."""

    permanent = False


class IloqTransientError(IloqError):
    """The locking system could not be reached or failed for now; retrying may succeed."""


class IloqPermanentError(IloqError):
    """The locking system refused; retrying the same request will fail again."""

    permanent = True


@dataclass(frozen=True, slots=True)
class AccessRight:
    """A security access of the locking system (``IloqAccessRight`` on the V2 wire)."""

    id: str
    name: str
    real_estate_path: str | None
    default_access: bool
    api_enabled: bool


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the locking system knows about one key, including the rights written in it."""

    id: str
    name: str
    person_id: str | None
    access_right_ids: tuple[str, ...]
    valid_from: datetime | None
    valid_until: datetime | None
    blocked: bool
    programmed_at: datetime | None

    @property
    def is_blank(self) -> bool:
        return not self.access_right_ids


@dataclass(frozen=True, slots=True)
class ProgrammingRecord:
    """One line of the emulator's programming log: what was written into which key, when."""

    key_id: str
    action: str  # "program", "wipe" or "blocklist"
    access_right_ids: tuple[str, ...]
    person_id: str | None
    valid_from: datetime | None
    valid_until: datetime | None
    at: datetime


class IloqPort(Protocol):
    """One customer's iLOQ S5 locking system."""

    async def list_access_rights(
        self, *, search: str | None = None, default_only: bool = False
    ) -> list[AccessRight]:
        """Access rights in a stable order (by name, then id)."""
        ...

    async def get_key(self, key_id: str) -> KeyInfo | None: ...

    async def create_key(self, *, key_id: str, name: str) -> KeyInfo:
        """Enrol a blank key; a key that already exists is an ``IloqPermanentError``."""
        ...

    async def program_key(
        self,
        key_id: str,
        access_right_ids: Sequence[str],
        *,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        person_id: str | None = None,
    ) -> KeyInfo:
        """Write exactly these rights (bounded by the time limits) into the key, now.

        ``person_id`` None registers the key to the system's default person
        (gaps.md C18).
        """
        ...

    async def wipe_key(self, key_id: str) -> KeyInfo:
        """Remove every right and time limit so the key is blank and reusable."""
        ...

    async def blocklist_key(self, key_id: str) -> None:
        """Put the key on the locking system's blocklist; locks refuse it from then on."""
        ...

    async def programming_log(self, key_id: str | None = None) -> list[ProgrammingRecord]:
        """Programmings in time order, optionally of one key only."""
        ...


async def ensure_key(port: IloqPort, key_id: str, name: str) -> KeyInfo:
    """The key as the locking system knows it, enrolled first when it is new (gaps.md C17)."""
    found = await port.get_key(key_id)
    if found is not None:
        return found
    return await port.create_key(key_id=key_id, name=name)


def filter_access_rights(
    rights: Iterable[AccessRight], *, search: str | None, default_only: bool
) -> list[AccessRight]:
    """``search`` is a case-insensitive substring of the name (gaps.md C19)."""
    needle = search.casefold() if search else None
    return [
        r
        for r in rights
        if (not default_only or r.default_access)
        and (needle is None or needle in r.name.casefold())
    ]


def sort_access_rights(rights: Iterable[AccessRight]) -> list[AccessRight]:
    return sorted(rights, key=lambda r: (r.name.casefold(), r.id))


# --------------------------------------------------------------------------
# Which locking system serves a unit


@dataclass(frozen=True, slots=True)
class IloqApiConfig:
    """The ``iloqApiUser`` of a unit, with the password decrypted for use (never for display)."""

    username: str
    password: str
    customer_code: str
    service_address: str

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return (
            f"IloqApiConfig(username={self.username!r}, password='***', "
            f"customer_code={self.customer_code!r}, service_address={self.service_address!r})"
        )


@dataclass(frozen=True, slots=True)
class IloqSystemRef:
    """The unit whose locking system serves a caller, and how to reach it.

    ``config`` is None when no unit on the way to the root has an
    ``iloqApiUser``: the organization (the root unit) then owns an emulated system.
    """

    owner_unit_id: str
    config: IloqApiConfig | None


_ou = orm.organization_units
# Asked before every creation of an iLOQ contract that names access rights, each in a read
# transaction of its own (a unit deleted or moved is seen at once): on SQLite right on the
# event loop (Database.read), on the driver's cursor either way (adapters/db.py, PlainQuery).
_CONFIGURED = PlainQuery(
    select(
        _ou.c.id,
        _ou.c.iloq_username,
        _ou.c.iloq_password_encrypted,
        _ou.c.iloq_customer_code,
        _ou.c.iloq_service_address,
    ).where(_ou.c.id.in_(bindparam("lineage", expanding=True)), _ou.c.iloq_username.is_not(None))
)


def resolve_iloq_system(reads: Reads, unit_id: str, secrets: SecretBox) -> IloqSystemRef:
    """The nearest unit, the unit itself included, that has an iLOQ configuration (C19)."""
    lineage = unit_lineage(reads, unit_id)  # root first, the unit last
    # (id, username, encrypted password, customer code, service address) by id
    configured = {row[0]: row for row in reads.rows(_CONFIGURED, lineage=lineage)}
    for candidate in reversed(lineage):
        row = configured.get(candidate)
        if row is not None:
            return IloqSystemRef(
                candidate,
                IloqApiConfig(
                    username=row[1],
                    password=secrets.decrypt(row[2] or ""),
                    customer_code=row[3] or "",
                    service_address=row[4] or "",
                ),
            )
    return IloqSystemRef(lineage[0], None)
