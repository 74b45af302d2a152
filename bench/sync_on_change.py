"""Sync on change over a real MQTT broker (Mosquitto at 127.0.0.1:1883 by default).

1. Commit -> sync acknowledged: ``--changes`` transactions each add one pincode for a
   simulated automat bound to the gateway; the time from the commit returning to the
   device's ack of the sync that holds it, p50/p99. The periodic sweep is set to an
   hour, so only the commit can push the sync.
2. sendPincode at once: ``--sends`` times, a transaction adds a new code and
   sendPincode sends it right after the commit; how many did not open the locker, and
   how long sendPincode took (p50/p99). With ``--routed`` (PostgreSQL only) it is sent
   by the command router of another database connection and a gateway that does not
   run, standing in for an API process without the device: the command goes through
   ``device_commands`` to the gateway holding the device.

    uv run python bench/sync_on_change.py [--changes 1000] [--sends 1000] [--routed]
        [--database-url ...]

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

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.device_links import MqttLink
from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.orm_devices import device_links
from keyautomat.config import Settings
from keyautomat.entrypoints.command_router import CommandRouter
from keyautomat.entrypoints.device_gateway import DeviceGateway, SendResult
from keyautomat.service_layer import devices
from keyautomat.service_layer.clock import SystemClock


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
    box = SecretBox(settings.secret_key or "")
    bound = await bound_automat(args.broker, db, settings, box)
    principal, automat_id, gateway = bound.principal, bound.automat_id, bound.gateway
    opened = bound.waiting
    other_db: Database | None = None
    if args.routed:
        # Another process's API: its own pool, and a gateway that does not run.
        other_db = Database(db.url)
        idle = DeviceGateway(
            db=other_db,
            link=MqttLink(args.broker),
            clock=SystemClock(),
            settings=settings,
            code_key=b"unused",
        )
        router = CommandRouter(db=other_db, gateway=idle, secrets=box, clock=SystemClock())

        async def send(code: str) -> SendResult:
            return await router.send_pincode(principal, automat_id, code, proximity_check=False)
    else:

        async def send(code: str) -> SendResult:
            return await gateway.send_pincode(principal, automat_id, code, proximity_check=False)

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
    send_ms: list[float] = []
    for _ in range(args.sends):
        code = next(codes)
        await asyncio.to_thread(_add_code, db, automat_id, code, now)
        opened["locker-opened"] = loop.create_future()
        started = time.perf_counter()
        result = await send(code)
        send_ms.append((time.perf_counter() - started) * 1000)
        try:
            if not result.success:
                raise TimeoutError(str(result.reason))
            await asyncio.wait_for(opened["locker-opened"], 5)
        except TimeoutError:
            failures += 1
    await bound.close()
    if other_db is not None:
        await router.close()
        other_db.close()
    engine = "SQLite" if db.is_sqlite else "PostgreSQL"
    print(
        f"commit -> sync acknowledged, {len(samples)} changes over MQTT ({engine}): "
        f"p50 {statistics.median(samples):.1f} ms, p99 {_pct(samples, 0.99):.1f} ms, "
        f"max {max(samples):.1f} ms"
    )
    how = "routed from another process" if args.routed else "by the gateway holding it"
    print(
        f"sendPincode right after the commit, {how}: {args.sends} sends, {failures} did not "
        f"open; sendPincode p50 {statistics.median(send_ms):.1f} ms, "
        f"p99 {_pct(send_ms, 0.99):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--database-url")
    parser.add_argument(
        "--routed", action="store_true", help="send from another process's API (PostgreSQL)"
    )
    args = parser.parse_args()
    if args.routed and not (args.database_url or "").startswith("postgresql"):
        parser.error("--routed needs --database-url postgresql+psycopg://...")
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
