"""The outbox worker: claims due rows, delivers them, records each outcome.

It runs as ``keyautomat worker`` (any number of them against PostgreSQL) and
in-process under ``keyautomat serve``. It keeps up to ``max_in_flight`` rows
being delivered at once, each in its own task: it claims a batch whenever there
is room and rows may be due, and records the outcomes of all the deliveries
that finished since its last write in one transaction. A slow receiver
therefore holds only its own rows, never the others of its batch: a row that
waits for a turn at its receiver (a :class:`Paced` handler) takes none of the
in-flight places and starts its deadline only with its turn. Rows of one
lane are never in flight together, because only lane heads can be claimed and
a row stays ``in_flight`` until its outcome is recorded. Next to the deliveries
it runs the features' periodic chores (``Dispatcher.every``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.db import Database
from keyautomat.service_layer import outbox
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.delivery import (
    Batched,
    Dispatcher,
    GiveUp,
    Handler,
    Hold,
    Paced,
    Record,
    RetryLater,
)
from keyautomat.service_layer.outbox import OutboxMessage

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=120)
"""How long a claimed row stays this worker's before another worker may claim it."""


def handler_deadline(lease: timedelta) -> timedelta:
    """How long one handler may run: three quarters of the lease.

    A handler still running when the lease ends would be run a second time by
    another worker; the last quarter is left for recording the outcome.
    """
    return lease * 3 / 4


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OutboxWorker:
    def __init__(
        self,
        db: Database,
        dispatcher: Dispatcher,
        clock: Clock,
        *,
        worker_id: str | None = None,
        batch_size: int = 50,
        max_in_flight: int = 100,
        lease: timedelta = LEASE,
        idle_interval: float = 0.25,
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.clock = clock
        self.worker_id = worker_id or new_worker_id()
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.lease = lease
        self.deadline = handler_deadline(lease)
        self.idle_interval = idle_interval
        self._wake = asyncio.Event()
        self._chores_due: dict[str, datetime] = {}

    def wake(self) -> None:
        """Ask for a pass now (after a commit that enqueued something)."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim one batch, deliver it and record it; returns how many rows were claimed."""
        batch = await self._claim(self.batch_size)
        if batch:
            # Deliveries of a pass run concurrently; their outcomes are recorded
            # together in one transaction, not one transaction per row.
            outcomes = await asyncio.gather(*(self._attempt(m, h) for m, h in batch))
            await self.db.run(lambda s: self._record(s, list(outcomes)))
        return len(batch)

    async def _claim(self, limit: int) -> list[tuple[OutboxMessage, Handler]]:
        """Claim up to ``limit`` due rows, each with the handler that delivers it.

        A kind registered with ``prepare`` reads what its rows need (a webhook's
        subscription) in this same transaction, once for the batch.
        """
        now = self.clock.now()
        kinds = self.dispatcher.kinds
        if not kinds or limit <= 0:
            return []

        def work(session: Session) -> list[tuple[OutboxMessage, Handler]]:
            batch = outbox.claim(
                session,
                worker_id=self.worker_id,
                now=now,
                lease=self.lease,
                limit=limit,
                kinds=kinds,
            )
            handlers: dict[str, Handler] = {}
            for kind in sorted({m.kind for m in batch}):
                route = self.dispatcher.routes[kind]
                mine = [m for m in batch if m.kind == kind]
                handlers[kind] = (
                    route.handler if route.prepare is None else route.prepare(session, mine)
                )
            return [(m, handlers[m.kind]) for m in batch]

        return await self.db.run(work)

    async def drain(self, max_passes: int = 1000) -> int:
        """Run passes until nothing is due (tests and shutdown); returns rows handled."""
        total = 0
        for _ in range(max_passes):
            handled = await self.run_once()
            if handled == 0:
                break
            total += handled
        return total

    async def run_chores(self) -> int:
        """Run the chores that are due (each at most once per its interval); returns how many."""
        ran = 0
        for chore in self.dispatcher.chores.values():
            now = self.clock.now()
            if self._chores_due.get(chore.name, now) > now:
                continue
            self._chores_due[chore.name] = now + chore.interval
            try:
                await chore.job(now)
            except Exception:
                log.exception("chore %s failed; it runs again in %s", chore.name, chore.interval)
            ran += 1
        return ran

    async def _chore_loop(self, stop: asyncio.Event) -> None:
        # Its own task, so a chore's short transactions interleave with the
        # delivery passes instead of holding them up.
        while not stop.is_set():
            await self.run_chores()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHORE_TICK.total_seconds())

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; a failing pass is logged and the loop goes on."""
        chores = asyncio.create_task(self._chore_loop(stop), name="outbox-chores")
        try:
            await self._deliver(stop)
        finally:
            chores.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chores

    async def _deliver(self, stop: asyncio.Event) -> None:
        """Keep deliveries flowing until ``stop``: claim while there is room, record what
        finished, and otherwise wait for a delivery to finish, a wake-up or the idle
        interval. On ``stop`` the deliveries in flight are finished and recorded."""
        flight = _InFlight()
        claim = True
        try:
            while not stop.is_set() or flight.running or flight.finished:
                if flight.finished:
                    await self._record_safely(flight.take_finished())
                    claim = True  # their lanes are free again
                # Rows waiting for a turn at their receiver take no place, up to as many
                # again as there are places (so a hung receiver cannot pile up claims).
                room = min(
                    self.max_in_flight - flight.attempting,
                    2 * self.max_in_flight - len(flight.running),
                )
                if claim and room > 0 and not stop.is_set():
                    # A full batch: more may be due at once. Otherwise wait for a reason.
                    claim = await self._claim_into(flight, min(room, self.batch_size))
                    if claim:
                        continue
                if flight.finished:
                    continue
                if self._wake.is_set() and room > 0 and not stop.is_set():
                    # Asked for while the claim above ran: claim again before waiting.
                    self._wake.clear()
                    claim = True
                    continue
                claim = await self._wait(flight, stop)
        finally:
            # Cancelled (not stopped): what is still in flight is left unrecorded, and is
            # delivered again once its lease runs out.
            flight.cancel()

    async def _claim_into(self, flight: _InFlight, limit: int) -> bool:
        """Claim up to ``limit`` rows and start delivering them; True when the batch was full."""
        try:
            batch = await self._claim(limit)
        except Exception:
            log.exception("outbox claim failed; trying again shortly")
            return False
        for message, handler in batch:
            flight.start(self._attempt(message, handler, flight), partial(self._crashed, message))
        return len(batch) == limit

    async def _wait(self, flight: _InFlight, stop: asyncio.Event) -> bool:
        """Wait for a delivery to finish, a wake-up, ``stop`` (when nothing is in flight) or
        the idle interval; True when it is time to look for due rows again."""
        flight.progress.clear()
        waiters = [
            asyncio.ensure_future(flight.progress.wait()),
            asyncio.ensure_future(self._wake.wait()),
        ]
        if not flight.running:
            waiters.append(asyncio.ensure_future(stop.wait()))
        _, pending = await asyncio.wait(
            waiters, timeout=self.idle_interval, return_when="FIRST_COMPLETED"
        )
        for waiter in waiters:
            waiter.cancel()
        if self._wake.is_set():
            self._wake.clear()
            return True
        return len(pending) == len(waiters)  # the idle interval passed

    async def _record_safely(self, outcomes: list[Outcome]) -> None:
        """Record finished deliveries; if that fails their rows stay ``in_flight`` and
        are delivered again when their lease runs out (at least once, never lost)."""
        try:
            await self.db.run(lambda s: self._record(s, outcomes))
        except Exception:
            log.exception(
                "recording %d outbox outcomes failed; they are retried after the lease",
                len(outcomes),
            )

    async def _attempt(
        self, message: OutboxMessage, handler: Handler, flight: _InFlight | None = None
    ) -> Outcome:
        """Deliver one row and judge the result; nothing is written yet."""
        if isinstance(handler, Paced):
            return await self._attempt_paced(message, handler, flight)
        return await self._judge(message, handler, self.deadline)

    async def _attempt_paced(
        self, message: OutboxMessage, handler: Paced, flight: _InFlight | None
    ) -> Outcome:
        """Wait for the row's turn (not an attempt yet, and no in-flight place), then
        deliver it in what is left of its deadline. A row that gets no turn while its
        longest attempt still fits is given back unattempted, due again at once."""
        loop = asyncio.get_running_loop()
        claimed = loop.time()
        patience = (self.deadline - handler.longest).total_seconds()
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with _waiting(flight), asyncio.timeout(max(patience, 0.0)):
                    await stack.enter_async_context(handler.turn(message))
            except TimeoutError:
                reason = f"not attempted: no turn at its receiver within {patience:g} s"
                record = _GiveBack(message.id, self.worker_id)
                return Outcome(message, RETRY, self.clock.now(), reason, record)
            left = self.deadline - timedelta(seconds=loop.time() - claimed)
            return await self._judge(message, handler.handle, left)

    async def _judge(
        self, message: OutboxMessage, handler: Handler, deadline: timedelta
    ) -> Outcome:
        """Run ``handler`` within ``deadline`` and turn how it ended into an outcome."""
        budget = asyncio.timeout(deadline.total_seconds())
        try:
            async with budget:
                record = await handler(message)
        except GiveUp as exc:
            return self._failed(message, exc.reason, exc.record)
        except Hold as exc:
            return Outcome(message, HELD, self.clock.now(), exc.reason, exc.record)
        except RetryLater as exc:
            return self._retry(message, exc.reason, exc.delay, exc.record)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and budget.expired():
                # Cancelled like a crash: delivery is at least once, so retrying is safe.
                reason = f"handler ran past its deadline of {self.deadline.total_seconds():g} s"
                return self._retry(message, reason, None, None)
            log.exception("handler for %s row %s raised", message.kind, message.id)
            return self._retry(message, f"{type(exc).__name__}: {exc}", None, None)
        return Outcome(message, DONE, self.clock.now(), None, record)

    def _crashed(self, message: OutboxMessage, exc: BaseException) -> Outcome:
        """The outcome of a delivery task that raised outside its handler: tried again."""
        log.error("delivering %s row %s failed", message.kind, message.id, exc_info=exc)
        return self._retry(message, f"{type(exc).__name__}: {exc}", None, None)

    def _retry(
        self, message: OutboxMessage, reason: str, delay: timedelta | None, record: Record | None
    ) -> Outcome:
        route = self.dispatcher.routes[message.kind]
        scheduled = route.delay_after(message.attempts)
        if scheduled is None:
            return self._failed(
                message, f"gave up after {message.attempts} attempts: {reason}", record
            )
        wait = scheduled if delay is None else delay
        return Outcome(message, RETRY, self.clock.now() + wait, reason, record)

    def _failed(self, message: OutboxMessage, reason: str, record: Record | None) -> Outcome:
        log.warning("outbox row %s (%s) failed: %s", message.id, message.kind, reason)
        return Outcome(message, FAILED, self.clock.now(), reason, record)

    def _record(self, session: Session, outcomes: list[Outcome]) -> None:
        """The outcomes of a batch, with what their handlers asked to log, in one transaction.

        Every row's outcome is marked first, all in one statement; a row whose
        lease ran out meanwhile is left to its new owner, and its handler's log
        entry is still written, since the attempt did happen. Then the
        handlers' records run, so a record sees the whole batch settled
        (disabling a webhook subscription puts aside its rows that this same
        batch has just scheduled for a retry). Records run in lane order;
        :class:`Batched` ones are written together per class, in lane order, by
        one call (a webhook batch locks its subscriptions in id order, in one
        statement). Every worker thus takes those locks in the same order and
        two batches never wait for each other crosswise (a deadlock on PostgreSQL).
        """
        outbox.settle(session, self.worker_id, [_settled(o) for o in outcomes])
        batched: dict[type[Batched], list[Batched]] = {}
        for outcome in sorted(outcomes, key=lambda o: (o.message.lane or "", o.message.id)):
            record = outcome.record
            if isinstance(record, Batched):
                batched.setdefault(type(record), []).append(record)
            elif record is not None:
                record(session)
        for kind, records in batched.items():
            kind.write_all(session, records)


def _settled(outcome: Outcome) -> outbox.Settled:
    status = {DONE: outbox.DONE, RETRY: outbox.PENDING, FAILED: outbox.FAILED, HELD: outbox.HELD}
    return outbox.Settled(outcome.message.id, status[outcome.status], outcome.at, outcome.error)


DONE, RETRY, FAILED, HELD = "done", "retry", "failed", "held"

CHORE_TICK = timedelta(seconds=30)
"""How often the chore loop looks for due chores; intervals shorter than this round up to it."""


class _InFlight:
    """The deliveries a running worker has in flight, and those finished but not recorded."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Outcome]] = set()
        self.waiting = 0  # of the running, those waiting for a turn at their receiver
        self.finished: list[Outcome] = []
        self.progress = asyncio.Event()  # set whenever a delivery finishes

    @property
    def attempting(self) -> int:
        """The deliveries that hold an in-flight place: running, not waiting for a turn."""
        return len(self.running) - self.waiting

    def start(
        self,
        attempt: Coroutine[Any, Any, Outcome],
        crashed: Callable[[BaseException], Outcome],
    ) -> None:
        """Run ``attempt``; should it raise, ``crashed`` gives the row's outcome instead."""
        task = asyncio.create_task(attempt)
        self.running.add(task)
        task.add_done_callback(lambda done: self._collect(done, crashed))

    def _collect(
        self, task: asyncio.Task[Outcome], crashed: Callable[[BaseException], Outcome]
    ) -> None:
        self.running.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is None:
                self.finished.append(task.result())
            else:
                try:
                    self.finished.append(crashed(exc))
                except Exception:  # the row stays in flight until its lease ends
                    log.exception("settling a crashed delivery failed; see the error before")
        self.progress.set()

    def take_finished(self) -> list[Outcome]:
        finished, self.finished = self.finished, []
        return finished

    def cancel(self) -> None:
        for task in list(self.running):
            task.cancel()


@dataclass(frozen=True, slots=True)
class _GiveBack:
    """Takes back the attempt the claim counted for a row that was never attempted
    (run after the row was settled as ``pending``, in the same transaction)."""

    message_id: int
    worker_id: str

    def __call__(self, session: Session) -> object:
        t = orm.outbox
        return session.execute(
            update(t)
            .where(
                t.c.id == self.message_id,
                t.c.status == outbox.PENDING,
                t.c.claimed_by == self.worker_id,
                t.c.claimed_until.is_(None),
            )
            .values(attempts=t.c.attempts - 1)
        )


@contextlib.asynccontextmanager
async def _waiting(flight: _InFlight | None) -> AsyncIterator[None]:
    """Count the current delivery as waiting for a turn while the block runs."""
    if flight is None:
        yield
        return
    flight.waiting += 1
    try:
        yield
    finally:
        flight.waiting -= 1


@dataclass(frozen=True, slots=True)
class Outcome:
    message: OutboxMessage
    status: str
    at: datetime  # when it finished, or when to try again
    error: str | None
    record: Record | None
