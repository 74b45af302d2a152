"""Counting failed attempts with exponential back-off (docs/device-protocol.md, "Limits").

A key (a device's hwId, or one key for everybody) may fail ``free`` times; each
failure after that blocks the key for ``base * 2^(n - free)``, at most ``cap``.
Failures are forgotten only after ``forget_after`` without any: an attacker who
waits out one block starts the next one twice as long, and a patient one gets a
handful of guesses a day. Refusals while blocked are not counted as failures:
they test nothing.

The books live in process memory, so a refusal costs no database work; they are
bounded (``max_keys``) so that made-up keys cannot exhaust memory.
"""

from __future__ import annotations

from collections import OrderedDict
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

    def failed(self, key: str, now: datetime) -> int:
        """Count a failure of ``key``; returns how many failures it has now."""
        record = self._records.pop(key, None)
        if record is None or now - record.last_failure >= self.forget_after:
            record = _Record(0, now, now)
        record.failures += 1
        record.last_failure = now
        over = record.failures - self.free - 1
        if over >= 0:
            block = self.base * (2 ** min(over, _MAX_DOUBLINGS))
            record.blocked_until = now + min(block, self.cap)
        self._records[key] = record  # most recent last
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)
        return record.failures

    def just_blocked(self, failures: int) -> bool:
        """Whether the failure that brought the count to ``failures`` started the back-off
        (once per episode: the moment to raise an alarm)."""
        return failures == self.free + 1
