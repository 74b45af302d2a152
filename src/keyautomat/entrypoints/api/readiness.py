"""``GET /readyz``: whether this process can do its work now (docs/operations.md, "Readiness").

Three checks, each answered "ok" or a short reason that names no host, user or
value:

* ``database``: a trivial query, within two seconds. (On SQLite it queues behind
  the work before it on the one database thread, which is what a request would
  wait for too.)
* ``broker``: only where the device gateway runs in this process: its link to the
  broker (or the in-process link) is up.
* ``outbox``: the workers make progress. No row a worker could claim now has
  been claimable for longer than ``KEYAUTOMAT_READY_OUTBOX_LAG_SECONDS``; a row
  that waits behind a retrying row of its lane, or for its time, is not late. The
  outbox is shared, so this fails on every process when no worker runs anywhere,
  or when every worker is stuck; there is no heartbeat table, the rows themselves
  are the evidence.

Unauthenticated, like ``/healthz``, so it is cheap to call and cheap to abuse:
one evaluation at most per second (by the container's clock) is shared by every
caller in that second, and the reasons of a failure are logged, not returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.orm import Session

from keyautomat.bootstrap import Container
from keyautomat.entrypoints.api.errors import error_body
from keyautomat.entrypoints.api.schemas import SafeJSONResponse
from keyautomat.service_layer import outbox
from keyautomat.service_layer.clock import Clock

log = logging.getLogger(__name__)

T = TypeVar("T")

OK = "ok"
NOT_CHECKED = "not checked: no database"
CHECK_TIMEOUT_SECONDS = 2.0
SHARED_FOR = timedelta(seconds=1)

_PING = text("SELECT 1")
NO_STORE = {"Cache-Control": "no-store"}


class Runs(Protocol):
    async def run(self, work: Callable[[Session], T]) -> T: ...


class Readiness:
    def __init__(
        self,
        db: Runs,
        clock: Clock,
        *,
        kinds: Callable[[], Sequence[str]],
        max_lag: timedelta,
        broker_connected: Callable[[], bool] | None = None,
    ) -> None:
        """``kinds``: the outbox kinds workers deliver; ``broker_connected``: given only
        when this process runs the device gateway."""
        self.db = db
        self.clock = clock
        self.kinds = kinds
        self.max_lag = max_lag
        self.broker_connected = broker_connected
        self._lock = asyncio.Lock()
        self._last: tuple[datetime, dict[str, str]] | None = None

    async def checks(self) -> dict[str, str]:
        """Each check's verdict; evaluated at most once per second, shared by all callers."""
        async with self._lock:
            now = self.clock.now()
            if self._last is not None and now - self._last[0] < SHARED_FOR:
                return self._last[1]
            verdicts = await self._evaluate(now)
            self._last = (now, verdicts)
            failing = {name: why for name, why in verdicts.items() if why != OK}
            if failing:
                log.warning("not ready: %s", failing)
            return verdicts

    async def _evaluate(self, now: datetime) -> dict[str, str]:
        verdicts = {"database": await self._database()}
        if self.broker_connected is not None:
            verdicts["broker"] = OK if self.broker_connected() else "not connected"
        if verdicts["database"] == OK:
            verdicts["outbox"] = await self._outbox(now)
        else:
            verdicts["outbox"] = NOT_CHECKED
        return verdicts

    async def _database(self) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await self.db.run(lambda s: s.execute(_PING))
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
        except Exception:
            # The exception may name the host and user; the log keeps it, the answer not.
            log.exception("readiness: the database check failed")
            return "unavailable"
        return OK

    async def _outbox(self, now: datetime) -> str:
        kinds = list(self.kinds())
        if not kinds:
            return OK
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                since = await self.db.run(lambda s: outbox.waiting_since(s, now=now, kinds=kinds))
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
        if since is None or now - since <= self.max_lag:
            return OK
        waited = (now - since).total_seconds()
        bound = self.max_lag.total_seconds()
        return f"a message has waited {waited:.0f} s for a worker (at most {bound:g} s)"


def failing(checks: dict[str, str]) -> list[str]:
    """The names of the checks that did not pass."""
    return [name for name, verdict in checks.items() if verdict not in (OK, NOT_CHECKED)]


def add_probes(app: FastAPI, container: Container, *, run_gateway: bool) -> None:
    """``/healthz`` (the process serves HTTP) and ``/readyz`` (it can do its work)."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    readiness = Readiness(
        container.db,
        container.clock,
        kinds=lambda: container.dispatcher.kinds,
        max_lag=timedelta(seconds=container.settings.ready_outbox_lag_seconds),
        broker_connected=(lambda: container.devices.connected) if run_gateway else None,
    )

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> SafeJSONResponse:
        checks = await readiness.checks()
        bad = failing(checks)
        if bad:
            body = {**error_body(503, "Not ready: " + ", ".join(bad)), "checks": checks}
            return SafeJSONResponse(body, status_code=503, headers=NO_STORE)
        return SafeJSONResponse({"ready": True, "checks": checks}, headers=NO_STORE)
