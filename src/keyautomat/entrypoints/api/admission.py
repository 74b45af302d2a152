"""Admission control at the API's door (docs/api.md, "Overload"; the rule: admission.py).

A pure ASGI middleware just inside the edge (``edge.py``), so a refused request still
has its request id, its access line and its place in the request metrics, and outside
everything else: a request refused here has had no byte of its body read, no account
looked up, no signature checked, no database work queued. The refusal is 429 ``Server
busy; retry later`` in the one error shape with ``Retry-After: 1``, on a connection
kept alive.

Exempt: ``/healthz``, ``/readyz`` and ``/metrics``, which must answer under overload
(an orchestrator restarting a busy process, or a scrape going blind, would make it
worse); each is cheap and shares its database reads (readiness.py, metrics_endpoint.py).

A refusal is counted (``keyautomat_overload_refused_requests_total``) and logged as a
warning at most once per ``LOG_EVERY_SECONDS`` with the number refused since the last
line, so the log cannot become the next bottleneck.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from keyautomat import metrics
from keyautomat.admission import CURRENT, Slots, Ticket
from keyautomat.entrypoints.api.errors import send_error

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
BUSY = "Server busy; retry later"
RETRY_AFTER_SECONDS = 1
RETRY_AFTER = ((b"retry-after", str(RETRY_AFTER_SECONDS).encode()),)
LOG_EVERY_SECONDS = 10.0


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        slots: Slots,
        exempt_paths: frozenset[str] = EXEMPT_PATHS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.slots = slots
        self.exempt_paths = exempt_paths
        self.monotonic = monotonic
        self._refused_unlogged = 0
        self._next_log = float("-inf")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        slots = self.slots
        if not slots.try_acquire():
            if slots.waiting >= slots.max_waiting:
                await self._refuse(send, "queue_full")
                return
            if not await slots.acquire():
                await self._refuse(send, "wait_expired")
                return
        ticket = Ticket(slots)
        token = CURRENT.set(ticket)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT.reset(token)
            ticket.release()

    async def _refuse(self, send: Send, reason: str) -> None:
        metrics.overload_refused(reason)
        self._refused_unlogged += 1
        now = self.monotonic()
        if now >= self._next_log:
            log.warning(
                "overloaded: refused %d request(s) since the last such line; "
                "%d in flight (limit %d), %d waiting",
                self._refused_unlogged,
                self.slots.held,
                self.slots.limit,
                self.slots.waiting,
            )
            self._refused_unlogged = 0
            self._next_log = now + LOG_EVERY_SECONDS
        await send_error(send, 429, BUSY, RETRY_AFTER)
