"""Mechanical keys: the register of /v2/mechanical/keys and what the automats report about them.

Where a key is now (``storage``) follows the devices: an automat that reports a
key inside one of its lockers, by the key's id or its RFID, puts the key there;
an automat that reports it removed makes it away. The handlers below run inside
the transaction that applies the device event (the container's device-event and
inventory handlers, service_layer/wiring.py), so the register and the lockers
change together.
Every write of ``mechanical_keys`` goes through the ORM (``MechanicalKey``) in
this module; other features call :func:`hand_over` and :func:`back_to_manual`
rather than updating the table (docs/persistence.md).

Contracts are not part of this module; they plug in through two hooks on the
container's wiring: ``target_storage_resolvers`` (F9: the storage of the
contract a key is in or next due for) and ``key_delete_hooks`` (F8: refuse, or
delete the key's active and future contracts first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.device_protocol import LockerInventory
from keyautomat.adapters.orm_mechanical import mechanical_keys as mk
from keyautomat.domain.devices import AutomatEvent, AutomatEventType
from keyautomat.domain.errors import Conflict, InvalidInput, NotFound
from keyautomat.domain.ids import new_object_id
from keyautomat.domain.mechanical import (
    MechanicalKey,
    Storage,
    check_key_id,
    device_rfid,
    normalize_rfid,
)
from keyautomat.domain.model import LifecycleState, Product
from keyautomat.service_layer import lockers
from keyautomat.service_layer.automats import find_automat
from keyautomat.service_layer.pagination import Page, PageRequest, fetch_page
from keyautomat.service_layer.principal import Principal, in_scope
from keyautomat.service_layer.wiring import Wiring, wiring_of

SELECTED_DEVICE = "1"
SELECTED_MANUAL = "2"


def root_unit_of(path: str) -> str:
    """The root organization of a unit path ``/root/child/.../``."""
    return path.split("/")[1]


# --- reading ----------------------------------------------------------------------------


def get_key(session: Session, principal: Principal, key_id: str) -> MechanicalKey:
    # Ids are unique per root organization, and a caller's scope lies in one root.
    key = session.scalars(
        select(MechanicalKey).where(
            mk.c.id == key_id, in_scope(mk.c.organization_unit_id, principal)
        )
    ).first()
    if key is None:
        raise NotFound("Mechanical key")
    return key


def list_keys(
    session: Session,
    principal: Principal,
    page: PageRequest,
    *,
    search: str | None = None,
    selected_storage: str | None = None,
    automat_id: str | None = None,
    organization_unit_id: str | None = None,
) -> Page[MechanicalKey]:
    stmt = select(MechanicalKey).where(in_scope(mk.c.organization_unit_id, principal))
    if search:
        needle = search.lower()
        matches: list[ColumnElement[bool]] = [
            func.lower(column).contains(needle, autoescape=True)
            for column in (mk.c.id, mk.c.name, mk.c.rfid_hex)
        ]
        stmt = stmt.where(or_(*matches))
    if selected_storage not in (None, ""):
        if selected_storage == SELECTED_DEVICE:
            stmt = stmt.where(mk.c.selected_automat_id.is_not(None))
        elif selected_storage == SELECTED_MANUAL:
            stmt = stmt.where(mk.c.selected_manual_info.is_not(None))
        else:
            raise InvalidInput("selectedStorage", "must be 1 (device) or 2 (manual storage)")
    if automat_id not in (None, ""):
        stmt = stmt.where(mk.c.selected_automat_id == automat_id)
    if organization_unit_id not in (None, ""):
        assert organization_unit_id is not None
        principal.scoped_unit(session, organization_unit_id, "organizationUnitId")
        stmt = stmt.where(mk.c.organization_unit_id == organization_unit_id)
    return fetch_page(session, stmt.order_by(mk.c.created_at, mk.c.id, mk.c.object_id), page)


def target_storages(
    session: Session, keys: Sequence[MechanicalKey], now: datetime
) -> dict[str, Storage]:
    """F9 for several keys at once, by ``object_id``: a contract's storage, else the selected."""
    result = {key.object_id: key.selected for key in keys}
    for resolve in wiring_of(session).target_storage_resolvers:
        result.update(resolve(session, keys, now))
    return result


# --- changing ---------------------------------------------------------------------------


def _selectable(session: Session, principal: Principal, storage: Storage, field: str) -> Storage:
    """A selected storage must be a live mechanical-key automat the caller can use (D4)."""
    if storage.automat_id is None:
        return storage
    automat = find_automat(
        session,
        orm.automats.c.id == storage.automat_id,
        in_scope(orm.automats.c.organization_unit_id, principal),
    )
    if automat is None:
        raise InvalidInput(f"{field}.automatId", "does not name an automat you can use")
    if automat.product != Product.KEY30:
        raise InvalidInput(
            f"{field}.automatId", "is not a key30 automat (mechanical keys live in key30 automats)"
        )
    if automat.lifecycle_state == LifecycleState.DEACTIVATED:
        raise InvalidInput(f"{field}.automatId", "names an uninstalled automat")
    return storage


