"""``GET /iloq/accessRights``: the access rights a caller may put into its contracts (C19).

The rights come from the locking system serving the caller's unit (the nearest
unit up the tree with an ``iloqApiUser``) and are cached per system for a few
minutes, so a busy integration does not hammer iLOQ. Only API-enabled rights
are listed: iLOQ refuses to program any other, so offering them would only
produce contracts that fail at the automat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from keyautomat.domain.errors import InvalidInput
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.iloq import (
    AccessRight,
    IloqPort,
    IloqSystemRef,
    filter_access_rights,
)
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal


class IloqSystemsLookup(Protocol):
    async def resolve(self, unit_id: str) -> IloqSystemRef: ...

    def port(self, system: IloqSystemRef) -> IloqPort: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    rights: list[AccessRight]
    expires: datetime


class AccessRightsCache:
    """Access rights per (owning unit, default-only flag), each kept for ``ttl_seconds``."""

    def __init__(self, ttl_seconds: float, clock: Clock) -> None:
        self.ttl = timedelta(seconds=ttl_seconds)
        self.clock = clock
        self._entries: dict[tuple[str, bool], _Entry] = {}

    def get(self, owner_unit_id: str, default_only: bool) -> list[AccessRight] | None:
        entry = self._entries.get((owner_unit_id, default_only))
        if entry is None or entry.expires <= self.clock.now():
            return None
        return entry.rights

    def put(self, owner_unit_id: str, default_only: bool, rights: list[AccessRight]) -> None:
        self._entries[(owner_unit_id, default_only)] = _Entry(rights, self.clock.now() + self.ttl)

    def invalidate(self, owner_unit_id: str | None = None) -> None:
        """Forget one system's rights, or every system's when no unit is named."""
        if owner_unit_id is None:
            self._entries.clear()
            return
        for key in [k for k in self._entries if k[0] == owner_unit_id]:
            del self._entries[key]


async def list_access_rights(
    principal: Principal,
    page: PageRequest,
    *,
    search: str | None,
    default_only: bool,
    systems: IloqSystemsLookup,
    cache: AccessRightsCache,
) -> Page[AccessRight]:
    """One page of the caller's system's API-enabled rights, by name; iLOQ errors propagate."""
    rights = await _usable_rights(principal, default_only, systems, cache)
    matching = filter_access_rights(rights, search=search, default_only=default_only)
    items = matching[page.offset : page.offset + page.limit]
    return Page(
        items,
        page.offset + len(items),
        page.limit,
        has_next=page.offset + len(items) < len(matching),
    )


async def check_access_right_ids(
    access_right_ids: Sequence[str],
    principal: Principal,
    *,
    systems: IloqSystemsLookup,
    cache: AccessRightsCache,
) -> None:
    """Refuse, naming ``accessRightIds.N``, a right the caller's system would not program.

    The same list as ``GET /iloq/accessRights`` (API-enabled rights, cached), so a
    contract that would fail at the automat with the guest standing there fails
    at creation instead.
    """
    if not access_right_ids:
        return
    known = {r.id for r in await _usable_rights(principal, False, systems, cache)}
    for index, right_id in enumerate(access_right_ids):
        if right_id not in known:
            raise InvalidInput(f"accessRightIds.{index}", "unknown access right")


async def _usable_rights(
    principal: Principal, default_only: bool, systems: IloqSystemsLookup, cache: AccessRightsCache
) -> list[AccessRight]:
    system = await systems.resolve(principal.organization_unit_id)
    rights = cache.get(system.owner_unit_id, default_only)
    if rights is None:
        listed = await systems.port(system).list_access_rights(default_only=default_only)
        rights = [r for r in listed if r.api_enabled]
        cache.put(system.owner_unit_id, default_only, rights)
    return rights
