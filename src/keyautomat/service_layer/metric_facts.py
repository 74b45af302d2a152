"""What ``/metrics`` reports straight from the database (docs/operations.md, "Metrics").

Gauges that are facts of the shared database (the outbox, the devices) are read
when scraped rather than kept in a process: every API process then reports the
same truth, whichever of them Prometheus reaches, and no process has to be the
one that "owns" a gauge. Two statements, each cheap:

* the outbox: one grouped pass over the open rows (``pending``, ``in_flight``,
  ``held``), a range of the ``(status, due_at)`` index; done, failed and
  cancelled rows are never read;
* the devices: one pass over ``device_links`` (one row per automat ever bound)
  joined to its automat by primary key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.orm_devices import device_links
from keyautomat.service_layer import outbox
from keyautomat.service_layer.devices import online_condition

OPEN = (outbox.PENDING, outbox.IN_FLIGHT, outbox.HELD)
# The outbox states a row is counted in: due (a worker may claim it now), scheduled (a
# reminder or a retry whose time has not come), in_flight (claimed), held (kept aside
# for a disabled webhook subscription).
STATES = ("due", "scheduled", "in_flight", "held")


@dataclass(frozen=True, slots=True)
class OutboxFacts:
    depth: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, state) -> rows
    oldest_due: dict[str, datetime] = field(default_factory=dict)  # kind -> earliest due_at


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    bound: int = 0
    online: int = 0
    unsynced_online: int = 0
    unsynced_offline: int = 0
    most_versions_behind: int = 0  # of the online devices


@dataclass(frozen=True, slots=True)
class Facts:
    at: datetime
    outbox: OutboxFacts
    devices: DeviceFacts

    def outbox_age_seconds(self, kind: str) -> float:
        """How long the oldest row of ``kind`` a worker could deliver has been due (0: none)."""
        due = self.outbox.oldest_due.get(kind)
        return max(0.0, (self.at - due).total_seconds()) if due is not None else 0.0


def outbox_facts(session: Session, now: datetime) -> OutboxFacts:
    t = orm.outbox
    is_due = t.c.due_at <= now
    rows = session.execute(
        select(t.c.kind, t.c.status, is_due.label("due"), func.count(), func.min(t.c.due_at))
        .where(t.c.status.in_(OPEN))
        .group_by(t.c.kind, t.c.status, is_due)
    ).all()
    depth: dict[tuple[str, str], int] = {}
    oldest: dict[str, datetime] = {}
    for kind, status, due, count, earliest in rows:
        if status == outbox.PENDING:
            state = "due" if due else "scheduled"
            if due and (kind not in oldest or earliest < oldest[kind]):
                oldest[kind] = earliest
        else:
            state = status
        depth[(kind, state)] = depth.get((kind, state), 0) + int(count)
    return OutboxFacts(depth, oldest)


def device_facts(session: Session, now: datetime, offline_after: float) -> DeviceFacts:
    a = orm.automats
    online = online_condition(now, offline_after)
    behind = device_links.c.desired_version - device_links.c.synced_version
    unsynced = behind > 0
    row = session.execute(
        select(
            func.count(),
            func.sum(case((online, 1), else_=0)),
            func.sum(case((online & unsynced, 1), else_=0)),
            func.sum(case((~online & unsynced, 1), else_=0)),
            func.max(case((online, behind), else_=0)),
        )
        .select_from(device_links.join(a, a.c.id == device_links.c.automat_id))
        .where(device_links.c.hw_id == a.c.hw_id)  # bound: the link is the automat's hardware
    ).one()
    bound, on, unsynced_on, unsynced_off, most = row
    return DeviceFacts(
        bound=int(bound or 0),
        online=int(on or 0),
        unsynced_online=int(unsynced_on or 0),
        unsynced_offline=int(unsynced_off or 0),
        most_versions_behind=int(most or 0),
    )


def read_facts(session: Session, now: datetime, offline_after: float) -> Facts:
    return Facts(now, outbox_facts(session, now), device_facts(session, now, offline_after))
