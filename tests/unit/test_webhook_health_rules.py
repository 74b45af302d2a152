"""When a webhook subscription must be disabled, and what its counters become (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyautomat.domain.text import one_line
from keyautomat.domain.webhook_health import (
    ACTIVE,
    DISABLED,
    PENDING,
    Health,
    after_attempt,
    enabled,
    must_disable,
)
from keyautomat.domain.webhooks import url_for_people

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
FIVE_DAYS = timedelta(days=5)


def fail(health: Health, at: datetime, *, exhausted: bool = False) -> Health:
    return after_attempt(health, success=False, at=at, exhausted=exhausted, disable_after=FIVE_DAYS)


def succeed(health: Health, at: datetime) -> Health:
    return after_attempt(health, success=True, at=at, exhausted=False, disable_after=FIVE_DAYS)


def test_the_first_failure_after_a_success_starts_the_failing_streak() -> None:
    health = succeed(Health(ACTIVE), T0)
    health = fail(health, T0 + timedelta(hours=1))
    health = fail(health, T0 + timedelta(hours=2))
    assert health.failing_since == T0 + timedelta(hours=1)
    assert health.last_failure_at == T0 + timedelta(hours=2)
    assert health.last_success_at == T0


def test_a_success_ends_the_streak() -> None:
    health = fail(Health(ACTIVE), T0)
    health = succeed(health, T0 + timedelta(days=4))
    assert health.failing_since is None
    assert health.delivered == 1


def test_past_the_threshold_it_is_disabled_only_once_a_delivery_is_exhausted() -> None:
    health = fail(Health(ACTIVE), T0)
    late = T0 + FIVE_DAYS + timedelta(hours=1)
    still_retrying = fail(health, late, exhausted=False)
    assert still_retrying.state == ACTIVE
    disabled = fail(still_retrying, late + timedelta(minutes=30), exhausted=True)
    assert disabled.state == DISABLED
    assert disabled.disabled_at == late + timedelta(minutes=30)
    assert disabled.failed == 1


def test_an_exhausted_delivery_before_the_threshold_only_counts_as_failed() -> None:
    health = fail(Health(ACTIVE), T0)
    health = fail(health, T0 + FIVE_DAYS - timedelta(seconds=1), exhausted=True)
    assert health.state == ACTIVE
    assert health.failed == 1
    assert health.disabled_at is None


def test_the_threshold_itself_is_enough() -> None:
    health = fail(Health(ACTIVE), T0)
    assert fail(health, T0 + FIVE_DAYS, exhausted=True).state == DISABLED


def test_the_streak_counts_from_the_first_failure_even_with_a_long_quiet_gap() -> None:
    # One failure, then no events for a week: the next exhausted delivery disables it,
    # since nothing succeeded in between.
    health = fail(Health(ACTIVE), T0, exhausted=True)
    assert health.state == ACTIVE
    health = fail(health, T0 + timedelta(days=7), exhausted=True)
    assert health.state == DISABLED


def test_a_success_recorded_late_clears_only_a_streak_that_began_before_it() -> None:
    health = fail(Health(ACTIVE), T0 + timedelta(minutes=10))
    # A concurrent lane's success, attempted before the streak began, is recorded now.
    health = succeed(health, T0)
    assert health.failing_since == T0 + timedelta(minutes=10)
    assert health.last_success_at == T0


def test_a_failure_recorded_late_does_not_start_a_streak_before_the_last_success() -> None:
    health = succeed(Health(ACTIVE), T0 + timedelta(minutes=10))
    health = fail(health, T0)
    assert health.failing_since is None
    assert health.last_failure_at == T0


def test_a_failure_recorded_late_moves_the_streak_start_back() -> None:
    health = fail(Health(ACTIVE), T0 + timedelta(minutes=10))
    health = fail(health, T0 + timedelta(minutes=5))
    assert health.failing_since == T0 + timedelta(minutes=5)
    assert health.last_failure_at == T0 + timedelta(minutes=10)


@pytest.mark.parametrize("state", [PENDING, DISABLED])
def test_only_an_active_subscription_is_disabled(state: str) -> None:
    health = Health(state, failing_since=T0)
    late = T0 + timedelta(days=30)
    assert not must_disable(health, at=late, exhausted=True, disable_after=FIVE_DAYS)
    assert fail(health, late, exhausted=True).state == state


def test_a_disabled_subscription_keeps_its_disabling_time_when_stragglers_fail() -> None:
    health = fail(Health(ACTIVE), T0)
    disabled = fail(health, T0 + FIVE_DAYS, exhausted=True)
    again = fail(disabled, T0 + FIVE_DAYS + timedelta(hours=1), exhausted=True)
    assert again.disabled_at == T0 + FIVE_DAYS
    assert again.failed == 2


def test_enabling_starts_a_fresh_streak_and_keeps_the_counters() -> None:
    health = fail(Health(ACTIVE, delivered=7), T0)
    health = fail(health, T0 + FIVE_DAYS, exhausted=True)
    back = enabled(health)
    assert back.state == ACTIVE
    assert back.failing_since is None
    assert back.disabled_at is None
    assert (back.delivered, back.failed) == (7, 1)
    # The old streak is forgotten: failing a day later disables nothing.
    assert fail(back, T0 + FIVE_DAYS + timedelta(days=1), exhausted=True).state == ACTIVE


def test_the_url_shown_in_an_email_drops_credentials_and_query() -> None:
    assert (
        url_for_people("https://user:pw@hooks.example.com:8443/in/x?token=s3cret#f")
        == "https://hooks.example.com:8443/in/x"
    )
    assert url_for_people("https://[2001:db8::1]/hook") == "https://[2001:db8::1]/hook"


def test_text_for_one_line_of_an_email_has_no_line_breaks_and_is_bounded() -> None:
    assert one_line("PMS\r\nBcc: x@evil.example\t hook", 100) == "PMS Bcc: x@evil.example hook"
    assert one_line("x" * 10, 5) == "xxxx…"
