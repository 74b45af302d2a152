"""Automats: install, read, change, replace hardware, uninstall (spec endpoints §4, gaps D1-D5).

``automats`` and ``automat_groups`` are written with Core statements only
(docs/persistence.md): the device gateway touches ``automats`` on every
message. ``Automat`` objects are plain domain objects loaded from a row; their
methods decide a change and the functions here write exactly the columns it
changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.db import PlainQuery, Reads, Statements
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.ids import format_automat_id, new_pincode
from keyautomat.domain.model import Automat, Group, GroupType, LifecycleState, Product
from keyautomat.domain.times import time_zone
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal, in_scope, in_scope_bound, scope_params
from keyautomat.service_layer.wiring import wiring_of

# Features (contracts) register checks that refuse an uninstall while the automat is
# still in use (``Wiring.uninstall_guards``): each returns a reason, or None.


a = orm.automats

# What an ``Automat`` holds; the stock counters kept by triggers are read where
# they are used (ranking), never through the object.
_LOAD = select(
    a.c.id,
    a.c.organization_unit_id,
    a.c.name,
    a.c.label,
    a.c.address,
    a.c.postal_code,
    a.c.postal_office,
    a.c.timezone,
    a.c.product,
    a.c.hw_id,
    a.c.installation_pincode,
    a.c.installation_pincode_issued_at,
    a.c.lifecycle_state,
    a.c.created_at,
    a.c.last_seen_at,
)


def _from_row(row: Row[*tuple[Any, ...]]) -> Automat:
    automat = Automat(
        id=row.id,
        organization_unit_id=row.organization_unit_id,
        name=row.name,
        label=row.label,
        address=row.address,
        postal_code=row.postal_code,
        postal_office=row.postal_office,
        timezone=row.timezone,
        product=Product(row.product),
        created_at=row.created_at,
    )
    automat.hw_id = row.hw_id
    automat.installation_pincode = row.installation_pincode
    automat.installation_pincode_issued_at = row.installation_pincode_issued_at
    automat.lifecycle_state = row.lifecycle_state
    automat.last_seen_at = row.last_seen_at
    return automat


def find_automat(session: Session, *criteria: ColumnElement[bool]) -> Automat | None:
    """The first automat (by id) that meets every criterion on ``automats``, or None."""
    row = session.execute(_LOAD.where(*criteria).order_by(a.c.id).limit(1)).first()
    return None if row is None else _from_row(row)


def get_automat(session: Session, principal: Principal, automat_id: str) -> Automat:
    automat = find_automat(
        session, a.c.id == automat_id, in_scope(a.c.organization_unit_id, principal)
    )
    if automat is None:
        raise NotFound("Automat")
    return automat


_PINCODE_FIELDS = ("installation_pincode", "installation_pincode_issued_at")


def _write(session: Session, automat: Automat, *fields: str) -> None:
    """Store these attributes of ``automat``: only what a change touched, so that two
    changes of different columns at once both stay."""
    session.execute(
        update(a)
        .where(a.c.id == automat.id)
        .values({field: getattr(automat, field) for field in fields})
    )


def _write_groups(session: Session, automat_id: str, groups: Sequence[Group]) -> None:
    """The automat's device-group membership becomes exactly ``groups``."""
    ag = orm.automat_groups
    session.execute(delete(ag).where(ag.c.automat_id == automat_id))
    if groups:
        session.execute(
            insert(ag), [{"automat_id": automat_id, "group_id": group.id} for group in groups]
        )


