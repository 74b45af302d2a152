"""``GET /metrics``: Prometheus text format (docs/operations.md, "Metrics").

Who may scrape is decided here, by two settings:

* ``KEYAUTOMAT_METRICS_ALLOW``: the client networks (CIDR, comma-separated;
  default loopback only). The address judged is the TCP peer. A request that
  came through a proxy (it carries ``Forwarded``, ``X-Forwarded-For`` or
  ``X-Real-IP``) is never admitted by its address, since a proxy on the same
  host would make every visitor look like loopback: it needs the token.
* ``KEYAUTOMAT_METRICS_TOKEN``: when set, every scrape must also send
  ``Authorization: Bearer <token>``.

A refused scrape gets 403 in the one error shape; why is logged, not answered.

The body is the per-process families of ``keyautomat.metrics`` (this process's,
or every process's of the host in multiprocess mode) followed by the facts of
the database (``service_layer/metric_facts.py``), read at most once per
``SHARED_FOR`` and shared by every scrape in that time.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from keyautomat import metrics
from keyautomat.bootstrap import Container
from keyautomat.config import IpNetwork
from keyautomat.entrypoints.api.errors import error_response
from keyautomat.service_layer.metric_facts import STATES, Facts, read_facts

log = logging.getLogger(__name__)

PATH = "/metrics"
SHARED_FOR = timedelta(seconds=2)
REFUSED = "Metrics are not available to this client"
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
NO_STORE = {"Cache-Control": "no-store"}


def refusal(
    client_host: str | None,
    headers: Mapping[str, str],
    *,
    allow: Iterable[IpNetwork],
    token: str | None,
) -> str | None:
    """Why this scrape is refused (for the log), or None when it may have the metrics."""
    if token is not None:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return "no or wrong bearer token"
    elif any(name in headers for name in PROXY_HEADERS):
        return "came through a proxy, and no token is configured"
    try:
        address = ipaddress.ip_address(client_host or "")
    except ValueError:
        return f"client address {client_host!r} is not an IP address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not any(address in network for network in allow):
        return f"client {address} is outside KEYAUTOMAT_METRICS_ALLOW"
    return None


def families(facts: Facts, kinds: Iterable[str]) -> Iterator[GaugeMetricFamily]:
    """The database facts as gauge families; every outbox kind the workers deliver has a
    series in every state, at 0 when it has no rows."""
    all_kinds = sorted({*kinds, *(kind for kind, _ in facts.outbox.depth)})
    depth = GaugeMetricFamily(
        "keyautomat_outbox_depth",
        "Open outbox rows, by kind and state (due, scheduled, in_flight, held).",
        labels=("kind", "state"),
    )
    age = GaugeMetricFamily(
        "keyautomat_outbox_oldest_due_age_seconds",
        "How long the oldest due, unclaimed outbox row of each kind has waited (0: none).",
        labels=("kind",),
    )
    for kind in all_kinds:
        for state in STATES:
            depth.add_metric((kind, state), facts.outbox.depth.get((kind, state), 0))
        age.add_metric((kind,), facts.outbox_age_seconds(kind))
    yield depth
    yield age
    devices = facts.devices
    yield GaugeMetricFamily(
        "keyautomat_devices_bound", "Automats with bound hardware.", value=devices.bound
    )
    yield GaugeMetricFamily(
        "keyautomat_devices_online",
        "Bound automats connected and heard from within KEYAUTOMAT_DEVICE_OFFLINE_AFTER_SECONDS.",
        value=devices.online,
    )
    unsynced = GaugeMetricFamily(
        "keyautomat_devices_unsynced",
        "Bound automats that have not acknowledged their latest pincode set, by connection.",
        labels=("connection",),
    )
    unsynced.add_metric(("online",), devices.unsynced_online)
    unsynced.add_metric(("offline",), devices.unsynced_offline)
    yield unsynced
    yield GaugeMetricFamily(
        "keyautomat_device_sync_versions_behind_max",
        "The most pincode-set versions an online automat is behind (0: all in sync).",
        value=devices.most_versions_behind,
    )


class FactsCollector(Collector):
    def __init__(self, facts: Facts, kinds: Iterable[str]) -> None:
        self.facts = facts
        self.kinds = list(kinds)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return families(self.facts, self.kinds)


class SharedFacts:
    """The database facts, read at most once per ``SHARED_FOR`` (by the container's clock)."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self._lock = asyncio.Lock()
        self._last: Facts | None = None

    async def current(self) -> Facts:
        async with self._lock:
            now = self.container.clock.now()
            if self._last is not None and now - self._last.at < SHARED_FOR:
                return self._last
            offline_after = self.container.settings.device_offline_after_seconds
            self._last = await self.container.db.run(lambda s: read_facts(s, now, offline_after))
            return self._last


def render(facts: Facts, kinds: Iterable[str]) -> bytes:
    """The exposition: the per-process families, then the database facts."""
    database = CollectorRegistry(auto_describe=False)
    database.register(FactsCollector(facts, kinds))
    return generate_latest(metrics.process_registry()) + generate_latest(database)


def add_metrics(app: FastAPI, container: Container) -> None:
    settings = container.settings
    allow = settings.metrics_networks
    token = settings.metrics_token
    shared = SharedFacts(container)

    @app.get(PATH, include_in_schema=False)
    async def metrics_page(request: Request) -> Response:
        client = request.client.host if request.client is not None else None
        why = refusal(client, request.headers, allow=allow, token=token)
        if why is not None:
            log.info("metrics refused: %s", why)
            return error_response(403, REFUSED)
        facts = await shared.current()
        kinds = container.dispatcher.kinds
        # Rendering takes milliseconds per thousand samples: kept off the event loop.
        body = await asyncio.to_thread(render, facts, kinds)
        # The classic text format (names escaped to underscores): every Prometheus reads it.
        return Response(body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, **NO_STORE})
