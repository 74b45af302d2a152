"""Every Prometheus metric family of keyautomat, and the small functions callers use.

docs/operations.md, "Metrics", lists each family, its labels and what to alert
on. Two sorts:

* **Per-process counters, histograms and a gauge**, defined here (requests,
  requests in flight, signature failures, rate limiting, overload refusals,
  contracts created, handovers, device commands, webhook and notification
  deliveries, iLOQ calls). When the environment sets
  ``PROMETHEUS_MULTIPROC_DIR`` (read by prometheus_client when it is imported),
  every process of the host writes them to files in that folder and
  ``/metrics`` adds up all the processes' files; otherwise they are this
  process's own.
* **Facts of the database** (outbox depth and age, devices online, sync lag):
  computed when ``/metrics`` is scraped (``service_layer/metric_facts.py``), so
  every process reports the same truth. They are not defined here.

Labels take values from short fixed sets or from route templates only: never a
raw path (``/sign/{token}`` carries a credential), an id or a message text.
Callers call the functions below; none of them fails or blocks.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import event
from sqlalchemy.orm import Session

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Families are registered here, not in prometheus_client's global registry: the
# exposition chooses between this registry and the multiprocess files (``collect``).
REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds; request and command latencies from a millisecond to half a minute.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

SIGNATURE_REASONS = (
    "missing_headers",
    "bad_account_id",
    "bad_timestamp",
    "unknown_account",
    "bad_signature",
    "replayed",
)
# api: signed requests over an account's budget; device_hello: hellos with an installation
# pincode refused unread while their device (or all devices) are backed off.
RATE_LIMITED_SURFACES = ("api", "device_hello")
# Admission control (entrypoints/api/admission.py): every slot busy and the queue full, or
# no slot came free within the wait.
OVERLOAD_REASONS = ("queue_full", "wait_expired")
HANDOVER_EVENTS = ("fetched", "returned", "not_fetched", "not_returned")
CONTRACT_KINDS = ("iloq", "mechanical")
WEBHOOK_OUTCOMES = ("delivered", "failed")
NOTIFICATION_CHANNELS = ("email", "sms")
NOTIFICATION_OUTCOMES = ("sent", "skipped", "failed")

# One histogram, no separate counter: its ``_count`` is the number of requests, and each
# request then costs one observation (in multiprocess mode a write to a mapped file).
_request_seconds = Histogram(
    "keyautomat_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method, route template "
    "and status; _count is the number of requests.",
    ("method", "route", "status"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
# The histogram's child of each label set seen, as ``labels()`` returns it: that call checks
# and looks the labels up under a lock, two thirds of a request's observation. The set is
# the metric's own (methods, route templates, statuses), so this grows no further than it.
_request_children: dict[tuple[str, str, str], Histogram] = {}
_signature_failures = Counter(
    "keyautomat_signature_failures",
    "Signed requests refused before the application ran, by reason.",
    ("reason",),
    registry=REGISTRY,
)
_rate_limited = Counter(
    "keyautomat_rate_limited_requests",
    "Requests refused by a rate limit, by surface (api: 429; device_hello: installation "
    "pincode hellos refused while backed off).",
    ("surface",),
    registry=REGISTRY,
)
_overload_refused = Counter(
    "keyautomat_overload_refused_requests",
    "Requests refused with 429 by admission control before anything else ran, by reason "
    "(queue_full: every slot busy and the wait queue full; wait_expired: no slot came free "
    "within KEYAUTOMAT_ADMISSION_WAIT_MS).",
    ("reason",),
    registry=REGISTRY,
)
# In multiprocess mode each process writes its own value; /metrics shows the sum over the
# live processes.
_requests_in_flight = Gauge(
    "keyautomat_http_requests_in_flight",
    "Requests being handled now under admission control (at most "
    "KEYAUTOMAT_MAX_REQUESTS_IN_FLIGHT per process); exempt paths are not counted.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
_requests_in_flight_limit = Gauge(
    "keyautomat_http_requests_in_flight_limit",
    "Requests admission control lets in at once now, summed over the live processes: "
    "KEYAUTOMAT_MAX_REQUESTS_IN_FLIGHT each, or less while requests hold their slots longer "
    "than KEYAUTOMAT_ADMISSION_TARGET_MS.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
_contracts_created = Counter(
    "keyautomat_contracts_created",
    "Key contracts created (committed), by kind.",
    ("kind",),
    registry=REGISTRY,
)
_handovers = Counter(
    "keyautomat_handovers",
    "Key status changes of contract keys (committed): fetched, returned, not_fetched, "
    "not_returned.",
    ("event",),
    registry=REGISTRY,
)
_device_command_seconds = Histogram(
    "keyautomat_device_command_duration_seconds",
    "Time from sending a command to a device to its acknowledgement (or giving up), by "
    "command and outcome.",
    ("command", "outcome"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
_webhook_deliveries = Counter(
    "keyautomat_webhook_deliveries",
    "Webhook delivery attempts, by outcome.",
    ("outcome",),
    registry=REGISTRY,
)
_webhook_seconds = Histogram(
    "keyautomat_webhook_delivery_duration_seconds",
    "Time of a webhook delivery attempt (connect to the end of the answer), by outcome.",
    ("outcome",),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
_notifications = Counter(
    "keyautomat_notification_deliveries",
    "Notification deliveries handed to a transport (or skipped), by channel and outcome.",
    ("channel", "outcome"),
    registry=REGISTRY,
)
_iloq_seconds = Histogram(
    "keyautomat_iloq_call_duration_seconds",
    "Time of a call to an iLOQ locking system, by system (emulator, s5) and operation.",
    ("system", "operation"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
_iloq_errors = Counter(
    "keyautomat_iloq_call_errors",
    "Calls to an iLOQ locking system that failed, by system, operation and error "
    "(transient: may pass on retry; permanent: refused).",
    ("system", "operation", "error"),
    registry=REGISTRY,
)


def _preset() -> None:
    """Series of the fixed label sets exist from the start at 0: an alert on ``rate()`` or
    ``increase()`` sees the first event, and a dashboard shows 0 rather than nothing."""
    for reason in SIGNATURE_REASONS:
        _signature_failures.labels(reason)
    for surface in RATE_LIMITED_SURFACES:
        _rate_limited.labels(surface)
    for reason in OVERLOAD_REASONS:
        _overload_refused.labels(reason)
    for kind in CONTRACT_KINDS:
        _contracts_created.labels(kind)
    for name in HANDOVER_EVENTS:
        _handovers.labels(name)
    for outcome in WEBHOOK_OUTCOMES:
        _webhook_deliveries.labels(outcome)
    for channel in NOTIFICATION_CHANNELS:
        for outcome in NOTIFICATION_OUTCOMES:
            _notifications.labels(channel, outcome)


_preset()


def is_multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


def process_registry() -> CollectorRegistry:
    """The registry ``/metrics`` exposes for the per-process families: this process's, or,
    in multiprocess mode, a fresh one that adds up every process's files."""
    if not is_multiprocess():
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


