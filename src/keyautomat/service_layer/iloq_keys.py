"""The registry of iLOQ keys: which unit owns a key, whether it is blocked, which locker holds it.

``lockers.key_id``/``key_name`` and ``iloq_keys.automat_id``/``locker_index``
describe the same fact from both ends; only ``place_key`` and ``take_key``
change them, always together, so a locker holding an iLOQ key points at that
key and the key points back. A unique index on the key side makes a second key
in the same locker impossible even when two placements race.

``iloq_keys`` is written through the ORM (``IloqKey``), ``lockers`` with Core
statements through ``service_layer/lockers.py`` (docs/persistence.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm, orm_iloq
from keyautomat.domain.errors import Conflict, InvalidInput, NotFound
from keyautomat.domain.iloq import IloqKey, check_key_id, short_key_name
from keyautomat.service_layer import lockers
from keyautomat.service_layer.pagination import Page, PageRequest, fetch_page
from keyautomat.service_layer.principal import Principal, in_scope

log = logging.getLogger(__name__)


def register_key(
    session: Session,
    *,
    organization_unit_id: str,
    key_id: str,
    name: str | None = None,
    now: datetime,
) -> IloqKey:
    """Add a key to a unit; registering a key the unit already has returns it unchanged."""
    check_key_id(key_id, "id")
    existing = session.get(IloqKey, key_id)
    if existing is not None:
        if existing.organization_unit_id != organization_unit_id:
            raise Conflict(f"iLOQ key {key_id} is registered to another organization unit")
        return existing
    key = IloqKey(
        id=key_id,
        name=name or short_key_name(key_id),
        organization_unit_id=organization_unit_id,
        created_at=now,
    )
    session.add(key)
    session.flush()
    return key


def check_return_key_ids(key_ids: Sequence[str]) -> None:
    """The key ids a return contract names: well formed, each named once.

    Nothing is looked up and nothing is written. A key id registered to another
    organization and one nobody registered get the same answer, so the answer
    tells nothing about other tenants; and naming an id claims nothing, so no
    tenant can register a key id before its owner does. The key is registered
    when it arrives in the locker (:func:`receive_returned_key`, gaps.md C17).
    """
    seen: set[str] = set()
    for index, key_id in enumerate(key_ids):
        field = f"keyIds.{index}"
        check_key_id(key_id, field)
        if key_id in seen:
            raise InvalidInput(field, "repeats a key id given earlier")
        seen.add(key_id)


def receive_returned_key(
    session: Session,
    *,
    organization_unit_id: str,
    key_id: str,
    automat_id: str,
    locker_index: int,
    now: datetime,
) -> bool:
    """A key came back into a locker on a return contract of ``organization_unit_id``.

    A key nobody registered is registered in that unit, named by its id (C17),
    and placed in the locker. A key of the same organization tree is placed.
    A key registered to another organization is left as it is, its owner's:
    False, and the caller must not program it through this unit's system.
    """
    existing = session.get(IloqKey, key_id)
    if existing is None:
        register_key(
            session, organization_unit_id=organization_unit_id, key_id=key_id, name=key_id, now=now
        )
    elif _root_of(session, existing.organization_unit_id) != _root_of(
        session, organization_unit_id
    ):
        log.warning(
            "iLOQ key %s returned into %s/%s belongs to another organization; registry unchanged",
            key_id,
            automat_id,
            locker_index,
        )
        return False
    place_key(session, key_id, automat_id, locker_index)
    return True


def _root_of(session: Session, unit_id: str) -> str | None:
    """The id of the root unit of ``unit_id``'s tree (the first id of its path)."""
    path = session.scalar(
        select(orm.organization_units.c.path).where(orm.organization_units.c.id == unit_id)
    )
    return None if path is None else path.split("/")[1]


def keys_by_id(session: Session, key_ids: Sequence[str]) -> list[IloqKey]:
    if not key_ids:
        return []
    return list(
        session.scalars(select(IloqKey).where(orm_iloq.iloq_keys.c.id.in_(set(key_ids)))).all()
    )


def get_key(session: Session, principal: Principal, key_id: str) -> IloqKey:
    k = orm_iloq.iloq_keys
    key = session.scalars(
        select(IloqKey).where(k.c.id == key_id, in_scope(k.c.organization_unit_id, principal))
    ).first()
    if key is None:
        raise NotFound("iLOQ key")
    return key


def list_keys(session: Session, principal: Principal, page: PageRequest) -> Page[IloqKey]:
    k = orm_iloq.iloq_keys
    stmt = (
        select(IloqKey)
        .where(in_scope(k.c.organization_unit_id, principal))
        .order_by(k.c.created_at, k.c.id)
    )
    return fetch_page(session, stmt, page)


def place_key(session: Session, key_id: str, automat_id: str, locker_index: int) -> IloqKey:
    """The key is now inside this locker (reported by the device, or set up by an operator).

    Whatever the locker held before on our books, and wherever the key was
    before, gives way: the device's report is the physical truth.
    """
    key = session.get(IloqKey, key_id)
    if key is None:
        raise NotFound("iLOQ key")
    if key.automat_id == automat_id and key.locker_index == locker_index:
        if not lockers.point_at_key(session, automat_id, locker_index, key.id, key.name):
            raise NotFound("Locker")
        return key
    if key.is_stored:
        _take_out(session, key)
    if not lockers.point_at_key(session, automat_id, locker_index, key.id, key.name):
        raise NotFound("Locker")
    previous = session.scalars(
        select(IloqKey).where(
            orm_iloq.iloq_keys.c.automat_id == automat_id,
            orm_iloq.iloq_keys.c.locker_index == locker_index,
        )
    ).first()
    if previous is not None:
        previous.taken_out()
    # The old occupant must leave the unique (automat, locker) slot before the new one enters.
    session.flush()
    key.stored_in(automat_id, locker_index)
    session.flush()
    return key


def take_key(session: Session, key_id: str) -> IloqKey | None:
    """The key left the automats for good (fetched on a fetch contract, or taken by staff).

    No locker shows it any more, wherever the devices last reported it, and the
    registry holds it in no locker. A key the registry does not know (None) is
    only cleared from the lockers: a device can report a key nobody registered.
    """
    lockers.forget_key(session, key_id)
    key = session.get(IloqKey, key_id)
    if key is None:
        return None
    key.taken_out()
    session.flush()
    return key


def block_key(session: Session, principal: Principal, key_id: str) -> IloqKey:
    key = get_key(session, principal, key_id)
    key.block()
    session.flush()
    return key


def _take_out(session: Session, key: IloqKey) -> None:
    if key.automat_id is not None and key.locker_index is not None:
        lockers.empty(session, key.automat_id, key.locker_index, only_if_key=key.id)
    key.taken_out()
