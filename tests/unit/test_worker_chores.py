"""The worker's periodic chores: each runs at start, then once per interval; a failing one
does not stop the others (no database: chores bring their own)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, cast

import pytest

from keyautomat.adapters.db import Database
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer.clock import ManualClock
from keyautomat.service_layer.delivery import Dispatcher


def test_chores_run_at_start_then_once_per_interval_and_a_failing_one_spares_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    ran: list[tuple[str, datetime]] = []

    async def prune(now: datetime) -> None:
        ran.append(("prune", now))

    async def broken(now: datetime) -> Any:
        ran.append(("broken", now))
        raise RuntimeError("disk full")

    dispatcher = Dispatcher()
    dispatcher.every(timedelta(minutes=5), "prune", prune)
    dispatcher.every(timedelta(hours=1), "broken", broken)
    with pytest.raises(ValueError, match="already registered"):
        dispatcher.every(timedelta(minutes=1), "prune", prune)
    worker = OutboxWorker(cast(Database, None), dispatcher, clock, worker_id="w")
    start = clock.now()

    assert asyncio.run(worker.run_chores()) == 2
    assert "chore broken failed" in caplog.text
    assert asyncio.run(worker.run_chores()) == 0
    clock.advance(timedelta(minutes=5))
    assert asyncio.run(worker.run_chores()) == 1
    clock.advance(timedelta(minutes=55))
    assert asyncio.run(worker.run_chores()) == 2
    assert ran == [
        ("prune", start),
        ("broken", start),
        ("prune", start + timedelta(minutes=5)),
        ("prune", start + timedelta(hours=1)),
        ("broken", start + timedelta(hours=1)),
    ]
