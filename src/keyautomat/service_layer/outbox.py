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
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from keyautomat.adapters import orm

PENDING = "pending"
IN_FLIGHT = "in_flight"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
UNFINISHED = (PENDING, IN_FLIGHT)

t = orm.outbox


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
) -> int | None:
    """Store one message in the caller's transaction; returns its id.

    With an ``idempotency_key`` that was used before, nothing is stored and None
    is returned: "each (contract, key, type) at most once" holds even when a
    device resends an event.
    """
    if lane is not None:
        _lock_lane(session, lane, now)
    values = {
        "kind": kind,
        "payload": json.dumps(payload, separators=(",", ":")),
        "lane": lane,
        "ref": ref,
        "idempotency_key": idempotency_key,
        "status": PENDING,
        "due_at": due_at or now,
        "attempts": 0,
        "created_at": now,
    }
    if idempotency_key is None:
        return int(session.execute(insert(t).values(values).returning(t.c.id)).scalar_one())
    stmt = _dialect_insert(session, t).values(values)
    stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(t.c.id)
    row = session.execute(stmt).first()
    return int(row[0]) if row else None


def _dialect_insert(session: Session, table: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _lock_lane(session: Session, lane: str, now: datetime) -> None:
    lanes = orm.outbox_lanes
    stmt = _dialect_insert(session, lanes).values(lane=lane, last_enqueued_at=now)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["lane"]))
    # The UPDATE holds the lane row's lock until commit: a concurrent writer to
    # the same lane waits here, before it has drawn an id.
    session.execute(update(lanes).where(lanes.c.lane == lane).values(last_enqueued_at=now))


def cancel(session: Session, *, ref: str, kinds: Sequence[str] | None = None) -> int:
    """Cancel pending rows about ``ref`` (e.g. a contract's reminders); returns how many."""
    stmt = update(t).where(t.c.ref == ref, t.c.status == PENDING)
    if kinds is not None:
        stmt = stmt.where(t.c.kind.in_(list(kinds)))
    result = session.execute(stmt.values(status=CANCELLED))
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
            earlier.c.status.in_(UNFINISHED),
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


def _owned(message_id: int, worker_id: str) -> Any:
    return and_(t.c.id == message_id, t.c.status == IN_FLIGHT, t.c.claimed_by == worker_id)


def mark_done(session: Session, message_id: int, worker_id: str, now: datetime) -> bool:
    result = session.execute(
        update(t)
        .where(_owned(message_id, worker_id))
        .values(status=DONE, finished_at=now, claimed_until=None, last_error=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_retry(
    session: Session, message_id: int, worker_id: str, *, due_at: datetime, error: str
) -> bool:
    result = session.execute(
        update(t)
        .where(_owned(message_id, worker_id))
        .values(status=PENDING, due_at=due_at, claimed_until=None, last_error=error[:2000])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_failed(
    session: Session, message_id: int, worker_id: str, *, now: datetime, error: str
) -> bool:
    result = session.execute(
        update(t)
        .where(_owned(message_id, worker_id))
        .values(status=FAILED, finished_at=now, claimed_until=None, last_error=error[:2000])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


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