def bind_hardware(session: Session, automat: Automat, hw_id: str, code: str) -> bool:
    """Bind hardware presenting the installation pincode (gaps.md D1-D2). False when the
    code does not bind: it is wrong, or another device bound the automat with it first."""
    if not automat.bind(hw_id, code):
        return False
    result = session.execute(
        update(a)
        .where(
            a.c.id == automat.id,
            a.c.lifecycle_state == LifecycleState.WAITING_FOR_INSTALL,
            a.c.installation_pincode == code,
        )
        .values(
            hw_id=automat.hw_id,
            installation_pincode=automat.installation_pincode,
            installation_pincode_issued_at=automat.installation_pincode_issued_at,
            lifecycle_state=automat.lifecycle_state,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class LockerView:
    locker_index: int
    is_key_inside: bool
    key_id: str | None
    key_name: str | None


@dataclass(frozen=True, slots=True)
class AutomatView:
    """An automat as the console sees it (the API writes :class:`AutomatRows` straight out)."""

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


# The columns of an automat row of ``AutomatRows``, in this order.
_VIEW_COLUMNS = (
    a.c.id,
    a.c.name,
    a.c.label,
    a.c.address,
    a.c.postal_code,
    a.c.postal_office,
    a.c.timezone,
    a.c.hw_id,
    a.c.installation_pincode,
    a.c.lifecycle_state,
)
_lk, _ag, _g, _ou = orm.lockers, orm.automat_groups, orm.groups, orm.organization_units
# The hot reads (GET /v2/automats and /v2/automats/{id}): built once, plain rows
# (adapters/db.py, PlainQuery), the caller's subtree a bound parameter. Untyped: a page
# has thousands of locker rows, and none of their columns needs converting to be used.
_PAGE = PlainQuery(
    select(*_VIEW_COLUMNS)
    .where(in_scope_bound(a.c.organization_unit_id))
    .order_by(a.c.created_at, a.c.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset")),
    typed=False,
)
# One automat, and its unit's path for the scope check (an index lookup, where the
# subtree subquery of ``in_scope_bound`` scans the units).
_ONE = PlainQuery(
    select(*_VIEW_COLUMNS, _ou.c.path)
    .join(_ou, _ou.c.id == a.c.organization_unit_id)
    .where(a.c.id == bindparam("automat_id")),
    typed=False,
)
_LOCKERS = PlainQuery(
    select(_lk.c.automat_id, _lk.c.locker_index, _lk.c.is_key_inside, _lk.c.key_id, _lk.c.key_name)
    .where(_lk.c.automat_id.in_(bindparam("ids", expanding=True)))
    .order_by(_lk.c.automat_id, _lk.c.locker_index),
    typed=False,
)
# The groups' unit paths come along: only groups in the caller's subtree are shown.
_GROUPS = PlainQuery(
    select(_ag.c.automat_id, _g.c.id, _g.c.name, _ou.c.path)
    .join(_g, _g.c.id == _ag.c.group_id)
    .join(_ou, _ou.c.id == _g.c.organization_unit_id)
    .where(_ag.c.automat_id.in_(bindparam("ids", expanding=True)))
    .order_by(_g.c.name, _g.c.id),
    typed=False,
)


@dataclass(frozen=True, slots=True)
class AutomatRows:
    """Automats as readers see them, as plain rows (no object per row: lists are the hot
    read path).

    ``automats``: (id, name, label, address, postal_code, postal_office, timezone,
    hw_id, installation_pincode, lifecycle_state); ``lockers`` by automat id:
    (automat_id, locker_index, is_key_inside, key_id, key_name) by locker index, with
    ``is_key_inside`` 0 or 1 on SQLite; ``groups`` by automat id: (automat_id, id,
    name, unit path) by name, those in the caller's subtree. The ``Automat`` schema of
    the API is made of these alone.
    """

    automats: list[tuple[Any, ...]]
    lockers: dict[str, list[tuple[Any, ...]]]
    groups: dict[str, list[tuple[Any, ...]]]

    def views(self) -> list[AutomatView]:
        return [
            AutomatView(
                id=row[0],
                name=row[1],
                label=row[2],
                address=row[3],
                postal_code=row[4],
                postal_office=row[5],
                timezone=row[6],
                hw_id=row[7],
                installation_pincode=row[8],
                lifecycle_state=row[9],
                groups=[(g[1], g[2]) for g in self.groups.get(row[0], ())],
                lockers=[
                    LockerView(lk[1], bool(lk[2]), lk[3], lk[4])
                    for lk in self.lockers.get(row[0], ())
                ],
            )
            for row in self.automats
        ]


def _with_lockers_and_groups(
    reads: Reads, rows: list[tuple[Any, ...]], principal: Principal
) -> AutomatRows:
    """Attach lockers and groups to automat rows with one query each (no per-row queries)."""
    lockers: dict[str, list[tuple[Any, ...]]] = {}
    groups: dict[str, list[tuple[Any, ...]]] = {}
    if rows:
        ids = [row[0] for row in rows]
        for locker in reads.rows(_LOCKERS, ids=ids):
            lockers.setdefault(locker[0], []).append(locker)
        for member in reads.rows(_GROUPS, ids=ids):
            if principal.sees(member[3]):
                groups.setdefault(member[0], []).append(member)
    return AutomatRows(rows, lockers, groups)


def automat_page_rows(
    reads: Reads, principal: Principal, page: PageRequest
) -> tuple[AutomatRows, Page[tuple[Any, ...]]]:
    """One page of the caller's automats: their rows, and the page (its items the rows)."""
    rows = reads.rows(_PAGE, limit=page.limit + 1, offset=page.offset, **scope_params(principal))
    shown = rows[: page.limit]
    found = _with_lockers_and_groups(reads, shown, principal)
    return found, Page(shown, page.offset + len(shown), page.limit, len(rows) > page.limit)


def automat_rows(reads: Reads, principal: Principal, automat_id: str) -> AutomatRows:
    """One automat of the caller's, as :class:`AutomatRows`; NotFound outside its scope."""
    rows = reads.rows(_ONE, automat_id=automat_id)
    if not rows or not principal.sees(rows[0][-1]):
        raise NotFound("Automat")
    return _with_lockers_and_groups(reads, [rows[0][:-1]], principal)


def list_automats(session: Session, principal: Principal, page: PageRequest) -> Page[AutomatView]:
    found, listed = automat_page_rows(Statements.of(session), principal, page)
    return Page(found.views(), listed.next_offset, listed.limit, listed.has_next)


def view_automat(session: Session, principal: Principal, automat_id: str) -> AutomatView:
    return automat_rows(Statements.of(session), principal, automat_id).views()[0]


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


def _assign_installation_pincode(session: Session, automat: Automat, now: datetime) -> None:
    """Give the automat a code no other automat holds, issued ``now``: it binds hardware
    for ``installation_pincode_ttl_hours`` (docs/device-protocol.md), and a replace
    issues a fresh one.

    The unique constraint is the guard: each draw is written in a savepoint and
    a collision (with a committed automat, or with a concurrent transaction on
    PostgreSQL) rolls back only that draw and tries another code.
    """
    while True:
        code = new_pincode()
        try:
            with session.begin_nested():
                session.execute(
                    update(a)
                    .where(a.c.id == automat.id)
                    .values(installation_pincode=code, installation_pincode_issued_at=now)
                )
        except IntegrityError:
            continue
        automat.issue_installation_pincode(code, now)
        return


def _unit_path(session: Session, unit_id: str) -> str:
    path: str = session.execute(
        select(orm.organization_units.c.path).where(orm.organization_units.c.id == unit_id)
    ).scalar_one()
    return path


def _device_group(
    session: Session, principal: Principal, group_id: str, field: str, automat_unit_path: str
) -> Group:
    """A device group the automat may join: in the caller's scope, and owned by the
    automat's own unit or one above it, so that nobody below the automat's unit
    learns of it through a group of theirs."""
    ou = orm.organization_units
    row = session.execute(
        select(Group, ou.c.path)
        .join(ou, ou.c.id == orm.groups.c.organization_unit_id)
        .where(orm.groups.c.id == group_id, in_scope(orm.groups.c.organization_unit_id, principal))
    ).first()
    if row is None:
        raise InvalidInput(field, "does not name a group you can use")
    group: Group = row[0]
    group_unit_path: str = row[1]
    if group.type != GroupType.DEVICE:
        raise InvalidInput(field, "names a key group; automats join device groups (type 1)")
    if not automat_unit_path.startswith(group_unit_path):
        raise InvalidInput(
            field, "belongs to an organization unit below the automat's; it cannot hold it"
        )
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
    group = None
    if group_id:
        group = _device_group(session, principal, group_id, "groupId", _unit_path(session, unit_id))
    automat = Automat(
        id=_next_automat_id(session),
        organization_unit_id=unit_id,
        name=name,
        label=label,
        address=location.address,
        postal_code=location.postal_code,
        postal_office=location.postal_office,
        timezone=time_zone(timezone, "timezone").key,
        product=Product(product),
        created_at=now,
    )
    joined = automat.joinable_groups([group] if group is not None else [])
    session.execute(
        insert(a).values(
            id=automat.id,
            organization_unit_id=automat.organization_unit_id,
            name=automat.name,
            label=automat.label,
            address=automat.address,
            postal_code=automat.postal_code,
            postal_office=automat.postal_office,
            timezone=automat.timezone,
            product=automat.product,
            lifecycle_state=automat.lifecycle_state,
            created_at=automat.created_at,
        )
    )
    _assign_installation_pincode(session, automat, now)
    if joined:
        _write_groups(session, automat.id, joined)
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
    changed: list[str] = []
    if name is not None:
        automat.name = name
        changed.append("name")
    if label is not None:
        automat.label = label
        changed.append("label")
    if timezone is not None:
        automat.timezone = time_zone(timezone, "timezone").key
        changed.append("timezone")
    if location is not None:
        # Only the sub-fields given are changed (endpoints.md §4.4).
        if location.address is not None:
            automat.address = location.address
            changed.append("address")
        if location.postal_code is not None:
            automat.postal_code = location.postal_code
            changed.append("postal_code")
        if location.postal_office is not None:
            automat.postal_office = location.postal_office
            changed.append("postal_office")
    joined = None
    if group_ids is not None:
        unit_path = _unit_path(session, automat.organization_unit_id)
        joined = automat.joinable_groups(
            [
                _device_group(session, principal, gid, f"groups.{index}", unit_path)
                for index, gid in enumerate(group_ids)
            ]
        )
    if changed:
        _write(session, automat, *changed)
    if joined is not None:
        _write_groups(session, automat.id, joined)
    return automat


def replace_automat(
    session: Session, principal: Principal, automat_id: str, now: datetime
) -> Automat:
    principal.require_admin()
    automat = get_automat(session, principal, automat_id)
    automat.replace_hardware()
    _write(session, automat, "hw_id", "lifecycle_state")
    _assign_installation_pincode(session, automat, now)
    return automat


def uninstall_automat(session: Session, principal: Principal, automat_id: str) -> None:
    principal.require_admin()
    automat = get_automat(session, principal, automat_id)
    for guard in wiring_of(session).uninstall_guards:
        reason = guard(session, automat)
        if reason is not None:
            raise InvalidInput("id", reason)
    automat.uninstall()
    _write(session, automat, *_PINCODE_FIELDS, "lifecycle_state")
    _write_groups(session, automat.id, [])