def create_key(
    session: Session,
    principal: Principal,
    *,
    key_id: str,
    name: str | None,
    organization_unit_id: str | None,
    rfid_hex: str | None,
    selected: Storage,
    shared: bool,
    away: bool,
    now: datetime,
) -> MechanicalKey:
    check_key_id(key_id)
    rfid = normalize_rfid(rfid_hex)
    if organization_unit_id is not None:
        unit = principal.scoped_unit(session, organization_unit_id, "organizationUnitId")
    else:
        unit = principal.own_unit(session)
    selected = _selectable(session, principal, selected, "selectedStorage")
    root = root_unit_of(unit.path)
    if _find_by_id(session, root, key_id) is not None:
        raise Conflict(f"A mechanical key with the same keyId {key_id!r} already exists")
    key = MechanicalKey(
        object_id=new_object_id(),
        id=key_id,
        root_unit_id=root,
        organization_unit_id=unit.id,
        name=name,
        rfid_hex=rfid,
        selected=selected,
        shared=shared,
        created_at=now,
    )
    session.add(key)
    try:
        session.flush()
    except IntegrityError:
        # Another request created the same id between our check and this insert.
        raise Conflict(f"A mechanical key with the same keyId {key_id!r} already exists") from None
    reported = _reported_locker(session, root, key_id, rfid)
    if reported is not None:
        # An automat already reports this key inside: the device is the physical truth.
        _place(session, key, *reported)
    elif not away:
        key.put_in(selected)
        session.flush()
    return key


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    """A PATCH: ``given`` names the nullable fields present in the body (null clears them)."""

    name: str | None = None
    rfid_hex: str | None = None
    selected: Storage | None = None
    shared: bool | None = None
    given: frozenset[str] = field(default_factory=frozenset)


def update_key(
    session: Session, principal: Principal, key_id: str, change: KeyUpdate
) -> MechanicalKey:
    key = get_key(session, principal, key_id)
    if "rfid_hex" in change.given:
        key.rfid_hex = normalize_rfid(change.rfid_hex)
        stored = key.storage
        if key.rfid_hex is not None and (stored is None or not stored.is_device):
            # A tag given now may be one an automat already reports inside a locker.
            reported = _reported_locker(session, key.root_unit_id, key.id, key.rfid_hex)
            if reported is not None:
                _place(session, key, *reported)
    if "name" in change.given:
        key.name = change.name
    selected = key.selected
    if change.selected is not None:
        selected = _selectable(session, principal, change.selected, "selectedStorage")
    # ``shared: null`` means the default, false; absent keeps what the key has.
    shared = bool(change.shared) if "shared" in change.given else key.shared
    old = key.selected
    key.select_storage(selected, shared=shared)
    storage = key.storage
    if storage is not None and storage == old and not old.is_device and not selected.is_device:
        # A manual key sitting at its home follows the home's new description; keys
        # in automats move only when a device reports them.
        key.put_in(selected)
    _point_locker(session, key)
    session.flush()
    return key


def delete_key(
    session: Session,
    principal: Principal,
    key_id: str,
    *,
    delete_active_contracts: bool,
    now: datetime,
) -> None:
    key = get_key(session, principal, key_id)
    for hook in wiring_of(session).key_delete_hooks:
        hook(session, key, delete_active_contracts, now)
    session.delete(key)
    session.flush()


def _by_object_id(session: Session, object_id: str) -> MechanicalKey:
    key = session.get(MechanicalKey, object_id)
    if key is None:
        raise NotFound("Mechanical key")
    return key


def hand_over(session: Session, object_id: str) -> None:
    """Staff handed the key to its user (F11): it leaves its storage and is away."""
    _by_object_id(session, object_id).take_away()
    session.flush()


def back_to_manual(session: Session, object_id: str, manual_info: str) -> None:
    """Staff took the key back (F11): it is stored at the manual place ``manual_info``."""
    _by_object_id(session, object_id).put_in(Storage.manual(manual_info))
    session.flush()


# --- what the automats report -----------------------------------------------------------


def _find_by_id(session: Session, root: str, key_id: str) -> MechanicalKey | None:
    return session.scalars(
        select(MechanicalKey).where(mk.c.root_unit_id == root, mk.c.id == key_id)
    ).first()


def _find_reported(
    session: Session, automat_id: str, root: str, key_id: str | None, rfid: str | None
) -> MechanicalKey | None:
    """The key a device names, by id first, then by RFID (home automat first, then oldest)."""
    if key_id is not None:
        key = _find_by_id(session, root, key_id)
        if key is not None:
            return key
    rfid_hex = device_rfid(rfid)
    if rfid_hex is None:
        return None
    return session.scalars(
        select(MechanicalKey)
        .where(mk.c.root_unit_id == root, mk.c.rfid_hex == rfid_hex)
        # CASE rather than ordering by the comparison: manual keys compare as NULL,
        # which PostgreSQL would sort first in descending order.
        .order_by(case((mk.c.selected_automat_id == automat_id, 0), else_=1), mk.c.created_at)
    ).first()


