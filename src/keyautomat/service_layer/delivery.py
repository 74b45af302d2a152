"""What a worker does with a claimed outbox row: route it by kind, and judge the outcome.

Handlers raise :class:`RetryLater` for a transient failure (a broker down, a
receiver answering 503) and :class:`GiveUp` for a permanent one (an invalid
address). Anything else unexpected counts as transient: losing a message to a
bug would be worse than trying it again. :class:`Hold` puts a row aside,
unattempted, until its feature releases it (a disabled webhook subscription).

Besides rows, a worker runs its features' periodic chores (pruning old logs),
registered here with :meth:`Dispatcher.every`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from keyautomat.service_layer.outbox import OutboxMessage

# What a handler wants written about its attempt (a delivery log row, say): the
# worker runs it in the same transaction that records the row's outcome.
Record = Callable[[Session], object]


class RetryLater(Exception):
    def __init__(
        self, reason: str, *, delay: timedelta | None = None, record: Record | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.record = record


class GiveUp(Exception):
    def __init__(self, reason: str, *, record: Record | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record = record


class Hold(Exception):
    """The row's target takes nothing for now: keep the row, unattempted, until released."""

    def __init__(self, reason: str, *, record: Record | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record = record


Handler = Callable[[OutboxMessage], Awaitable[Record | None]]

DEFAULT_RETRY_DELAYS: tuple[timedelta, ...] = tuple(
    timedelta(seconds=s) for s in (5, 30, 120, 600, 1800)
)


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    # Waits before attempts 2, 3, ...; when they run out the row is failed.
    retry_delays: Sequence[timedelta] = DEFAULT_RETRY_DELAYS

    def delay_after(self, attempts: int) -> timedelta | None:
        """The wait before the next attempt after ``attempts`` tries, or None to give up."""
        return delay_after(self.retry_delays, attempts)


def delay_after(retry_delays: Sequence[timedelta], attempts: int) -> timedelta | None:
    """The wait before the next attempt after ``attempts`` tries, or None: the schedule ran out."""
    if attempts - 1 < len(retry_delays):
        return retry_delays[attempts - 1]
    return None


# A chore gets the worker's ``now``; it must keep each of its transactions short.
ChoreJob = Callable[[datetime], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Chore:
    name: str
    interval: timedelta
    job: ChoreJob


@dataclass
class Dispatcher:
    routes: dict[str, Route] = field(default_factory=dict)
    chores: dict[str, Chore] = field(default_factory=dict)

    def register(
        self,
        kind: str,
        handler: Handler,
        retry_delays: Sequence[timedelta] = DEFAULT_RETRY_DELAYS,
    ) -> None:
        if kind in self.routes:
            raise ValueError(f"a handler for {kind!r} is already registered")
        self.routes[kind] = Route(handler, retry_delays)

    def every(self, interval: timedelta, name: str, job: ChoreJob) -> None:
        """Run ``job`` about once per ``interval`` in every worker (first at its start)."""
        if name in self.chores:
            raise ValueError(f"a chore {name!r} is already registered")
        self.chores[name] = Chore(name, interval, job)

    @property
    def kinds(self) -> list[str]:
        return sorted(self.routes)
