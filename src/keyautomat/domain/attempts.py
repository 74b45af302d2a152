"""Limiting failed attempts (docs/device-protocol.md, "Limits on installation pincodes").

``AttemptLimiter`` backs off per key with doubling blocks; ``RateLimit`` is a plain
sliding-window rate for one shared budget.

A key (e.g. a device's hwId) may fail ``free`` times; each
failure after that blocks the key for ``base * 2^(n - free)``, at most ``cap``.
Failures are forgotten only after ``forget_after`` without any: an attacker who
waits out one block starts the next one twice as long, and a patient one gets a
handful of guesses a day. Refusals while blocked are not counted as failures:
they test nothing.

The books live in process memory, so a refusal costs no database work; they are
bounded (``max_keys``) so that made-up keys cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

_MAX_DOUBLINGS = 40  # 2^40 s is beyond any cap: no overflow, whatever the count


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: datetime
    blocked_until: datetime


class AttemptLimiter:
    def __init__(
        self,
        *,
        free: int,
        cap: timedelta,
        base: timedelta = timedelta(seconds=1),
        forget_after: timedelta = timedelta(hours=24),
        max_keys: int = 100_000,
    ) -> None:
        self.free = free
        self.cap = cap
        self.base = base
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def blocked(self, key: str, now: datetime) -> bool:
        record = self._records.get(key)
        return record is not None and now < record.blocked_until

    def block_after(self, failures: int) -> timedelta | None:
        """How long the failure that brought the count to ``failures`` blocks its key;
        None while the count is within the free failures.

        The rule itself, for books kept elsewhere too (a console user's row keeps its
        own, so that every process and every restart sees them).
        """
        over = failures - self.free - 1
        if over < 0:
            return None
        block: timedelta = self.base * (2 ** min(over, _MAX_DOUBLINGS))
        return min(block, self.cap)

    def forgets(self, last_failure: datetime, now: datetime) -> bool:
        """Whether failures whose last one was at ``last_failure`` are forgotten by ``now``."""
        return now - last_failure >= self.forget_after

    def failed(self, key: str, now: datetime) -> int:
        """Count a failure of ``key``; returns how many failures it has now."""
        record = self._records.pop(key, None)
        if record is None or self.forgets(record.last_failure, now):
            record = _Record(0, now, now)
        record.failures += 1
        record.last_failure = now
        block = self.block_after(record.failures)
        if block is not None:
            record.blocked_until = now + block
        self._records[key] = record  # most recent last
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)
        return record.failures

    def just_blocked(self, failures: int) -> bool:
        """Whether the failure that brought the count to ``failures`` started the back-off
        (once per episode: the moment to raise an alarm)."""
        return failures == self.free + 1


class RateLimit:
    """At most ``limit`` events in any ``window``: a shared budget that nobody can
    exhaust for longer than they keep spending it.

    Unlike ``AttemptLimiter`` it has no memory beyond one window: once the events
    slow down below the rate, the budget is there again. An attempt ``take``s a unit
    before its work starts (so that attempts running side by side cannot overshoot
    the limit) and ``give_back`` returns it when the attempt did not count (it
    succeeded). The books hold at most ``limit`` times, however many events come.
    """

    def __init__(self, *, limit: int, window: timedelta) -> None:
        if limit < 1:
            raise ValueError("a rate limit allows at least one event per window")
        self.limit = limit
        self.window = window
        self._times: deque[datetime] = deque(maxlen=limit)
        self._alarmed: datetime | None = None

    def _forget(self, now: datetime) -> None:
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()

    def take(self, now: datetime) -> bool:
        """Take a unit of the budget; False (and nothing taken) when ``limit`` units
        were already taken within the last ``window``."""
        self._forget(now)
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

    def spent(self, now: datetime) -> bool:
        """Whether a ``take`` now would be refused (nothing is taken)."""
        self._forget(now)
        return len(self._times) >= self.limit

    def give_back(self, taken_at: datetime) -> None:
        """Return the unit taken at ``taken_at`` (a no-op once it has left the window)."""
        with contextlib.suppress(ValueError):
            self._times.remove(taken_at)

    def alarm_due(self, now: datetime) -> bool:
        """True when the budget is spent and no alarm was due within the last
        ``window``: the moment to raise one (once per window, not per attempt)."""
        self._forget(now)
        if len(self._times) < self.limit:
            return False
        if self._alarmed is not None and now - self._alarmed < self.window:
            return False
        self._alarmed = now
        return True
