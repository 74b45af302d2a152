"""The health of a webhook subscription: its counters, and when it must be disabled.

A subscription is ``pending`` until its test deliveries pass, then ``active``.
It becomes ``disabled`` when its receiver has been failing for too long
(``KEYAUTOMAT_WEBHOOKS_DISABLE_AFTER_DAYS``): counted from the first failed
attempt after the last successful one, and decided only when a delivery has
used up its whole retry schedule, so a receiver that is merely slow to recover
never loses its subscription in the middle of a retry. Only an admin makes it
``active`` again.

Everything here is pure: the caller reads the subscription's health under a
row lock, asks :func:`after_attempt` what it becomes, and writes that back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

PENDING = "pending"
ACTIVE = "active"
DISABLED = "disabled"
STATES = (PENDING, ACTIVE, DISABLED)


@dataclass(frozen=True, slots=True)
class Health:
    """What a subscription's deliveries have shown so far.

    ``delivered`` and ``failed`` count deliveries (a delivery is one event to one
    subscription, however many attempts it took); the times are of attempts.
    """

    state: str
    failing_since: datetime | None = None
    delivered: int = 0
    failed: int = 0
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    disabled_at: datetime | None = None


def must_disable(
    health: Health, *, at: datetime, exhausted: bool, disable_after: timedelta
) -> bool:
    """True when a failed attempt at ``at`` must disable the subscription.

    Only an active subscription is disabled, only by a delivery whose retry
    schedule has run out (``exhausted``), and only when the receiver has been
    failing for at least ``disable_after`` by then.
    """
    return (
        health.state == ACTIVE
        and exhausted
        and health.failing_since is not None
        and at - health.failing_since >= disable_after
    )


def after_attempt(
    health: Health,
    *,
    success: bool,
    at: datetime,
    exhausted: bool,
    disable_after: timedelta,
) -> Health:
    """The health after one live attempt that started at ``at``.

    Attempts of several lanes run concurrently and are recorded in whatever
    order their workers finish, so each time is compared, not assumed to be the
    newest: a success clears the failing streak only if it is not older than
    the streak's first failure, and a failure older than the last success does
    not start one.
    """
    if success:
        failing_since = health.failing_since
        if failing_since is not None and at >= failing_since:
            failing_since = None
        return replace(
            health,
            delivered=health.delivered + 1,
            last_success_at=_latest(health.last_success_at, at),
            failing_since=failing_since,
        )
    failing_since = health.failing_since
    after_last_success = health.last_success_at is None or at > health.last_success_at
    if after_last_success and (failing_since is None or at < failing_since):
        failing_since = at
    failed = replace(
        health,
        failed=health.failed + (1 if exhausted else 0),
        last_failure_at=_latest(health.last_failure_at, at),
        failing_since=failing_since,
    )
    if must_disable(failed, at=at, exhausted=exhausted, disable_after=disable_after):
        return replace(failed, state=DISABLED, disabled_at=at)
    return failed


def enabled(health: Health) -> Health:
    """An admin re-enabled it: active, with a fresh failing streak."""
    return replace(health, state=ACTIVE, failing_since=None, disabled_at=None)


def _latest(current: datetime | None, at: datetime) -> datetime:
    return at if current is None or at > current else current
