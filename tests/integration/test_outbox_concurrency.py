"""Two workers on one PostgreSQL database: every row once, every lane in order."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from keyautomat.adapters.db import Database
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import outbox
from keyautomat.service_layer.clock import SystemClock
from keyautomat.service_layer.delivery import Dispatcher
from keyautomat.service_layer.outbox import OutboxMessage

ROWS = 1000
LANES = 20


@pytest.mark.parametrize("mode", ["passes", "run loop"])
def test_two_workers_deliver_a_thousand_rows_exactly_once_in_lane_order(
    postgres_url: str, mode: str
) -> None:
    """``passes``: claim, deliver, record, again. ``run loop``: as a worker process runs,
    claiming while deliveries are in flight and recording whatever finished."""
    clock = SystemClock()
    setup = Database(postgres_url, threads=2)

    def fill(session: Session) -> None:
        for i in range(ROWS):
            outbox.enqueue(session, "race", {"n": i}, now=clock.now(), lane=f"lane-{i % LANES}")

    setup.transaction(fill)
    delivered: list[tuple[str, int]] = []
    lock = threading.Lock()

    def run_worker(name: str) -> None:
        db = Database(postgres_url, threads=4)

        async def handler(message: OutboxMessage) -> None:
            await asyncio.sleep(0)  # let the other worker interleave
            with lock:
                delivered.append((name, message.payload["n"]))

        dispatcher = Dispatcher()
        dispatcher.register("race", handler, retry_delays=[timedelta(seconds=1)])
        worker = OutboxWorker(
            db, dispatcher, clock, worker_id=name, batch_size=25, idle_interval=0.01
        )

        async def unfinished() -> bool:
            left = await db.run(
                lambda s: (
                    outbox.read(s, kinds=["race"], status="pending", limit=1)
                    + outbox.read(s, kinds=["race"], status="in_flight", limit=1)
                )
            )
            return bool(left)

        async def work_until_empty() -> None:
            # A pass can find nothing while the other worker holds every lane
            # head, so keep going until no unfinished row is left.
            while True:
                if await worker.run_once() == 0:
                    if not await unfinished():
                        return
                    await asyncio.sleep(0.001)

        async def run_until_empty() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            while await unfinished():
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(task, timeout=30)

        asyncio.run(work_until_empty() if mode == "passes" else run_until_empty())
        db.close()

    threads = [threading.Thread(target=run_worker, args=(n,)) for n in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    numbers = [n for _, n in delivered]
    assert sorted(numbers) == list(range(ROWS))  # each exactly once
    by_lane: dict[int, list[int]] = defaultdict(list)
    for n in numbers:
        by_lane[n % LANES].append(n)
    assert all(seq == sorted(seq) for seq in by_lane.values())
    assert {name for name, _ in delivered} == {"w1", "w2"}  # both took part
    left = setup.transaction(lambda s: outbox.read(s, kinds=["race"], status="pending"))
    assert left == []
    setup.transaction(lambda s: s.execute(outbox.t.delete()))
    setup.close()