def _root_of_automat(session: Session, automat_id: str) -> str | None:
    a, ou = orm.automats, orm.organization_units
    path = session.scalar(
        select(ou.c.path).join(a, a.c.organization_unit_id == ou.c.id).where(a.c.id == automat_id)
    )
    return root_unit_of(path) if path is not None else None


def _reported_locker(
    session: Session, root: str, key_id: str, rfid_hex: str | None
) -> tuple[str, int] | None:
    """The locker of this organization's automats that reports holding ``key_id``, or a key
    with the tag ``rfid_hex`` (a device that reads only tags): by id first."""
    lk, a, ou = orm.lockers, orm.automats, orm.organization_units
    named = lk.c.key_id == key_id
    if rfid_hex is not None:
        named = or_(named, lk.c.key_rfid == rfid_hex)
    row = session.execute(
        select(lk.c.automat_id, lk.c.locker_index)
        .join(a, a.c.id == lk.c.automat_id)
        .join(ou, ou.c.id == a.c.organization_unit_id)
        .where(
            named,
            lk.c.is_key_inside.is_(True),
            ou.c.path.startswith(f"/{root}/", autoescape=True),
        )
        .order_by(case((lk.c.key_id == key_id, 0), else_=1), lk.c.automat_id, lk.c.locker_index)
    ).first()
    return (row.automat_id, row.locker_index) if row is not None else None


def _key_in_locker(session: Session, automat_id: str, index: int) -> MechanicalKey | None:
    return session.scalars(
        select(MechanicalKey).where(
            mk.c.stored_automat_id == automat_id, mk.c.stored_locker_index == index
        )
    ).first()


def _place(session: Session, key: MechanicalKey, automat_id: str, index: int) -> None:
    if key.stored_automat_id != automat_id or key.stored_locker_index != index:
        previous = _key_in_locker(session, automat_id, index)
        if previous is not None and previous is not key:
            previous.take_away()
        key.take_away()
        # The old occupant must leave the unique (automat, locker) slot before the new one enters.
        session.flush()
        key.put_in(Storage.device(automat_id), index)
    _point_locker(session, key)
    session.flush()


def _point_locker(session: Session, key: MechanicalKey) -> None:
    """The locker holding the key shows our id and name (the device may know only the RFID)."""
    if key.stored_automat_id is None or key.stored_locker_index is None:
        return
    lockers.point_at_key(session, key.stored_automat_id, key.stored_locker_index, key.id, key.name)


def on_automat_event(session: Session, event: AutomatEvent) -> None:
    """key-inserted puts the named key into the locker; key-removed makes it away."""
    if event.type not in (AutomatEventType.KEY_INSERTED, AutomatEventType.KEY_REMOVED):
        return
    if event.locker_index is None:
        return
    root = _root_of_automat(session, event.automat_id)
    if root is None:
        return
    rfid = event.data.get("rfid")
    key = _find_reported(
        session, event.automat_id, root, event.key_id, rfid if isinstance(rfid, str) else None
    )
    if event.type == AutomatEventType.KEY_INSERTED:
        if key is not None:
            _place(session, key, event.automat_id, event.locker_index)
        return
    if key is None and event.key_id is None and rfid is None:
        # A sensor without a reader: whatever our books hold in that locker left it.
        key = _key_in_locker(session, event.automat_id, event.locker_index)
    if key is not None:
        key.take_away()
        session.flush()


def on_inventory(session: Session, automat_id: str, inventory: LockerInventory) -> None:
    """A full locker report: reported keys are in their lockers, the automat's others are away."""
    root = _root_of_automat(session, automat_id)
    if root is None:
        return
    placed: dict[str, tuple[int, MechanicalKey]] = {}
    for locker in inventory.lockers:
        if not locker.key_inside:
            continue
        key = _find_reported(session, automat_id, root, locker.key_id, locker.rfid)
        if key is not None and key.object_id not in placed:
            placed[key.object_id] = (locker.locker_index, key)
    here = session.scalars(select(MechanicalKey).where(mk.c.stored_automat_id == automat_id)).all()
    for key in here:
        spot = placed.get(key.object_id)
        if spot is None or spot[0] != key.stored_locker_index:
            key.take_away()
    for _index, key in placed.values():
        if key.stored_automat_id is not None and key.stored_automat_id != automat_id:
            key.take_away()
    # Vacate every slot before filling any: the (automat, locker) index is unique.
    session.flush()
    for index, key in placed.values():
        key.put_in(Storage.device(automat_id), index)
    session.flush()
    for _index, key in placed.values():
        _point_locker(session, key)


def register(wiring: Wiring) -> None:
    """Follow the automats' reports (``bootstrap`` calls this, before the contracts)."""
    wiring.device_event_handlers.append(on_automat_event)
    wiring.inventory_handlers.append(on_inventory)
