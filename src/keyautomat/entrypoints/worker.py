"""The outbox worker: claims due rows, delivers them, records each outcome.

It runs as ``keyautomat worker`` (any number of them against PostgreSQL) and
in-process under ``keyautomat serve``. One pass claims a batch and delivers its
rows concurrently; rows of one lane are never in the same batch, because only
lane heads can be claimed. Once a minute it also deletes expired idempotency
keys (:meth:`OutboxWorker.prune`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from keyautomat.adapters.db import Database
from keyautomat.service_layer import idempotency, outbox
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.delivery import Dispatcher, GiveUp, Record, RetryLater
from keyautomat.service_layer.outbox import OutboxMessage

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=120)
"""How long a claimed row stays this worker's before another worker may claim it."""


PRUNE_EVERY = timedelta(minutes=1)
"""How often a worker deletes expired request state (idempotency keys)."""


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
        self._next_prune: datetime | None = None

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

    async def prune(self) -> int:
        """Delete the idempotency keys expired by now, in short batches; how many went."""
        return await idempotency.prune_expired(self.db, self.clock.now())

    async def prune_when_due(self) -> None:
        """:meth:`prune` once every :data:`PRUNE_EVERY` (on the first call, then by the clock)."""
        now = self.clock.now()
        if self._next_prune is not None and now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY
        try:
            await self.prune()
        except Exception:
            log.exception("pruning expired idempotency keys failed; trying again later")

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; a failing pass is logged and the loop goes on."""
        while not stop.is_set():
            await self.prune_when_due()
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
        """
        for outcome in outcomes:
            message = outcome.message
            if outcome.status == DONE:
                outbox.mark_done(session, message.id, self.worker_id, outcome.at)
            elif outcome.status == RETRY:
                outbox.mark_retry(
                    session,
                    message.id,
                    self.worker_id,
                    due_at=outcome.at,
                    error=outcome.error or "",
                )
            else:
                outbox.mark_failed(
                    session,
                    message.id,
                    self.worker_id,
                    now=outcome.at,
                    error=outcome.error or "",
                )
            if outcome.record is not None:
                outcome.record(session)


DONE, RETRY, FAILED = "done", "retry", "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    message: OutboxMessage
    status: str
    at: datetime  # when it finished, or when to try again
    error: str | None
    record: Record | None
