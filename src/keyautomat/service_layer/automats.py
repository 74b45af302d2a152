"""Automats: install, read, change, replace hardware, uninstall (spec endpoints §4, gaps D1-D5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.ids import format_automat_id, new_pincode
from keyautomat.domain.model import Automat, Group, GroupType, Product
from keyautomat.service_layer.pagination import Page, PageRequest, fetch_page
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


def list_automats(session: Session, principal: Principal, page: PageRequest) -> Page[Automat]:
    stmt = (
        select(Automat)
        .where(in_scope(orm.automats.c.organization_unit_id, principal))
        .order_by(orm.automats.c.created_at, orm.automats.c.id)
    )
    return fetch_page(session, stmt, page)


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
