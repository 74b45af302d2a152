"""What ``/readyz`` concludes from its checks, with a fake database (the SQL is tested in
tests/integration/test_readiness.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import OperationalError

from keyautomat.entrypoints.api.readiness import NOT_CHECKED, OK, Readiness, failing
from keyautomat.service_layer.clock import ManualClock

LAG = timedelta(minutes=5)


class FakeDatabase:
    """Answers the ping, then ``waiting_since`` with ``oldest``; or fails every call."""

    def __init__(self, oldest: datetime | None = None, *, down: bool = False) -> None:
        self.oldest = oldest
        self.down = down
        self.calls = 0

    async def run(self, work: Callable[[Any], Any]) -> Any:
        self.calls += 1
        if self.down:
            raise OperationalError("SELECT 1", {}, Exception("connection to db.internal refused"))
        return None if self.calls % 2 == 1 else self.oldest


def verdicts(readiness: Readiness) -> dict[str, str]:
    return asyncio.run(readiness.checks())


def readiness(
    db: FakeDatabase, clock: ManualClock, broker: Callable[[], bool] | None = None
) -> Readiness:
    return Readiness(db, clock, kinds=lambda: ["webhook"], max_lag=LAG, broker_connected=broker)


def test_a_process_with_a_database_and_no_late_message_is_ready() -> None:
    checks = verdicts(readiness(FakeDatabase(), ManualClock()))
    assert checks == {"database": OK, "outbox": OK}
    assert failing(checks) == []


def test_a_message_waiting_up_to_the_bound_is_not_late_and_one_past_it_is() -> None:
    clock = ManualClock()
    assert verdicts(readiness(FakeDatabase(clock.now() - LAG), clock))["outbox"] == OK
    late = verdicts(readiness(FakeDatabase(clock.now() - LAG - timedelta(seconds=1)), clock))
    assert late["outbox"] == "a message has waited 301 s for a worker (at most 300 s)"
    assert failing(late) == ["outbox"]


def test_without_a_database_the_outbox_is_not_checked_and_the_cause_is_not_told() -> None:
    checks = verdicts(readiness(FakeDatabase(down=True), ManualClock()))
    assert checks == {"database": "unavailable", "outbox": NOT_CHECKED}
    assert failing(checks) == ["database"]
    assert "db.internal" not in str(checks)


def test_the_broker_is_checked_only_where_the_gateway_runs() -> None:
    clock = ManualClock()
    assert "broker" not in verdicts(readiness(FakeDatabase(), clock))
    down = verdicts(readiness(FakeDatabase(), clock, broker=lambda: False))
    assert down["broker"] == "not connected"
    assert failing(down) == ["broker"]
    assert verdicts(readiness(FakeDatabase(), clock, broker=lambda: True))["broker"] == OK


def test_callers_within_a_second_share_one_evaluation() -> None:
    clock = ManualClock()
    db = FakeDatabase()
    probe = readiness(db, clock)

    async def three_calls() -> None:
        await asyncio.gather(probe.checks(), probe.checks())
        clock.advance(timedelta(milliseconds=999))
        await probe.checks()

    asyncio.run(three_calls())
    assert db.calls == 2  # one ping, one outbox query
    clock.advance(timedelta(milliseconds=1))
    verdicts(probe)
    assert db.calls == 4
