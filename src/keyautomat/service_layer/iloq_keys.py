"""The registry of iLOQ keys: which unit owns a key, whether it is blocked, which locker holds it.

``lockers.key_id``/``key_name`` and ``iloq_keys.automat_id``/``locker_index``
describe the same fact from both ends; only ``place_key`` and ``take_key``
change them, always together, so a locker holding an iLOQ key points at that
key and the key points back. A unique index on the key side makes a second key
in the same locker impossible even when two placements race.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm, orm_iloq
from keyautomat.domain.errors import Conflict, InvalidInput, NotFound
from keyautomat.domain.iloq import IloqKey, check_key_id, short_key_name
from keyautomat.domain.model import Locker
from keyautomat.service_layer.pagination import Page, PageRequest, fetch_page
from keyautomat.service_layer.principal import Principal, in_scope


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


def keys_for_return(
    session: Session, principal: Principal, key_ids: Sequence[str], now: datetime
) -> list[IloqKey]:
    """The keys a return contract names, unknown ones registered in the caller's unit (C17).

    A new key's name is its id, as C17 decides; it is not blocked and not stored.
    A key of another organization is a bad reference (400), named by its index.
    """
    found = {k.id: k for k in keys_by_id(session, key_ids)}
    visible = _visible_unit_ids(
        session, principal, {k.organization_unit_id for k in found.values()}
    )
    result: list[IloqKey] = []
    for index, key_id in enumerate(key_ids):
        field = f"keyIds.{index}"
        check_key_id(key_id, field)
        if key_id in key_ids[:index]:
            raise InvalidInput(field, "repeats a key id given earlier")
        key = found.get(key_id)
        if key is None:
            key = IloqKey(
                id=key_id,
                name=key_id,
                organization_unit_id=principal.organization_unit_id,
                created_at=now,
            )
            session.add(key)
            found[key_id] = key
        elif key.organization_unit_id not in visible:
            raise InvalidInput(field, "does not name an iLOQ key you can use")
        result.append(key)
    session.flush()
    return result


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
    locker = session.get(Locker, (automat_id, locker_index))
    if locker is None:
        raise NotFound("Locker")
    if key.automat_id == automat_id and key.locker_index == locker_index:
        _point_locker_at(locker, key)
        session.flush()
        return key
    if key.is_stored:
        _take_out(session, key)
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
    _point_locker_at(locker, key)
    session.flush()
    return key


def take_key(session: Session, key_id: str) -> IloqKey:
    """The key left its locker (fetched, or removed by staff)."""
    key = session.get(IloqKey, key_id)
    if key is None:
        raise NotFound("iLOQ key")
    _take_out(session, key)
    session.flush()
    return key


def block_key(session: Session, principal: Principal, key_id: str) -> IloqKey:
    key = get_key(session, principal, key_id)
    key.block()
    session.flush()
    return key


def _point_locker_at(locker: Locker, key: IloqKey) -> None:
    locker.key_id = key.id
    locker.key_name = key.name
    locker.is_key_inside = True


def _take_out(session: Session, key: IloqKey) -> None:
    if key.automat_id is not None and key.locker_index is not None:
        locker = session.get(Locker, (key.automat_id, key.locker_index))
        if locker is not None and locker.key_id == key.id:
            locker.key_id = None
            locker.key_name = None
            locker.is_key_inside = False
    key.taken_out()


def _visible_unit_ids(session: Session, principal: Principal, unit_ids: set[str]) -> set[str]:
    if not unit_ids:
        return set()
    ou = orm.organization_units
    rows = session.execute(select(ou.c.id, ou.c.path).where(ou.c.id.in_(unit_ids))).all()
    return {row.id for row in rows if principal.sees(row.path)}
