"""Failed attempts back off exponentially up to a cap, and are forgotten only after a quiet day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keyautomat.domain.attempts import AttemptLimiter

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
