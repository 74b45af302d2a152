"""Allocation for every contract kind: locking automats, finding free keys and lockers over
a period, and ranking a group's automats (the reservations themselves are written
by the store, ``store.py``).

Race-freedom (DESIGN.md "No double booking"): every function that decides on a
reservation runs after :func:`lock_automats` in the same transaction. On
PostgreSQL that takes row locks on the automats (in id order, so two
transactions never deadlock); on SQLite the transaction began with ``BEGIN
IMMEDIATE`` and already holds the only write lock. Either way, the check for a
free key and the reservation written after it see no concurrent writer of the
same automat.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    func,
    select,
    true,
)
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.db import PlainQuery, Statements
from keyautomat.adapters.orm_contracts import contract_reservations
from keyautomat.adapters.orm_iloq import iloq_keys
from keyautomat.contracts.model import Slot
from keyautomat.domain.model import LifecycleState

r = contract_reservations
lk = orm.lockers


# Statements run on every contract creation are built once, with bind parameters,
# and only executed afterwards: building one (expressions, cache key, CTE columns)
# costs SQLAlchemy about six times what executing it does (bench/contracts.py).

_IDS: BindParameter[Any] = bindparam("ids", expanding=True)

_LOCK_AUTOMATS = (
    select(orm.automats.c.id)
    .where(orm.automats.c.id.in_(_IDS))
    .order_by(orm.automats.c.id)
    .with_for_update()
)


_TRY_LOCK_AUTOMAT = (
    select(orm.automats.c.id)
    .where(orm.automats.c.id == bindparam("id"))
    .with_for_update(skip_locked=True)
)


def try_lock_automat(session: Session, automat_id: str) -> bool:
    """Lock one automat as :func:`lock_automats` does, unless another transaction holds it
    (then False at once, instead of waiting for it). Always True on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return session.execute(_TRY_LOCK_AUTOMAT, {"id": automat_id}).first() is not None


def lock_automats(session: Session, automat_ids: Iterable[str]) -> None:
    """Serialise allocation on these automats until the transaction ends."""
    ids = sorted(set(automat_ids))
    if not ids or session.get_bind().dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE already holds the database's one write lock
    session.execute(_LOCK_AUTOMATS, {"ids": ids}).all()


def _locker_reserved(
    automat_id: object, locker_index: object, start: object, until: object
) -> ColumnElement[bool]:
    return exists().where(
        r.c.automat_id == automat_id,
        r.c.locker_index == locker_index,
        r.c.until > start,
        r.c.start < until,
    )


def _key_reserved(key_id: object, start: object, until: object) -> ColumnElement[bool]:
    return exists().where(r.c.key_id == key_id, r.c.until > start, r.c.start < until)


def _period() -> tuple[BindParameter[datetime], BindParameter[datetime]]:
    return (
        bindparam("start", type_=r.c.start.type),
        bindparam("until", type_=r.c.until.type),
    )


def _available_key_lockers() -> ColumnElement[bool]:
    """Lockers of ``:automat_id`` holding a usable, unreserved key over ``[:start, :until)``
    (C6)."""
    start, until = _period()
    return and_(
        lk.c.automat_id == bindparam("automat_id"),
        lk.c.key_id.is_not(None),
        lk.c.is_key_inside.is_(True),
        ~exists().where(iloq_keys.c.id == lk.c.key_id, iloq_keys.c.blocked.is_(True)),
        ~_locker_reserved(lk.c.automat_id, lk.c.locker_index, start, until),
        ~_key_reserved(lk.c.key_id, start, until),
    )


def _empty_lockers() -> ColumnElement[bool]:
    """Lockers of ``:automat_id`` with nothing inside and nothing reserved (return
    contracts)."""
    start, until = _period()
    return and_(
        lk.c.automat_id == bindparam("automat_id"),
        lk.c.key_id.is_(None),
        lk.c.is_key_inside.is_(False),
        ~_locker_reserved(lk.c.automat_id, lk.c.locker_index, start, until),
    )


