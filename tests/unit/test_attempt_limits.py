"""Failed attempts of one key back off exponentially up to a cap and are forgotten only after a
quiet day; a shared rate refuses beyond its limit per window and forgets after one window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyautomat.domain.attempts import AttemptLimiter, RateLimit

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_the_free_failures_pass_and_each_one_after_doubles_the_back_off() -> None:
    limiter = AttemptLimiter(free=3, cap=timedelta(hours=1))
    for _ in range(3):
        limiter.failed("hw", T0)
        assert not limiter.blocked("hw", T0)
    assert limiter.failed("hw", T0) == 4
    assert limiter.just_blocked(4)
    assert limiter.blocked("hw", T0 + timedelta(milliseconds=999))
    assert not limiter.blocked("hw", T0 + timedelta(seconds=1))
    limiter.failed("hw", T0 + timedelta(seconds=1))
    assert limiter.blocked("hw", T0 + timedelta(seconds=2.9))
    assert not limiter.blocked("hw", T0 + timedelta(seconds=3))
    assert not limiter.just_blocked(5)


def test_the_back_off_never_exceeds_its_cap_however_many_failures() -> None:
    limiter = AttemptLimiter(free=0, cap=timedelta(minutes=5))
    for n in range(200):
        limiter.failed("hw", T0 + timedelta(seconds=n))
    assert limiter.blocked("hw", T0 + timedelta(seconds=199 + 299))
    assert not limiter.blocked("hw", T0 + timedelta(seconds=199 + 300))


def test_failures_are_forgotten_only_after_a_quiet_day_and_keys_are_separate() -> None:
    limiter = AttemptLimiter(free=1, cap=timedelta(hours=1))
    limiter.failed("a", T0)
    assert limiter.failed("a", T0 + timedelta(hours=23)) == 2
    assert limiter.failed("a", T0 + timedelta(hours=47)) == 1
    assert not limiter.blocked("b", T0 + timedelta(hours=47))


def test_made_up_keys_cannot_grow_the_books_without_bound() -> None:
    limiter = AttemptLimiter(free=1, cap=timedelta(hours=1), max_keys=100)
    for n in range(1000):
        limiter.failed(f"hw-{n}", T0)
    assert len(limiter._records) == 100


def test_the_shared_rate_allows_its_limit_per_window_and_refuses_beyond_it() -> None:
    rate = RateLimit(limit=3, window=timedelta(minutes=1))
    for n in range(3):
        assert rate.take(T0 + timedelta(seconds=n))
    assert not rate.take(T0 + timedelta(seconds=3))
    assert not rate.take(T0 + timedelta(seconds=59.9))
    # The budget comes back as each unit leaves the window: no back-off to wait out.
    assert rate.take(T0 + timedelta(seconds=60))
    assert not rate.take(T0 + timedelta(seconds=60.5))
    assert rate.take(T0 + timedelta(seconds=61))


def test_a_unit_given_back_by_an_attempt_that_did_not_count_is_free_again() -> None:
    rate = RateLimit(limit=2, window=timedelta(minutes=1))
    assert rate.take(T0)
    assert rate.take(T0 + timedelta(seconds=1))
    rate.give_back(T0 + timedelta(seconds=1))
    assert rate.take(T0 + timedelta(seconds=2))
    assert not rate.take(T0 + timedelta(seconds=3))
    rate.give_back(T0 + timedelta(hours=1))  # nothing taken then: no effect
    assert not rate.take(T0 + timedelta(seconds=4))


def test_one_failure_an_hour_never_exhausts_the_shared_rate() -> None:
    rate = RateLimit(limit=2, window=timedelta(minutes=1))
    for hour in range(24 * 30):
        now = T0 + timedelta(hours=hour)
        assert rate.take(now)
        assert not rate.alarm_due(now)


def test_the_alarm_is_due_once_per_window_while_the_rate_stays_spent() -> None:
    rate = RateLimit(limit=2, window=timedelta(minutes=1))
    alarms = []
    for n in range(300):  # two attempts a second for 150 s
        now = T0 + timedelta(seconds=n * 0.5)
        rate.take(now)
        if rate.alarm_due(now):
            alarms.append(n)
    assert alarms == [1, 121, 241]  # at 0.5 s, 60.5 s and 120.5 s


def test_the_shared_rate_keeps_at_most_its_limit_of_times() -> None:
    rate = RateLimit(limit=5, window=timedelta(hours=1))
    for n in range(10_000):
        rate.take(T0 + timedelta(milliseconds=n))
    assert len(rate._times) == 5
    with pytest.raises(ValueError, match="at least one"):
        RateLimit(limit=0, window=timedelta(minutes=1))


def test_asking_whether_the_rate_is_spent_takes_nothing() -> None:
    rate = RateLimit(limit=2, window=timedelta(minutes=1))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert not rate.spent(start)
    assert not rate.spent(start)
    assert rate.take(start)
    assert rate.take(start)
    assert rate.spent(start)
    assert not rate.spent(start + timedelta(minutes=1))
