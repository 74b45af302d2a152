"""Groups of automats (type 1) and of keys (type 2) (spec endpoints §5, gaps E1-E3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.model import Group, GroupType
from keyautomat.service_layer.pagination import Page, PageRequest, fetch_page
from keyautomat.service_layer.principal import Principal, in_scope


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str


def get_group(session: Session, principal: Principal, group_id: str) -> Group:
    group = session.scalars(
        select(Group).where(
            orm.groups.c.id == group_id, in_scope(orm.groups.c.organization_unit_id, principal)
        )
    ).first()
    if group is None:
        raise NotFound("Group")
    return group


def members_of(
    session: Session, groups: list[Group], principal: Principal
) -> dict[str, list[Member]]:
    """Members the caller may see, of several groups in one query (automats of device groups)."""
    result: dict[str, list[Member]] = {g.id: [] for g in groups}
    device_ids = [g.id for g in groups if g.type == GroupType.DEVICE]
    if device_ids:
        ag, a = orm.automat_groups, orm.automats
        rows = session.execute(
            select(ag.c.group_id, a.c.id, a.c.name)
            .join(a, a.c.id == ag.c.automat_id)
            .where(ag.c.group_id.in_(device_ids), in_scope(a.c.organization_unit_id, principal))
            .order_by(a.c.id)
        )
        for row in rows:
            result[row.group_id].append(Member(row.id, row.name))
    return result


def list_groups(
    session: Session,
    principal: Principal,
    page: PageRequest,
    *,
    customer_id: str | None = None,
    search: str | None = None,
) -> Page[Group]:
    stmt = select(Group).where(in_scope(orm.groups.c.organization_unit_id, principal))
    if customer_id is not None:
        stmt = stmt.where(orm.groups.c.customer_id == customer_id)
    if search:
        stmt = stmt.where(func.lower(orm.groups.c.name).contains(search.lower(), autoescape=True))
    return fetch_page(session, stmt.order_by(orm.groups.c.created_at, orm.groups.c.id), page)


def create_group(
    session: Session,
    principal: Principal,
    *,
    name: str,
    customer_id: str,
    type: int,  # noqa: A002 - the API's own word
    now: datetime,
) -> Group:
    principal.require_admin()
    try:
        group_type = GroupType(type)
    except ValueError:
        raise InvalidInput("type", "must be 1 (device group) or 2 (key group)") from None
    group = Group(
        name=name,
        customer_id=customer_id,
        type=group_type,
        organization_unit_id=principal.organization_unit_id,
        created_at=now,
    )
    session.add(group)
    session.flush()
    return group


def update_group(
    session: Session,
    principal: Principal,
    group_id: str,
    *,
    name: str | None,
    customer_id: str | None,
) -> Group:
    principal.require_admin()
    group = get_group(session, principal, group_id)
    if name is not None:
        group.name = name
    if customer_id is not None:
        group.customer_id = customer_id
    session.flush()
    return group


def delete_group(session: Session, principal: Principal, group_id: str) -> None:
    """Deleting a group in use is allowed; its memberships go with it (gaps E3)."""
    principal.require_admin()
    group = get_group(session, principal, group_id)
    session.execute(orm.automat_groups.delete().where(orm.automat_groups.c.group_id == group.id))
    session.delete(group)
    session.flush()