# Run by every creation: on the driver's cursor (adapters/db.py, PlainQuery).
_FREE_KEYS = PlainQuery(
    select(lk.c.locker_index, lk.c.key_id)
    .where(_available_key_lockers())
    .order_by(
        # Keys with no later booking at all first (gaps.md C6).
        exists().where(
            r.c.key_id == lk.c.key_id, r.c.until > bindparam("now", type_=r.c.until.type)
        ),
        lk.c.locker_index,
    )
    .limit(bindparam("limit"))
)

_FREE_LOCKERS = (
    select(lk.c.locker_index)
    .where(_empty_lockers())
    .order_by(lk.c.locker_index)
    .limit(bindparam("limit"))
)


def free_keys(
    session: Session, automat_id: str, start: datetime, until: datetime, now: datetime, limit: int
) -> list[Slot]:
    """Up to ``limit`` keys to hand out, best first: keys with no later booking at all, then
    the lowest locker index (gaps.md C6)."""
    rows = Statements.of(session).rows(
        _FREE_KEYS, automat_id=automat_id, start=start, until=until, now=now, limit=limit
    )
    return [Slot(automat_id, locker_index, key_id) for locker_index, key_id in rows]


def free_lockers(
    session: Session, automat_id: str, start: datetime, until: datetime, limit: int
) -> list[Slot]:
    rows = session.execute(
        _FREE_LOCKERS, {"automat_id": automat_id, "start": start, "until": until, "limit": limit}
    ).all()
    return [Slot(automat_id, row.locker_index, None) for row in rows]


SHORTLIST = 16
"""How many automats, best by their upper bound, a limited ranking checks exactly."""


def group_members(product: str) -> Select[tuple[str]]:
    """The active automats of ``product`` in the group ``:group_id`` (a bound parameter)."""
    a, ag = orm.automats, orm.automat_groups
    return (
        select(a.c.id)
        .join(ag, ag.c.automat_id == a.c.id)
        .where(
            ag.c.group_id == bindparam("group_id"),
            a.c.lifecycle_state == LifecycleState.ACTIVE,
            a.c.product == product,
        )
    )


def rank_automats(
    session: Session,
    candidates: Sequence[str] | None,
    start: datetime,
    until: datetime,
    *,
    want_keys: bool,
    group: tuple[str, str] | None = None,
    limit: int | None = None,
) -> list[tuple[str, int]]:
    """Automats by how much they can offer over the period, most first; ties go to the most
    recently seen, then the lowest id (gaps.md C5). At most ``limit`` of them.

    Without ``limit``, one statement over the whole group: the lockers each
    automat could offer (keys inside, or empty lockers), minus the blocked keys
    among them, minus those with a reservation overlapping the period. The last
    part is driven from a ``MATERIALIZED`` CTE over the covering index
    ``ix_contract_reservations_until_start``, which reaches only reservations
    that have not ended, however many contracts are in history.

    With ``limit``, one cheaper statement in two steps. A shortlist: the group's
    automats in the order of what is free now (keys inside minus those of them with
    an open reservation, or empty lockers minus open locker reservations; counts kept
    in ``automat_stock`` by triggers on ``lockers`` and ``contract_reservations``),
    read off the index ``ix_automat_stock_rank_keys`` (or ``_empty``) until
    :data:`SHORTLIST` plus as many automats as there are blocked keys in the
    candidates' lockers have been found (a ``MATERIALIZED`` CTE). Then only those
    are ranked exactly over the period, their lockers counted through
    ``pk_lockers`` and their reservations reached through
    ``ix_contract_reservations_automat_until``. A blocked key lowers one automat's
    availability by one, so blocked keys cannot push an automat out of the
    shortlist. The cost grows with neither the reservations nor the size of the
    group; the price is that the shortlist order is "free now", not "free over the
    period": an automat booked now but free later, or outside the shortlist for
    another reason, is not seen.
    Groups of up to :data:`SHORTLIST` automats are ranked exactly either way.

    A reservation of a key that has since moved to another locker is not
    subtracted here, and a blocked key that is also reserved is subtracted
    twice: the ranking runs unlocked and is a heuristic; :func:`free_keys` under
    the lock is exact and makes the caller fall back to the next automat.

    ``group``, a (group id, product) pair, ranks the group's active automats of
    that product (:func:`group_members`) instead of ``candidates`` (then None):
    fetching and binding a thousand ids costs more than ranking them in the
    database. An empty result then means the group has no such automat.
    """
    params: dict[str, Any] = {"start": start, "until": until}
    if group is None:
        if not candidates:
            return []
        params["ids"] = list(candidates)
        among = None
    else:
        params["group_id"], among = group
    if limit is None:
        stmt = _ranking(want_keys, among, few=False, limited=False)
        return _rank(session, stmt, params)
    # The shortlist, its length (blocked keys counted in SQL) and the exact ranking of it,
    # in one statement: one round trip where three were.
    stmt = _ranking(want_keys, among, few=True, limited=True, shortlisted=True)
    return _rank(session, stmt, {**params, "short": SHORTLIST, "limit": limit})


