"""Sync on change over a real MQTT broker (Mosquitto at 127.0.0.1:1883 by default).

1. Commit -> sync acknowledged: ``--changes`` transactions each add one pincode for a
   simulated automat bound to the gateway; the time from the commit returning to the
   device's ack of the sync that holds it, p50/p99. The periodic sweep is set to an
   hour, so only the commit can push the sync.
2. sendPincode at once: ``--sends`` times, a transaction adds a new code and
   sendPincode sends it right after the commit; how many did not open the locker.

    uv run python bench/sync_on_change.py [--changes 1000] [--sends 1000] [--database-url ...]

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).parent))
from device_latency import _pct, bound_automat

from keyautomat.adapters.db import Database
from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.orm_devices import device_links
from keyautomat.config import Settings
from keyautomat.service_layer import devices


def _add_code(db: Database, automat_id: str, code: str, now: datetime) -> int:
    """One transaction adding a code to the automat; the version that holds it."""

    def work(session: Session) -> int:
        devices.add_pincode(
            session,
            automat_id,
            code=code,
            locker_index=0,
            valid_from=now - timedelta(minutes=1),
            valid_until=now + timedelta(days=1),
            purpose="default",
        )
        version = session.scalar(
            select(device_links.c.desired_version).where(device_links.c.automat_id == automat_id)
        )
        return int(version or 0)

    return db.transaction(work)


async def run(args: argparse.Namespace, db: Database, settings: Settings) -> None:
    now = datetime.now(UTC)
    bound = await bound_automat(args.broker, db, settings)
    principal, automat_id, gateway = bound.principal, bound.automat_id, bound.gateway
    opened = bound.waiting

    codes = iter(f"{n:08d}" for n in range(10_000_000, 99_999_999, 7919))
    samples: list[float] = []
    for _ in range(args.changes):
        version = await asyncio.to_thread(_add_code, db, automat_id, next(codes), now)
        committed = time.perf_counter()
        while gateway.acknowledged_version(automat_id) < version:
            await asyncio.sleep(0.0005)
        samples.append((time.perf_counter() - committed) * 1000)

    loop = asyncio.get_running_loop()
    failures = 0
    for _ in range(args.sends):
        code = next(codes)
        await asyncio.to_thread(_add_code, db, automat_id, code, now)
        opened["locker-opened"] = loop.create_future()
        result = await gateway.send_pincode(principal, automat_id, code, proximity_check=False)
        try:
            if not result.success:
                raise TimeoutError(str(result.reason))
            await asyncio.wait_for(opened["locker-opened"], 5)
        except TimeoutError:
            failures += 1
    await bound.close()
    engine = "SQLite" if db.is_sqlite else "PostgreSQL"
    print(
        f"commit -> sync acknowledged, {len(samples)} changes over MQTT ({engine}): "
        f"p50 {statistics.median(samples):.1f} ms, p99 {_pct(samples, 0.99):.1f} ms, "
        f"max {max(samples):.1f} ms"
    )
    print(f"sendPincode right after the commit: {args.sends} sends, {failures} did not open")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--sends", type=int, default=1000)
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
            device_sync_interval_seconds=3600,
        )
        db = Database(url)
        try:
            asyncio.run(run(args, db, settings))
        finally:
            db.close()


if __name__ == "__main__":
    main()
