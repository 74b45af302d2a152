"""Offline replay over a real MQTT broker (Mosquitto at 127.0.0.1:1883 by default).

A simulated automat bound to a gateway goes offline, queues ``--events`` events
(a door opened and closed, in turns), and reconnects: the time from the reconnection
to the server's ack of the last event. The device sends one event at a time, each
after the ack of the one before (docs/device-protocol.md §4); ``--pipelined`` sends
the whole queue at once instead (the simulator's test-only fault
``send-queue-at-once``), to show what that rule costs.

    uv run python bench/offline_replay.py [--events 100] [--rounds 3] [--pipelined]
        [--broker mqtt://HOST:PORT] [--database-url ...]

Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).parent))
from device_latency import bound_automat

from keyautomat.adapters.db import Database
from keyautomat.adapters.device_protocol import LockerEvent
from keyautomat.adapters.migrate import upgrade
from keyautomat.config import Settings


async def run(args: argparse.Namespace, db: Database, settings: Settings) -> None:
    bound = await bound_automat(args.broker, db, settings)
    sim = bound.sim
    if args.pipelined:
        sim.faults = frozenset({"send-queue-at-once"})
    await sim.wait_flushed(10)
    took: list[float] = []
    for _ in range(args.rounds):
        await sim.go_offline()
        for n in range(args.events):
            kind = "locker-opened" if n % 2 == 0 else "locker-closed"
            sim.queue_event(kind, LockerEvent(locker_index=1))
        started = time.perf_counter()
        sim.go_online()
        await sim.wait_flushed(120)
        took.append(time.perf_counter() - started)
    await bound.close()
    engine = "SQLite" if db.is_sqlite else "PostgreSQL"
    how = "all at once (pipelined)" if args.pipelined else "one in flight"
    print(
        f"{args.events} events queued offline, {how}, {engine}: reconnect -> last ack "
        f"median {statistics.median(took):.2f} s over {args.rounds} rounds "
        f"(min {min(took):.2f}, max {max(took):.2f}); "
        f"{args.events / statistics.median(took):.0f} events/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipelined", action="store_true")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        settings = Settings(
            database_url=url,
            secret_key=Fernet.generate_key().decode(),
            secret_key_file=Path(tmp) / "k",
            mqtt_topic_prefix=f"bench-{uuid.uuid4().hex[:8]}/keyautomat/v1",
        )
        db = Database(url)
        try:
            asyncio.run(run(args, db, settings))
        finally:
            db.close()


if __name__ == "__main__":
    main()
