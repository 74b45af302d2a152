"""The transactional outbox: work that must happen because of a change, stored with it.

A use case calls :func:`enqueue` inside its own transaction, so the message
exists exactly when the change does. Workers claim due rows with a conditional
UPDATE (the final guard against two workers taking one row), deliver them
outside any transaction, then record the outcome. A worker that dies mid-way
leaves its rows ``in_flight`` with an expired lease; the next worker takes them
again. Delivery is therefore at least once, under a stable row id that
receivers can deduplicate on.

Rows may belong to a *lane*: within a lane only the oldest unfinished row can be
claimed, so a row that is waiting for a retry holds back the rows behind it
while other lanes flow.

Time-based work (reminders) is the same thing with a ``due_at`` in the future;
``(status, due_at)`` is indexed, so a pass costs what is due, not what exists.

A row may be ``held``: stored but not to be attempted until its feature
releases it (the deliveries of a disabled webhook subscription). Held rows are
never claimed, and keep their place in their lane: the rows behind one wait
until it is released or dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from keyautomat.adapters import orm
from keyautomat.adapters.db import PlainQuery, Statements

PENDING = "pending"
IN_FLIGHT = "in_flight"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
HELD = "held"
UNFINISHED = (PENDING, IN_FLIGHT)
# What keeps the rows behind it in its lane waiting.
LANE_BLOCKING = (PENDING, IN_FLIGHT, HELD)

t = orm.outbox


# Statements run on every enqueue/cancel/outcome are built once, with bind
# parameters for what varies: building one per call (expression construction
# plus cache-key generation) cost several times what executing it does.
_lanes = orm.outbox_lanes
# Enqueueing and cancelling run with most changes (a contract's creation among them): on
# the driver's cursor (adapters/db.py, PlainQuery).
_INSERT = PlainQuery(insert(t).returning(t.c.id))
_CANCEL = PlainQuery(
    update(t).where(t.c.ref == bindparam("b_ref"), t.c.status == PENDING).values(status=CANCELLED)
)
_CANCEL_KINDS = PlainQuery(
    update(t)
    .where(t.c.ref == bindparam("b_ref"), t.c.status == PENDING)
    .where(t.c.kind.in_(bindparam("b_kinds", expanding=True)))
    .values(status=CANCELLED)
)
_LOCK_LANE = PlainQuery(
    update(_lanes)
    .where(_lanes.c.lane == bindparam("b_lane"))
    .values(last_enqueued_at=bindparam("b_at", type_=_lanes.c.last_enqueued_at.type))
)
# Statements whose SQL differs by dialect (ON CONFLICT), one per dialect.
_DIALECTS = {"postgresql": postgresql, "sqlite": sqlite}
_INSERT_ONCE = {
    name: PlainQuery(
        dialect.insert(t)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(t.c.id)
    )
    for name, dialect in _DIALECTS.items()
}
_INSERT_LANE = {
    name: PlainQuery(dialect.insert(_lanes).on_conflict_do_nothing(index_elements=["lane"]))
    for name, dialect in _DIALECTS.items()
}


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    kind: str
    payload: dict[str, Any]
    lane: str | None
    ref: str | None
    attempts: int  # including the one now being made
    created_at: datetime


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    now: datetime,
    due_at: datetime | None = None,
    lane: str | None = None,
    ref: str | None = None,
    idempotency_key: str | None = None,
    held: bool = False,
    subject: str | None = None,
) -> int | None:
    """Store one message in the caller's transaction; returns its id.

    With an ``idempotency_key`` that was used before, nothing is stored and None
    is returned: "each (contract, key, type) at most once" holds even when a
    device resends an event. A ``held`` message is stored aside until
    :func:`release` (it still takes its place in its lane's order). ``subject`` says what
    the message is about for people (``contract:<id>``), for the console's timelines.
    """
    plain = Statements.of(session)
    if lane is not None:
        _lock_lane(plain, lane, now)
    values = {
        "kind": kind,
        "payload": json.dumps(payload, separators=(",", ":")),
        "lane": lane,
        "ref": ref,
        "subject": subject,
        "idempotency_key": idempotency_key,
        "status": HELD if held else PENDING,
        "due_at": due_at or now,
        "attempts": 0,
        "created_at": now,
    }
    if idempotency_key is None:
        return int(plain.scalar(_INSERT, **values))
    row = plain.first(_INSERT_ONCE[plain.dialect_name], **values)
    return int(row[0]) if row else None


def _lock_lane(plain: Statements, lane: str, now: datetime) -> None:
    plain.execute(_INSERT_LANE[plain.dialect_name], lane=lane, last_enqueued_at=now)
    # The UPDATE holds the lane row's lock until commit: a concurrent writer to
    # the same lane waits here, before it has drawn an id.
    plain.execute(_LOCK_LANE, b_lane=lane, b_at=now)


def cancel(session: Session, *, ref: str, kinds: Sequence[str] | None = None) -> int:
    """Cancel pending rows about ``ref`` (e.g. a contract's reminders); returns how many."""
    plain = Statements.of(session)
    if kinds is None:
        return plain.execute(_CANCEL, b_ref=ref)
    return plain.execute(_CANCEL_KINDS, b_ref=ref, b_kinds=list(kinds))


def hold(session: Session, *, refs: Sequence[str], kinds: Sequence[str]) -> int:
    """Put the pending rows about ``refs`` aside (``held``); returns how many.

    A row in flight is not touched: its handler finds out for itself and
    raises ``Hold``.
    """
    result = session.execute(
        update(t)
        .where(t.c.ref.in_(list(refs)), t.c.kind.in_(list(kinds)), t.c.status == PENDING)
        .values(status=HELD, claimed_until=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _held(kinds: Sequence[str], refs: Sequence[str] | None, ids: Sequence[int] | None) -> Any:
    """Held rows of ``kinds`` about ``refs`` (or with ``ids``)."""
    where = [t.c.kind.in_(list(kinds)), t.c.status == HELD]
    if refs is not None:
        where.append(t.c.ref.in_(list(refs)))
    if ids is not None:
        where.append(t.c.id.in_(list(ids)))
    return and_(*where)


def release(
    session: Session,
    *,
    kinds: Sequence[str],
    refs: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
) -> int:
    """Queue held rows again, each with a fresh retry schedule; returns how many.

    Their ids, and so their order within each lane, are kept.
    """
    result = session.execute(
        update(t).where(_held(kinds, refs, ids)).values(status=PENDING, attempts=0, last_error=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def drop_held(
    session: Session,
    *,
    kinds: Sequence[str],
    now: datetime,
    reason: str,
    refs: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
) -> int:
    """Cancel held rows; returns how many."""
    result = session.execute(
        update(t)
        .where(_held(kinds, refs, ids))
        .values(status=CANCELLED, finished_at=now, last_error=reason[:2000])
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _claimable(now: datetime) -> Any:
    return or_(
        and_(t.c.status == PENDING, t.c.due_at <= now),
        and_(t.c.status == IN_FLIGHT, t.c.claimed_until < now),
    )


def _is_lane_head() -> Any:
    earlier = aliased(t)
    return or_(
        t.c.lane.is_(None),
        ~exists().where(
            earlier.c.lane == t.c.lane,
            earlier.c.id < t.c.id,
            earlier.c.status.in_(LANE_BLOCKING),
        ),
    )


def _candidates(
    session: Session, *, now: datetime, limit: int, kinds: Sequence[str] | None
) -> list[int]:
    """Ids of claimable rows, earliest due first.

    Due ``pending`` rows and ``in_flight`` rows whose lease ran out are looked
    up by two queries rather than one ``OR``: each then walks its own range of
    the ``(status, due_at)`` index, so a pass costs what is due and not what is
    stored (with an ``OR`` SQLite scanned the whole table; bench/scheduler.py).
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    found: list[tuple[datetime, int]] = []
    for claimable in (
        and_(t.c.status == PENDING, t.c.due_at <= now),
        and_(t.c.status == IN_FLIGHT, t.c.claimed_until < now),
    ):
        query = select(t.c.due_at, t.c.id).where(claimable, _is_lane_head())
        if kinds is not None:
            query = query.where(t.c.kind.in_(list(kinds)))
        query = query.order_by(t.c.due_at, t.c.id).limit(limit)
        if postgres:
            query = query.with_for_update(skip_locked=True)
        found.extend((row.due_at, row.id) for row in session.execute(query))
    return [row_id for _, row_id in sorted(found)[:limit]]


def waiting_since(session: Session, *, now: datetime, kinds: Sequence[str]) -> datetime | None:
    """Since when the longest-waiting row a worker could claim now has been claimable, or
    None when none is: the measure of the workers' progress (``GET /readyz``).

    The same conditions as a claim, without its lock: a due ``pending`` row that heads
    its lane (one behind a retrying row is not late), or an ``in_flight`` row whose
    lease ran out. Each walks its own range of the ``(status, due_at)`` index.
    """
    pending = (
        select(t.c.due_at)
        .where(t.c.status == PENDING, t.c.due_at <= now, t.c.kind.in_(list(kinds)))
        .where(_is_lane_head())
        .order_by(t.c.due_at)
        .limit(1)
    )
    abandoned = select(func.min(t.c.claimed_until)).where(
        t.c.status == IN_FLIGHT, t.c.claimed_until < now, t.c.kind.in_(list(kinds))
    )
    times = [session.scalar(pending), session.scalar(abandoned)]
    return min((when for when in times if when is not None), default=None)


def claim(
    session: Session,
    *,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    kinds: Sequence[str] | None = None,
) -> list[OutboxMessage]:
    """Take up to ``limit`` due rows for ``worker_id`` until ``now + lease``."""
    ids = _candidates(session, now=now, limit=limit, kinds=kinds)
    if not ids:
        return []
    rows = session.execute(
        update(t)
        .where(t.c.id.in_(ids), _claimable(now), _is_lane_head())
        .values(
            status=IN_FLIGHT,
            claimed_by=worker_id,
            claimed_until=now + lease,
            attempts=t.c.attempts + 1,
        )
        .returning(t.c.id, t.c.kind, t.c.payload, t.c.lane, t.c.ref, t.c.attempts, t.c.created_at)
    ).all()
    messages = [
        OutboxMessage(r.id, r.kind, json.loads(r.payload), r.lane, r.ref, r.attempts, r.created_at)
        for r in rows
    ]
    return sorted(messages, key=lambda m: m.id)


@dataclass(frozen=True, slots=True)
class Settled:
    """The outcome of one claimed row, to record: ``status`` is what the row becomes.

    ``at`` is when it finished (``done``, ``failed``) or when to try again
    (``pending``); a ``held`` row ignores it, and gets back the attempt the claim
    counted, since it was never made.
    """

    id: int
    status: str
    at: datetime | None = None
    error: str | None = None


# The outcomes of a whole pass in one statement on PostgreSQL: the rows come as
# arrays, one element per row, so the statement is the same for any batch size.
_SETTLE_POSTGRES = text(
    """
    UPDATE outbox AS o SET
        status = v.status,
        due_at = CASE WHEN v.status = 'pending' THEN v.at ELSE o.due_at END,
        finished_at = CASE WHEN v.status IN ('done', 'failed') THEN v.at ELSE o.finished_at END,
        attempts = CASE WHEN v.status = 'held' THEN o.attempts - 1 ELSE o.attempts END,
        claimed_until = NULL,
        last_error = v.error
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:statuses AS text[]),
        CAST(:ats AS timestamptz[]), CAST(:errors AS text[])
    ) AS v(id, status, at, error)
    WHERE o.id = v.id AND o.status = 'in_flight' AND o.claimed_by = :worker
    """
)
# SQLite (in-process, no round trips to save): the same, one row per parameter set.
_b_status = bindparam("b_status", type_=t.c.status.type)
_b_at = bindparam("b_at", type_=t.c.due_at.type)
_SETTLE_ONE = (
    update(t)
    .where(
        t.c.id == bindparam("b_id"),
        t.c.status == IN_FLIGHT,
        t.c.claimed_by == bindparam("b_worker"),
    )
    .values(
        status=_b_status,
        due_at=case((_b_status == PENDING, _b_at), else_=t.c.due_at),
        finished_at=case(
            (or_(_b_status == DONE, _b_status == FAILED), _b_at), else_=t.c.finished_at
        ),
        attempts=case((_b_status == HELD, t.c.attempts - 1), else_=t.c.attempts),
        claimed_until=None,
        last_error=bindparam("b_error", type_=t.c.last_error.type),
    )
)
_SETTLED_STATUSES = (DONE, PENDING, FAILED, HELD)


def settle(session: Session, worker_id: str, outcomes: Sequence[Settled]) -> int:
    """Record the outcomes of rows ``worker_id`` claimed, in one statement; returns how many
    were still its own (a row whose lease ran out and that another worker claimed is left
    to it)."""
    if not outcomes:
        return 0
    for outcome in outcomes:
        if outcome.status not in _SETTLED_STATUSES:
            raise ValueError(f"a row cannot be settled as {outcome.status!r}")
    errors = [None if o.error is None else o.error[:2000] for o in outcomes]
    if session.get_bind().dialect.name == "postgresql":
        result = session.execute(
            _SETTLE_POSTGRES,
            {
                "ids": [o.id for o in outcomes],
                "statuses": [o.status for o in outcomes],
                "ats": [o.at for o in outcomes],
                "errors": errors,
                "worker": worker_id,
            },
        )
    else:
        result = session.execute(
            _SETTLE_ONE,
            [
                {
                    "b_id": o.id,
                    "b_worker": worker_id,
                    "b_status": o.status,
                    "b_at": o.at,
                    "b_error": e,
                }
                for o, e in zip(outcomes, errors, strict=True)
            ],
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


def mark_done(session: Session, message_id: int, worker_id: str, now: datetime) -> bool:
    return bool(settle(session, worker_id, [Settled(message_id, DONE, now)]))


def mark_retry(
    session: Session, message_id: int, worker_id: str, *, due_at: datetime, error: str
) -> bool:
    return bool(settle(session, worker_id, [Settled(message_id, PENDING, due_at, error)]))


def mark_failed(
    session: Session, message_id: int, worker_id: str, *, now: datetime, error: str
) -> bool:
    return bool(settle(session, worker_id, [Settled(message_id, FAILED, now, error)]))


def mark_held(session: Session, message_id: int, worker_id: str, *, error: str) -> bool:
    return bool(settle(session, worker_id, [Settled(message_id, HELD, None, error)]))


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    kind: str
    payload: dict[str, Any]
    status: str
    attempts: int
    due_at: datetime
    last_error: str | None
    ref: str | None
    lane: str | None
    created_at: datetime
    finished_at: datetime | None


def read(
    session: Session,
    *,
    kinds: Sequence[str] | None = None,
    ref: str | None = None,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[OutboxRow]:
    """Rows for admin views and tests, oldest first."""
    stmt = select(t).where(t.c.id > after_id)
    if kinds is not None:
        stmt = stmt.where(t.c.kind.in_(list(kinds)))
    if ref is not None:
        stmt = stmt.where(t.c.ref == ref)
    if status is not None:
        stmt = stmt.where(t.c.status == status)
    rows = session.execute(stmt.order_by(t.c.id).limit(limit)).all()
    return [
        OutboxRow(
            r.id,
            r.kind,
            json.loads(r.payload),
            r.status,
            r.attempts,
            r.due_at,
            r.last_error,
            r.ref,
            r.lane,
            r.created_at,
            r.finished_at,
        )
        for r in rows
    ]