if not is_multiprocess():
    # CPU, memory and open files of this process; meaningless summed over processes.
    ProcessCollector(registry=REGISTRY)


# --- what callers call ------------------------------------------------------------------


def request_done(method: str, route: str, status: int, seconds: float) -> None:
    """One HTTP request answered (the edge middleware). ``route`` is a template or "-"."""
    labels = (method if method in METHODS else "other", route, str(status) if status else "-")
    child = _request_children.get(labels)
    if child is None:
        child = _request_children[labels] = _request_seconds.labels(*labels)
    child.observe(seconds)


def signature_failed(reason: str) -> None:
    _signature_failures.labels(reason).inc()


def rate_limited(surface: str = "api") -> None:
    _rate_limited.labels(surface).inc()


def overload_refused(reason: str) -> None:
    """A request refused by admission control; ``reason`` one of ``OVERLOAD_REASONS``."""
    _overload_refused.labels(reason).inc()


def requests_in_flight(count: int) -> None:
    _requests_in_flight.set(count)


def requests_in_flight_limit(limit: int) -> None:
    _requests_in_flight_limit.set(limit)


def device_command_done(command: str, outcome: str, seconds: float) -> None:
    """``outcome``: ok, refused (the device said no), timeout, link_error."""
    _device_command_seconds.labels(command, outcome).observe(seconds)


def webhook_attempted(delivered: bool, seconds: float) -> None:
    outcome = "delivered" if delivered else "failed"
    _webhook_deliveries.labels(outcome).inc()
    _webhook_seconds.labels(outcome).observe(seconds)


def notification_done(channel: str, outcome: str) -> None:
    _notifications.labels(channel, outcome).inc()


def iloq_call_done(system: str, operation: str, seconds: float, error: str | None) -> None:
    """``error``: None, "transient" or "permanent"."""
    _iloq_seconds.labels(system, operation).observe(seconds)
    if error is not None:
        _iloq_errors.labels(system, operation, error).inc()


# Counts of what a transaction did are taken when it commits: a rolled-back attempt (a
# lost race, a retry) must not count, and a retried one must count once.
_PENDING = "keyautomat.metrics.pending"


def after_commit(session: Session, count: Callable[[], None]) -> None:
    """Run ``count`` once ``session``'s transaction has committed; never if it rolls back."""
    session.info.setdefault(_PENDING, []).append(count)


def _run_pending(session: Session) -> None:
    for count in session.info.pop(_PENDING, ()):
        count()


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


# Listened to once, for every session: a listener of its own on each session that counts
# something (every contract's creation) cost ~80 µs to set up, more than the count.
event.listen(Session, "after_commit", _run_pending)
event.listen(Session, "after_rollback", _drop_pending)


def contract_created(session: Session, kind: str) -> None:
    """A contract of ``kind`` was inserted in ``session``'s transaction."""
    after_commit(session, _contracts_created.labels(kind).inc)


def handover(session: Session, key_status: str) -> None:
    """A key took ``key_status`` (``key-fetched``, ...) in ``session``'s transaction."""
    name = key_status.removeprefix("key-").replace("-", "_")
    if name in HANDOVER_EVENTS:
        after_commit(session, _handovers.labels(name).inc)
