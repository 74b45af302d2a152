"""The outbox worker: claims due rows, delivers them, records each outcome.

It runs as ``keyautomat worker`` (any number of them against PostgreSQL) and
in-process under ``keyautomat serve``. One pass claims a batch and delivers its
rows concurrently; rows of one lane are never in the same batch, because only
lane heads can be claimed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import timedelta

from keyautomat.adapters.db import Database
from keyautomat.service_layer import outbox
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.delivery import Dispatcher, GiveUp, RetryLater
from keyautomat.service_layer.outbox import OutboxMessage

log = logging.getLogger(__name__)


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
        lease: timedelta = timedelta(seconds=120),
        idle_interval: float = 0.25,
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.clock = clock
        self.worker_id = worker_id or new_worker_id()
        self.batch_size = batch_size
        self.lease = lease
        self.idle_interval = idle_interval
        self._wake = asyncio.Event()

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
            await asyncio.gather(*(self._deliver(message) for message in batch))
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

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; a failing pass is logged and the loop goes on."""
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

    async def _deliver(self, message: OutboxMessage) -> None:
        route = self.dispatcher.routes[message.kind]
        try:
            await route.handler(message)
        except GiveUp as exc:
            await self._fail(message, exc.reason)
        except RetryLater as exc:
            await self._retry(message, exc.reason, exc.delay)
        except Exception as exc:
            log.exception("handler for %s row %s raised", message.kind, message.id)
            await self._retry(message, f"{type(exc).__name__}: {exc}", None)
        else:
            now = self.clock.now()
            await self.db.run(lambda s: outbox.mark_done(s, message.id, self.worker_id, now))

    async def _retry(self, message: OutboxMessage, reason: str, delay: timedelta | None) -> None:
        route = self.dispatcher.routes[message.kind]
        wait = route.delay_after(message.attempts) if delay is None else delay
        if wait is None or route.delay_after(message.attempts) is None:
            await self._fail(message, f"gave up after {message.attempts} attempts: {reason}")
            return
        due = self.clock.now() + wait
        await self.db.run(
            lambda s: outbox.mark_retry(s, message.id, self.worker_id, due_at=due, error=reason)
        )

    async def _fail(self, message: OutboxMessage, reason: str) -> None:
        now = self.clock.now()
        log.warning("outbox row %s (%s) failed: %s", message.id, message.kind, reason)
        await self.db.run(
            lambda s: outbox.mark_failed(s, message.id, self.worker_id, now=now, error=reason)
        )
