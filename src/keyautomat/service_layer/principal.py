"""The authenticated caller and the organization-subtree rules that scope everything it does."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, bindparam, select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.db import PlainQuery, Reads
from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.errors import Forbidden, InvalidInput, NotFound
from keyautomat.domain.model import OrganizationUnit, Role


@dataclass(frozen=True, slots=True)
class Principal:
    """Who acts: a service account (role admin or integration), or a console user (role
    admin, operator or viewer; ``service_account_id`` is then the user's id)."""

    service_account_id: str
    organization_unit_id: str
    organization_unit_path: str
    organization_unit_type: int
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_platform_operator(self) -> bool:
        """An admin of a root unit (made by ``keyautomat init``): may create type-0 units and
        admin accounts inside its tree. Units created through the API always get a parent,
        so no API caller can make itself a root."""
        return self.is_admin and self.organization_unit_path.count("/") == 2

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden()

    def require_operator(self) -> None:
        """Running the sites (alarms, staff handovers, resending a message): admins, and the
        console's operators."""
        if self.role not in (ConsoleRole.ADMIN, ConsoleRole.OPERATOR):
            raise Forbidden()

    def sees(self, unit_path: str) -> bool:
        return unit_path.startswith(self.organization_unit_path)

    def scoped_unit(self, session: Session, unit_id: str, field: str) -> OrganizationUnit:
        """Resolve a unit id given in a request body: unknown or out of scope is a 400."""
        unit = session.get(OrganizationUnit, unit_id)
        if unit is None or not self.sees(unit.path):
            raise InvalidInput(field, "does not name an organization unit you can use")
        return unit

    def own_unit(self, session: Session) -> OrganizationUnit:
        unit = session.get(OrganizationUnit, self.organization_unit_id)
        if unit is None:  # the unit of a live account cannot vanish; keep the message clear
            raise NotFound("Organization unit")
        return unit


def in_scope(column: ColumnElement[str], principal: Principal) -> ColumnElement[bool]:
    """``column`` (an organization_unit_id) lies in the caller's subtree."""
    subtree = select(orm.organization_units.c.id).where(
        orm.organization_units.c.path.startswith(principal.organization_unit_path, autoescape=True)
    )
    return column.in_(subtree)


def in_scope_bound(column: ColumnElement[str]) -> ColumnElement[bool]:
    """:func:`in_scope` for a statement built once: the caller's subtree comes from the
    bound parameter ``scope`` (see :func:`scope_params`)."""
    subtree = select(orm.organization_units.c.id).where(
        orm.organization_units.c.path.like(bindparam("scope"), escape="/")
    )
    return column.in_(subtree)


def scope_params(principal: Principal) -> dict[str, str]:
    """The bound parameters of :func:`in_scope_bound` for this caller."""
    path = principal.organization_unit_path
    escaped = path.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return {"scope": escaped + "%"}


_UNIT_PATH = PlainQuery(
    select(orm.organization_units.c.path).where(orm.organization_units.c.id == bindparam("unit_id"))
)


def unit_lineage(reads: Reads, unit_id: str) -> list[str]:
    """The ids of the unit's ancestors and the unit, root first, read off its path; 404 when
    there is no such unit. Asked with every webhook event and iLOQ creation: one plain row."""
    path = reads.scalar(_UNIT_PATH, unit_id=unit_id)
    if path is None:
        raise NotFound("Organization unit")
    return [part for part in path.split("/") if part]
