"""Device link figures over a real MQTT broker (Mosquitto at 127.0.0.1:1883 by default).

1. Latency: sendPincode -> locker-opened applied by the gateway, p50/p99 over
   ``--commands`` commands to one simulated automat (same process as the gateway).
2. Fleet: ``--automats`` simulated automats in a child process bind to one gateway
   process; how long binding takes, how many stay online through ``--hold`` seconds
   of heartbeats, and how long one incremental pincode sync to all of them takes.

    uv run python bench/device_latency.py [--commands 1000] [--automats 1000]

Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.device_links import MqttLink
from keyautomat.adapters.device_protocol import Message
from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.orm_devices import device_links
from keyautomat.config import Settings
from keyautomat.domain.model import OrgUnitType, Role
from keyautomat.entrypoints.device_gateway import DeviceGateway
from keyautomat.service_layer import accounts, automats, devices
from keyautomat.service_layer.automats import Location
from keyautomat.service_layer.clock import SystemClock
from keyautomat.service_layer.principal import Principal
from keyautomat.simulator import SimulatedAutomat, blank_iloq_keys


def _principal(db: Database, now: datetime) -> Principal:
    def work(session: Session) -> Principal:
        unit = accounts.create_organization_unit(
            session,
            None,
            name="Bench",
            customer_id=None,
            type=OrgUnitType.ORGANIZATION,
            parent_id=None,
            iloq_api_user=None,
            secrets=SecretBox(Fernet.generate_key()),  # a unit without iLOQ has nothing to seal
            now=now,
        )
        return Principal("bench", unit.id, unit.path, unit.type, Role.ADMIN)

    return db.transaction(work)


def _install(
    db: Database, principal: Principal, count: int, now: datetime
) -> list[tuple[str, str]]:
    def work(session: Session) -> list[tuple[str, str]]:
        out = []
        for i in range(count):
            automat = automats.install_automat(
                session,
                principal,
                name=f"Bench {i}",
                organization_unit_id=None,
                label=None,
                group_id=None,
                location=Location("Street 1", "00100", "Helsinki"),
                timezone="Europe/Helsinki",
                product="key20",
                now=now,
            )
            assert automat.installation_pincode is not None
            out.append((automat.id, automat.installation_pincode))
        return out

    return db.transaction(work)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class BoundAutomat:
    """One installed automat whose simulator (one key, same process) bound to a gateway
    over the broker; ``waiting[type]`` is resolved with the time a message of that type
    from the automat was applied."""

    principal: Principal
    automat_id: str
    gateway: DeviceGateway
    sim: SimulatedAutomat
    runner: asyncio.Task[None]
    waiting: dict[str, asyncio.Future[float]] = field(default_factory=dict)

    async def close(self) -> None:
        await self.sim.stop()
        self.runner.cancel()
        await self.gateway.stop()


async def bound_automat(
    broker: str, db: Database, settings: Settings, box: SecretBox | None = None
) -> BoundAutomat:
    """``box``: the secret key, for a gateway that runs commands routed from elsewhere."""
    now = datetime.now(UTC)
    principal = _principal(db, now)
    [(automat_id, pincode)] = _install(db, principal, 1, now)
    gateway = DeviceGateway(
        db=db,
        link=MqttLink(broker),
        clock=SystemClock(),
        settings=settings,
        code_key=secrets.token_bytes(32),
        secrets=box,
    )
    waiting: dict[str, asyncio.Future[float]] = {}

    def observe(automat: str, message: Message) -> None:
        future = waiting.get(message.type)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    gateway.observers.append(observe)
    await gateway.start()
    sim = SimulatedAutomat(
        link=MqttLink(broker),
        hw_id=f"BENCH-{uuid.uuid4().hex[:6]}",
        locker_count=4,
        installation_pincode=pincode,
        prefix=settings.mqtt_topic_prefix,
        tick_seconds=0.05,
    )
    sim.stock(blank_iloq_keys(1))
    runner = asyncio.create_task(sim.run())
    await sim.wait_bound(10)
    return BoundAutomat(principal, automat_id, gateway, sim, runner, waiting)


async def latency(args: argparse.Namespace, db: Database, settings: Settings) -> None:
    now = datetime.now(UTC)
    bound = await bound_automat(args.broker, db, settings)
    principal, automat_id, gateway, sim = (
        bound.principal,
        bound.automat_id,
        bound.gateway,
        bound.sim,
    )
    waiting = bound.waiting
    # A default-contract code: the autopilot takes the key on one opening and puts it back
    # on the next, so the same code works for every command.
    db.transaction(
        lambda s: devices.add_pincode(
            s,
            automat_id,
            code="314159",
            locker_index=0,
            valid_from=now - timedelta(minutes=1),
            valid_until=now + timedelta(days=1),
            purpose="default",
        )
    )
    await gateway.push_syncs([automat_id])
    while not sim.pincodes:
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    failures = 0
    for _ in range(args.commands):
        opened = loop.create_future()
        closed = loop.create_future()
        waiting["locker-opened"] = opened
        waiting["locker-closed"] = closed
        start = time.perf_counter()
        result = await gateway.send_pincode(principal, automat_id, "314159", proximity_check=False)
        if not result.success:
            failures += 1
            continue
        samples.append((await asyncio.wait_for(opened, 10)) - start)
        await asyncio.wait_for(closed, 10)
    await bound.close()
    ms = [s * 1000 for s in samples]
    print(
        f"sendPincode -> locker-opened applied, {len(ms)} commands over MQTT "
        f"({'SQLite' if db.is_sqlite else 'PostgreSQL'}): "
        f"p50 {statistics.median(ms):.1f} ms, p99 {_pct(ms, 0.99):.1f} ms, "
        f"max {max(ms):.1f} ms, failures {failures}"
    )


async def fleet(args: argparse.Namespace, db: Database, settings: Settings) -> None:
    now = datetime.now(UTC)
    principal = _principal(db, now)
    installed = _install(db, principal, args.automats, now)
    gateway = DeviceGateway(
        db=db,
        link=MqttLink(args.broker),
        clock=SystemClock(),
        settings=settings,
        code_key=secrets.token_bytes(32),
    )
    await gateway.start()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(installed, handle)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--fleet-child",
            handle.name,
            "--broker",
            args.broker,
            "--prefix",
            settings.mqtt_topic_prefix,
        ]
    )
    ids = [automat_id for automat_id, _ in installed]

    def connected_count(session: Session) -> int:
        return session.execute(
            select(func.count())
            .select_from(device_links)
            .where(device_links.c.connected.is_(True), device_links.c.automat_id.in_(ids))
        ).scalar_one()

    started = time.perf_counter()
    bound = 0
    while time.perf_counter() - started < 120:
        bound = await db.run(connected_count)
        if bound == len(ids):
            break
        await asyncio.sleep(0.5)
    bind_seconds = time.perf_counter() - started
    print(f"fleet: {bound}/{len(ids)} automats bound and online after {bind_seconds:.1f} s")

    await asyncio.sleep(args.hold)
    offline = await db.run(
        lambda s: devices.mark_silent_devices_offline(
            s, datetime.now(UTC), settings.device_offline_after_seconds
        )
    )
    online = await db.run(connected_count)
    print(
        f"fleet: {online}/{len(ids)} still online after {args.hold:.0f} s of heartbeats "
        f"every {settings.device_heartbeat_seconds:.0f} s ({len(offline)} went silent)"
    )

    sync_start = time.perf_counter()

    def add_codes(session: Session) -> None:
        for index, automat_id in enumerate(ids):
            devices.add_pincode(
                session,
                automat_id,
                code=f"{100000 + index}",
                locker_index=0,
                valid_from=now,
                valid_until=now + timedelta(days=1),
                purpose="fetch",
            )

    await db.run(add_codes)
    await gateway.push_syncs(ids)

    def behind(session: Session) -> int:
        return session.execute(
            select(func.count())
            .select_from(device_links)
            .where(
                device_links.c.automat_id.in_(ids),
                device_links.c.synced_version < device_links.c.desired_version,
            )
        ).scalar_one()

    remaining = len(ids)
    while time.perf_counter() - sync_start < 60:
        remaining = await db.run(behind)
        if remaining == 0:
            break
        await asyncio.sleep(0.2)
    print(
        f"fleet: one incremental pincode sync to {len(ids) - remaining}/{len(ids)} automats "
        f"acknowledged in {time.perf_counter() - sync_start:.1f} s"
    )
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    rss_mib = cpu_after.ru_maxrss / 1024
    print(
        f"fleet: gateway process CPU {cpu_after.ru_utime - cpu_before.ru_utime:.1f} s user "
        f"+ {cpu_after.ru_stime - cpu_before.ru_stime:.1f} s sys, max RSS {rss_mib:.0f} MiB; "
        f"gateway stats {gateway.stats.received} received, {gateway.stats.errors} errors"
    )
    child.terminate()
    child.wait(30)
    await gateway.stop()
    Path(handle.name).unlink()


async def fleet_child(path: str, broker: str, prefix: str) -> None:
    """Many simulated automats in one process (each with its own MQTT connection)."""
    installed = json.loads(Path(path).read_text())
    sims = []
    for automat_id, pincode in installed:
        sim = SimulatedAutomat(
            link=MqttLink(broker),
            hw_id=f"FLEET-{automat_id}-{os.getpid()}",
            locker_count=10,
            installation_pincode=pincode,
            prefix=prefix,
            tick_seconds=1.0,
            resend_seconds=10.0,
        )
        sim.stock(blank_iloq_keys(3))
        sims.append(sim)
    tasks = []
    for sim in sims:
        tasks.append(asyncio.create_task(sim.run()))
        await asyncio.sleep(0.002)  # do not open a thousand sockets in the same instant
    await asyncio.gather(*tasks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--automats", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--database-url")
    parser.add_argument("--prefix")
    parser.add_argument("--fleet-child")
    args = parser.parse_args()
    if args.fleet_child:
        asyncio.run(fleet_child(args.fleet_child, args.broker, args.prefix))
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        settings = Settings(
            database_url=url,
            mqtt_url=args.broker,
            mqtt_topic_prefix=f"bench-{uuid.uuid4().hex[:8]}/keyautomat/v1",
            device_heartbeat_seconds=args.heartbeat,
            device_offline_after_seconds=args.heartbeat * 3,
            device_sync_interval_seconds=2.0,
        )
        db = Database(url)
        try:
            if args.commands:
                asyncio.run(latency(args, db, settings))
            if args.automats:
                asyncio.run(fleet(args, db, settings))
        finally:
            db.close()


if __name__ == "__main__":
    main()
