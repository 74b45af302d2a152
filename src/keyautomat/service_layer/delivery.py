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

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Self

from sqlalchemy.orm import Session

from keyautomat.service_layer.outbox import OutboxMessage

# What a handler wants written about its attempt (a delivery log row, say): the
# worker runs it in the same transaction that records the row's outcome.
Record = Callable[[Session], object]


class Batched(ABC):
    """A :data:`Record` that the worker writes together with the others of its class.

    The worker collects a pass's records of one such class, in lane order, and
    hands them to :meth:`write_all` once: a feature can then log a whole batch
    of attempts in a few statements rather than a few per attempt.
    """

    __slots__ = ()

    @classmethod
    @abstractmethod
    def write_all(cls, session: Session, records: Sequence[Self]) -> None:
        """Write ``records`` (all of this class, in lane order) in the caller's transaction."""

    def __call__(self, session: Session) -> object:
        type(self).write_all(session, [self])
        return None


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


@dataclass(frozen=True, slots=True)
class Paced:
    """A :data:`Handler` whose rows first wait for a turn at their target (a webhook
        receiver takes so many requests at a time).

        The worker enters ``turn(message)`` before it calls ``handle``: the wait takes none of
        its in-flight places, and the row's deadline starts only with its turn. ``longest`` is
        how long ``handle`` runs at most once it has its turn; a row still waiting when less
        than that is left of its deadline is given back unattempted (its attempt uncounted),
    due again at once.
    """

    handle: Handler
    turn: Callable[[OutboxMessage], AbstractAsyncContextManager[object]]
    longest: timedelta

    async def __call__(self, message: OutboxMessage) -> Record | None:
        return await self.handle(message)


# Run in the transaction that claimed a batch, with the batch's rows of its kind: reads
# what their delivery needs in one go and returns the handler for these rows.
Prepare = Callable[[Session, Sequence[OutboxMessage]], Handler]

DEFAULT_RETRY_DELAYS: tuple[timedelta, ...] = tuple(
    timedelta(seconds=s) for s in (5, 30, 120, 600, 1800)
)


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    # Waits before attempts 2, 3, ...; when they run out the row is failed.
    retry_delays: Sequence[timedelta] = DEFAULT_RETRY_DELAYS
    prepare: Prepare | None = None

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
        *,
        prepare: Prepare | None = None,
    ) -> None:
        """``handler`` delivers one row; with ``prepare`` the worker asks it for the handler
        of each claimed batch instead (one read for the batch, in the claim's transaction)."""
        if kind in self.routes:
            raise ValueError(f"a handler for {kind!r} is already registered")
        self.routes[kind] = Route(handler, retry_delays, prepare)

    def every(self, interval: timedelta, name: str, job: ChoreJob) -> None:
        """Run ``job`` about once per ``interval`` in every worker (first at its start)."""
        if name in self.chores:
            raise ValueError(f"a chore {name!r} is already registered")
        self.chores[name] = Chore(name, interval, job)

    @property
    def kinds(self) -> list[str]:
        return sorted(self.routes)