@functools.cache
def _blocked_inside(among: str | None) -> Select[int]:
    """Blocked keys inside the lockers of the candidates (``:ids``, or the members of
    ``:group_id``), reached from the few blocked keys through ``ix_iloq_keys_blocked``."""
    ag = orm.automat_groups
    if among is None:
        member: ColumnElement[bool] = lk.c.automat_id.in_(_IDS)
    else:
        member = exists().where(
            ag.c.automat_id == lk.c.automat_id, ag.c.group_id == bindparam("group_id")
        )
    return select(func.count()).where(
        lk.c.key_id.in_(select(iloq_keys.c.id).where(iloq_keys.c.blocked.is_(True))),
        lk.c.is_key_inside.is_(True),
        member,
    )


@functools.cache
def _shortlist(want_keys: bool, among: str | None) -> Select[tuple[str, datetime | None]]:
    """The candidates in the order of ``ix_automat_stock_rank_keys`` (or ``_empty``), first
    ``:short`` of them, and one more per blocked key inside their lockers
    (:func:`_blocked_inside`); the candidates are ``:ids``, or the members of
    ``:group_id`` of product ``among``, tested per automat so that the index drives
    the scan."""
    a, ag, st = orm.automats, orm.automat_groups, orm.automat_stock
    # The expressions of the indexes of migration 0028, exactly as they are indexed.
    count = (
        st.c.keys_inside - st.c.keys_booked
        if want_keys
        else st.c.empty_lockers - st.c.lockers_booked
    )
    if among is None:
        member: ColumnElement[bool] = st.c.automat_id.in_(_IDS)
    else:
        member = and_(
            exists().where(
                ag.c.automat_id == st.c.automat_id, ag.c.group_id == bindparam("group_id")
            ),
            exists().where(
                a.c.id == st.c.automat_id,
                a.c.lifecycle_state == LifecycleState.ACTIVE,
                a.c.product == among,
            ),
        )
    length: Any = bindparam("short")
    if want_keys:
        length = length + _blocked_inside(among).scalar_subquery()
    return (
        select(st.c.automat_id.label("id"), st.c.last_seen_at)
        .where(member)
        .order_by(count.desc(), st.c.last_seen_at.desc().nulls_last(), st.c.automat_id)
        .limit(length)
    )


def _rank(session: Session, stmt: Select[Any], params: dict[str, Any]) -> list[tuple[str, int]]:
    return [(row.id, int(row.available)) for row in session.execute(stmt, params).all()]


