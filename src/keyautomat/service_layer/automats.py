"""Automats: install, read, change, replace hardware, uninstall (spec endpoints §4, gaps D1-D5)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.ids import format_automat_id, new_pincode
from keyautomat.domain.model import Automat, Group, GroupType, Product
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal, in_scope

# Later features (contracts) register checks that refuse an uninstall while the
# automat is still in use; each returns a reason, or None when it has no objection.
UninstallGuard = Callable[[Session, Automat], str | None]
uninstall_guards: list[UninstallGuard] = []


def valid_timezone(value: str, field: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(field, "must be an IANA time zone such as Europe/Helsinki") from None
    return value


def get_automat(session: Session, principal: Principal, automat_id: str) -> Automat:
    automat = session.scalars(
        select(Automat).where(
            orm.automats.c.id == automat_id,
            in_scope(orm.automats.c.organization_unit_id, principal),
        )
    ).first()
    if automat is None:
        raise NotFound("Automat")
    return automat


@dataclass(frozen=True, slots=True)
class LockerView:
    locker_index: int
    is_key_inside: bool
    key_id: str | None
    key_name: str | None


@dataclass(frozen=True, slots=True)
class AutomatView:
    """An automat as readers see it, loaded with plain SQL (lists are the hot read path)."""

    id: str
    name: str
    label: str | None
    address: str | None
    postal_code: str | None
    postal_office: str | None
    timezone: str
    hw_id: str | None
    installation_pincode: str | None
    lifecycle_state: str
    groups: list[tuple[str, str]]
    lockers: list[LockerView]


_VIEW_COLUMNS = (
    orm.automats.c.id,
    orm.automats.c.name,
    orm.automats.c.label,
    orm.automats.c.address,
    orm.automats.c.postal_code,
    orm.automats.c.postal_office,
    orm.automats.c.timezone,
    orm.automats.c.hw_id,
    orm.automats.c.installation_pincode,
    orm.automats.c.lifecycle_state,
)


def _views(session: Session, rows: Sequence[Any]) -> list[AutomatView]:
    """Attach lockers and groups to automat rows with one query each (no per-row queries)."""
    ids = [r.id for r in rows]
    lockers: dict[str, list[LockerView]] = {i: [] for i in ids}
    groups: dict[str, list[tuple[str, str]]] = {i: [] for i in ids}
    if ids:
        lk = orm.lockers
        for locker in session.execute(
            select(
                lk.c.automat_id, lk.c.locker_index, lk.c.is_key_inside, lk.c.key_id, lk.c.key_name
            )
            .where(lk.c.automat_id.in_(ids))
            .order_by(lk.c.automat_id, lk.c.locker_index)
        ):
            lockers[locker.automat_id].append(
                LockerView(
                    locker.locker_index, locker.is_key_inside, locker.key_id, locker.key_name
                )
            )
        ag, g = orm.automat_groups, orm.groups
        for member in session.execute(
            select(ag.c.automat_id, g.c.id, g.c.name)
            .join(g, g.c.id == ag.c.group_id)
            .where(ag.c.automat_id.in_(ids))
            .order_by(g.c.name, g.c.id)
        ):
            groups[member.automat_id].append((member.id, member.name))
    return [AutomatView(*(*r, groups[r[0]], lockers[r[0]])) for r in rows]


def list_automats(session: Session, principal: Principal, page: PageRequest) -> Page[AutomatView]:
    a = orm.automats
    rows = session.execute(
        select(*_VIEW_COLUMNS)
        .where(in_scope(a.c.organization_unit_id, principal))
        .order_by(a.c.created_at, a.c.id)
        .offset(page.offset)
        .limit(page.limit + 1)
    ).all()
    views = _views(session, rows[: page.limit])
    return Page(views, page.offset + len(views), page.limit, len(rows) > page.limit)


def view_automat(session: Session, principal: Principal, automat_id: str) -> AutomatView:
    a = orm.automats
    rows = session.execute(
        select(*_VIEW_COLUMNS).where(
            a.c.id == automat_id, in_scope(a.c.organization_unit_id, principal)
        )
    ).all()
    if not rows:
        raise NotFound("Automat")
    return _views(session, rows)[0]


def _next_automat_id(session: Session) -> str:
    # The counter row is updated in place: the row lock (PostgreSQL) or the
    # database write lock (SQLite) makes concurrent installs take distinct numbers.
    value = session.execute(
        update(orm.id_counters)
        .where(orm.id_counters.c.name == "automat")
        .values(value=orm.id_counters.c.value + 1)
        .returning(orm.id_counters.c.value)
    ).scalar_one()
    return format_automat_id(value)


def _free_installation_pincode(session: Session) -> str:
    while True:
        code = new_pincode()
        taken = session.scalar(
            select(orm.automats.c.id).where(orm.automats.c.installation_pincode == code)
        )
        if taken is None:
            return code


def _device_group(session: Session, principal: Principal, group_id: str, field: str) -> Group:
    group = session.scalars(
        select(Group).where(
            orm.groups.c.id == group_id, in_scope(orm.groups.c.organization_unit_id, principal)
        )
    ).first()
    if group is None:
        raise InvalidInput(field, "does not name a group you can use")
    if group.type != GroupType.DEVICE:
        raise InvalidInput(field, "names a key group; automats join device groups (type 1)")
    return group


@dataclass(frozen=True, slots=True)
class Location:
    address: str | None = None
    postal_code: str | None = None
    postal_office: str | None = None


def install_automat(
    session: Session,
    principal: Principal,
    *,
    name: str,
    organization_unit_id: str | None,
    label: str | None,
    group_id: str | None,
    location: Location,
    timezone: str,
    product: str,
    now: datetime,
) -> Automat:
    principal.require_admin()
    unit_id = principal.organization_unit_id
    if organization_unit_id is not None:
        unit_id = principal.scoped_unit(session, organization_unit_id, "organizationUnitId").id
    group = _device_group(session, principal, group_id, "groupId") if group_id else None
    automat = Automat(
        id=_next_automat_id(session),
        organization_unit_id=unit_id,
        name=name,
        label=label,
        address=location.address,
        postal_code=location.postal_code,
        postal_office=location.postal_office,
        timezone=valid_timezone(timezone, "timezone"),
        product=Product(product),
        created_at=now,
    )
    automat.installation_pincode = _free_installation_pincode(session)
    if group is not None:
        automat.set_groups([group])
    session.add(automat)
    session.flush()
    return automat


def update_automat(
    session: Session,
    principal: Principal,
    automat_id: str,
    *,
    name: str | None = None,
    label: str | None = None,
    group_ids: list[str] | None = None,
    timezone: str | None = None,
    location: Location | None = None,
) -> Automat:
    principal.require_admin()
    automat = get_automat(session, principal, automat_id)
    if name is not None:
        automat.name = name
    if label is not None:
        automat.label = label
    if timezone is not None:
        automat.timezone = valid_timezone(timezone, "timezone")
    if location is not None:
        # Only the sub-fields given are changed (endpoints.md §4.4).
        if location.address is not None:
            automat.address = location.address
        if location.postal_code is not None:
            automat.postal_code = location.postal_code
        if location.postal_office is not None:
            automat.postal_office = location.postal_office
    if group_ids is not None:
        automat.set_groups(
            [
                _device_group(session, principal, gid, f"groups.{index}")
                for index, gid in enumerate(group_ids)
            ]
        )
    session.flush()
    return automat


def replace_automat(session: Session, principal: Principal, automat_id: str) -> Automat:
    principal.require_admin()
    automat = get_automat(session, principal, automat_id)
    automat.replace_hardware()
    automat.installation_pincode = _free_installation_pincode(session)
    session.flush()
    return automat


def uninstall_automat(session: Session, principal: Principal, automat_id: str) -> None:
    principal.require_admin()
    automat = get_automat(session, principal, automat_id)
    for guard in uninstall_guards:
        reason = guard(session, automat)
        if reason is not None:
            raise InvalidInput("id", reason)
    automat.uninstall()
    session.flush()
