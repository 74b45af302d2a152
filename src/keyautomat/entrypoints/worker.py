"""The outbox worker: claims due rows, delivers them, records each outcome.

It runs as ``keyautomat worker`` (any number of them against PostgreSQL) and
in-process under ``keyautomat serve``. One pass claims a batch and delivers its
rows concurrently; rows of one lane are never in the same batch, because only
lane heads can be claimed. Next to the passes it runs the features' periodic
chores (``Dispatcher.every``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from keyautomat.adapters.db import Database
from keyautomat.service_layer import outbox
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.delivery import Dispatcher, GiveUp, Hold, Record, RetryLater
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
        lease: timedelta = LEASE,
        idle_interval: float = 0.25,
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.clock = clock
        self.worker_id = worker_id or new_worker_id()
        self.batch_size = batch_size
        self.lease = lease
        self.deadline = handler_deadline(lease)
        self.idle_interval = idle_interval
        self._wake = asyncio.Event()
        self._chores_due: dict[str, datetime] = {}

    def wake(self) -> None:
        """Ask for a pass now (after a commit that enqueued something)."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim one batch and deliver it; returns how many rows were claimed."""
        now = self.clock.now()
        kinds = self.dispatcher.kinds
        if not kinds:
            return 0
        batch = await self.db.run(
            lambda s: outbox.claim(
                s,
                worker_id=self.worker_id,
                now=now,
                lease=self.lease,
                limit=self.batch_size,
                kinds=kinds,
            )
        )
        if batch:
            # Deliveries of a pass run concurrently; their outcomes are recorded
            # together in one transaction, not one transaction per row.
            outcomes = await asyncio.gather(*(self._attempt(message) for message in batch))
            await self.db.run(lambda s: self._record(s, list(outcomes)))
        return len(batch)

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
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except Exception:
                log.exception("outbox pass failed; trying again shortly")
                handled = 0
            if handled:
                continue
            self._wake.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            await asyncio.wait(waiters, timeout=self.idle_interval, return_when="FIRST_COMPLETED")
            for waiter in waiters:
                waiter.cancel()

    async def _attempt(self, message: OutboxMessage) -> Outcome:
        """Deliver one row and judge the result; nothing is written yet."""
        route = self.dispatcher.routes[message.kind]
        budget = asyncio.timeout(self.deadline.total_seconds())
        try:
            async with budget:
                record = await route.handler(message)
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
        """The outcomes of one pass, with what their handlers asked to log, in one transaction.

        A row whose lease ran out meanwhile is left to its new owner; its
        handler's log entry is still written, since the attempt did happen.

        Every row's outcome is marked first, then the handlers' records run, so
        a record sees the whole pass settled (disabling a webhook subscription
        puts aside its rows that this same pass has just scheduled for a retry).
        The records run in lane order: what they lock per lane group (a webhook
        subscription's health) is then locked in the same order by every
        worker, so two passes never wait for each other crosswise (a deadlock on
        PostgreSQL).
        """
        for outcome in outcomes:
            self._mark(session, outcome)
        for outcome in sorted(outcomes, key=lambda o: (o.message.lane or "", o.message.id)):
            if outcome.record is not None:
                outcome.record(session)

    def _mark(self, session: Session, outcome: Outcome) -> None:
        message = outcome.message
        if outcome.status == HELD:
            outbox.mark_held(session, message.id, self.worker_id, error=outcome.error or "")
        elif outcome.status == DONE:
            outbox.mark_done(session, message.id, self.worker_id, outcome.at)
        elif outcome.status == RETRY:
            outbox.mark_retry(
                session, message.id, self.worker_id, due_at=outcome.at, error=outcome.error or ""
            )
        else:
            outbox.mark_failed(
                session, message.id, self.worker_id, now=outcome.at, error=outcome.error or ""
            )


DONE, RETRY, FAILED, HELD = "done", "retry", "failed", "held"

CHORE_TICK = timedelta(seconds=30)
"""How often the chore loop looks for due chores; intervals shorter than this round up to it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    message: OutboxMessage
    status: str
    at: datetime  # when it finished, or when to try again
    error: str | None
    record: Record | None