@functools.cache
def _ranking(
    want_keys: bool, among: str | None, *, few: bool, limited: bool, shortlisted: bool = False
) -> Select[Any]:
    """The exact ranking statement of :func:`rank_automats`, built once per shape; ``few``
    reaches the reservations of ``:ids`` (a short list) through their automat instead
    of through every unended reservation. The candidates are ``:ids``, or the members
    of ``:group_id`` of product ``among``; ``shortlisted``: only those of the candidates
    on their :func:`_shortlist` (a materialized CTE, computed once)."""
    a = orm.automats
    ids: Any = _IDS if among is None else group_members(among)
    if want_keys:
        offer = and_(lk.c.key_id.is_not(None), lk.c.is_key_inside.is_(True))
    else:
        offer = and_(lk.c.key_id.is_(None), lk.c.is_key_inside.is_(False))
    available: ColumnElement[int]
    # The candidates: the automats table, or the shortlist (its id and last_seen_at).
    cand: Any = a
    start, until = _period()
    if shortlisted:
        # Driven from the shortlist, each automat's lockers counted through pk_lockers:
        # the planner cannot know how short the list is (its LIMIT is a parameter plus a
        # count), and given the set-at-once form it scanned every locker (bench/contracts.py
        # at 100,000 contracts, docs/performance/contract-creation.md).
        cand = _shortlist(want_keys, among).cte("shortlist").prefix_with("MATERIALIZED")
        available = (
            select(func.count())
            .select_from(lk)
            .where(lk.c.automat_id == cand.c.id, offer)
            .scalar_subquery()
        )
    source: Any = cand
    if not shortlisted:
        offered = (
            select(lk.c.automat_id, func.count().label("n"))
            .where(lk.c.automat_id.in_(ids), offer)
            .group_by(lk.c.automat_id)
            .cte("offered")
        )
        available = func.coalesce(offered.c.n, 0)
        source = source.outerjoin(offered, offered.c.automat_id == cand.c.id)
    if few:
        # Per candidate, through ix_contract_reservations_automat_until: a scan of every
        # unended reservation (the other way) is what PostgreSQL picked for the CTE form.
        busy = (
            select(func.count(func.distinct(lk.c.locker_index)))
            .select_from(
                r.join(
                    lk,
                    and_(lk.c.automat_id == r.c.automat_id, lk.c.locker_index == r.c.locker_index),
                )
            )
            .where(r.c.automat_id == cand.c.id, r.c.until > start, r.c.start < until, offer)
            .scalar_subquery()
        )
        available = available - busy
    else:
        hot = (
            select(r.c.automat_id, r.c.locker_index)
            .where(r.c.until > start, r.c.start < until)
            .cte("hot")
            .prefix_with("MATERIALIZED")
        )
        reserved = (
            select(lk.c.automat_id, func.count(func.distinct(lk.c.locker_index)).label("n"))
            .select_from(hot)
            .join(
                lk,
                and_(
                    lk.c.automat_id == hot.c.automat_id,
                    lk.c.locker_index == hot.c.locker_index,
                ),
            )
            .where(offer)
            .group_by(lk.c.automat_id)
            .cte("busy")
        )
        available = available - func.coalesce(reserved.c.n, 0)
        source = source.outerjoin(reserved, reserved.c.automat_id == cand.c.id)
    if want_keys:
        # Driven from the (few) blocked keys through ix_iloq_keys_blocked and
        # ix_lockers_key_id; the outer join keeps the candidates' counts only.
        blocked_keys = select(iloq_keys.c.id).where(iloq_keys.c.blocked.is_(True))
        blocked = (
            select(lk.c.automat_id, func.count().label("n"))
            .where(lk.c.key_id.in_(blocked_keys), offer)
            .group_by(lk.c.automat_id)
            .cte("blocked")
        )
        available = available - func.coalesce(blocked.c.n, 0)
        source = source.outerjoin(blocked, blocked.c.automat_id == cand.c.id)
    ranked = available.label("available")
    stmt = (
        select(cand.c.id, ranked)
        .select_from(source)
        .where(true() if shortlisted else a.c.id.in_(ids))
        .order_by(
            ranked.desc(),
            cand.c.last_seen_at.is_(None),
            cand.c.last_seen_at.desc(),
            cand.c.id,
        )
    )
    return stmt.limit(bindparam("limit")) if limited else stmt
