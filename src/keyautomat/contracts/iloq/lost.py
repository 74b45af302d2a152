"""Reporting an iLOQ key lost (docs/contracts.md, "Lost keys").

The admin route runs three steps, so that the locking system is never called
inside a database transaction:

1. :func:`prepare` (a transaction): the key is one of the caller's (registered in
   its subtree, or held by a contract of it) and is not inside a locker; which
   unit's locking system it belongs to (the one that programmed it: the unit of
   the contract holding it, else the key's).
2. :func:`blocklist`, through the iLOQ port (emulator or S5 client): a key that
   holds rights goes on the blocklist, so no lock opens for it any more. One
   already listed, one holding nothing (nothing to block: iLOQ refuses to list a
   blank key) and one the system does not know are left as they are. An
   ``IloqError`` ends the report before anything changed here (502/503).
3. :func:`record` (a transaction): our registry blocks the key (never chosen or
   programmed again) and no locker keeps it assigned; every contract of the
   caller's subtree still holding it loses it (``contracts/lost.py``), each with
   a replacement from the same automat or group when asked.

A report repeated changes nothing more: blocklisting twice is a no-op, and the
contracts have the key in their history by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.orm_contracts import contract_keys, contracts
from keyautomat.contracts import lost
from keyautomat.contracts.iloq.kind import IloqKind
from keyautomat.contracts.kind import Kinds
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.iloq import IloqKey
from keyautomat.service_layer import iloq_keys as registry
from keyautomat.service_layer.iloq import IloqPort
from keyautomat.service_layer.principal import Principal

ou = orm.organization_units
_HELD_BY = (
    select(contracts.c.organization_unit_id, ou.c.path)
    .select_from(contract_keys)
    .join(contracts, contracts.c.id == contract_keys.c.contract_id)
    .join(ou, ou.c.id == contracts.c.organization_unit_id)
    .where(
        contract_keys.c.key_id == bindparam("key_id"),
        contract_keys.c.in_history.is_(False),
        contracts.c.deleted_at.is_(None),
        contracts.c.kind == IloqKind.name,
    )
    .order_by(contracts.c.start, contracts.c.id)
)
_UNIT_PATH = select(ou.c.path).where(ou.c.id == bindparam("unit_id"))
# The automats whose lockers know the key (inside, or assigned to it while it is out).
_IN_LOCKERS = (
    select(orm.automats.c.organization_unit_id, ou.c.path)
    .select_from(orm.lockers)
    .join(orm.automats, orm.automats.c.id == orm.lockers.c.automat_id)
    .join(ou, ou.c.id == orm.automats.c.organization_unit_id)
    .where(orm.lockers.c.key_id == bindparam("key_id"))
)
_INSIDE = (
    select(orm.lockers.c.automat_id, orm.lockers.c.locker_index, ou.c.path)
    .join(orm.automats, orm.automats.c.id == orm.lockers.c.automat_id)
    .join(ou, ou.c.id == orm.automats.c.organization_unit_id)
    .where(orm.lockers.c.key_id == bindparam("key_id"), orm.lockers.c.is_key_inside.is_(True))
    .limit(1)
)


@dataclass(frozen=True, slots=True)
class LostIloqKey:
    key_id: str
    unit_id: str  # whose locking system blocklists it
    contract_units: frozenset[str]  # the caller's units whose contracts hold it


@dataclass(frozen=True, slots=True)
class LostKeyReport:
    key_id: str
    blocklisted: bool
    outcomes: list[lost.Outcome]


def _visible(principal: Principal, rows: Any) -> list[str]:
    return [row.organization_unit_id for row in rows if principal.sees(row.path)]


def prepare(session: Session, principal: Principal, key_id: str) -> LostIloqKey:
    """The key as the caller may report it lost: one its contracts hold, registered to its
    subtree, or known to its automats' lockers (in that order, the unit whose locking
    system programmed it); 404 when it is none of these."""
    params = {"key_id": key_id}
    held = _visible(principal, session.execute(_HELD_BY, params))
    owners = []
    registered = session.get(IloqKey, key_id)
    if registered is not None:
        path = session.scalar(_UNIT_PATH, {"unit_id": registered.organization_unit_id})
        if path is not None and principal.sees(path):
            owners.append(registered.organization_unit_id)
    units = held + owners + _visible(principal, session.execute(_IN_LOCKERS, params))
    if not units:
        raise NotFound("iLOQ key")
    inside = session.execute(_INSIDE, {"key_id": key_id}).first()
    if inside is not None:
        # Another organization's automat is not named to the caller.
        where = (
            f"locker {inside.locker_index} of automat {inside.automat_id}"
            if principal.sees(inside.path)
            else "a locker of an automat"
        )
        raise InvalidInput("keyId", f"is inside {where}: only a key that is out can be lost")
    return LostIloqKey(key_id, units[0], frozenset(held))


async def blocklist(port: IloqPort, key_id: str) -> bool:
    """Put the key on the locking system's blocklist if it opens anything; whether it is on
    it now."""
    info = await port.get_key(key_id)
    if info is None or info.blocked:
        return info is not None
    if info.is_blank:
        return False  # it opens nothing, and iLOQ lists only keys that hold rights
    await port.blocklist_key(key_id)
    return True


def record(
    session: Session,
    kinds: Kinds,
    principal: Principal,
    key_id: str,
    *,
    replace: bool,
    blocklisted: bool,
    now: datetime,
) -> LostKeyReport:
    """The key is lost in our books and out of its contracts (see the module docstring)."""
    key = prepare(session, principal, key_id)
    known = session.get(IloqKey, key_id) or registry.register_key(
        session, organization_unit_id=key.unit_id, key_id=key_id, now=now
    )
    known.block()
    registry.take_key(session, key_id)
    store = SqlContractStore(session)
    outcomes = [
        lost.take_out(store, kinds, contract, held, now, replace=replace)
        for contract, held in lost.holders(store, IloqKind.name, key_id)
        if contract.organization_unit_id in key.contract_units
    ]
    return LostKeyReport(key_id, blocklisted, outcomes)
