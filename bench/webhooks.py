"""Webhook delivery throughput and event-to-delivery latency on PostgreSQL.

    uv run python bench/webhooks.py [--events 3000] [--lanes 50] [--rate 200] [--seconds 10]

For one and then two worker processes (each `keyautomat worker` as in
production: OutboxWorker.run with its default batch and idle interval) it
measures

* throughput: N events committed in one transaction, time until the receiver
  has all of them -> deliveries per second;
* latency: events published one per transaction at a steady rate, well below
  capacity; the receiver computes (arrival - envelope createdAt) -> p50 / p99;
* cost: CPU time of the worker processes (user + system, from /proc), and the
  statements (an executemany counts once) and commits they sent, per delivery,
  over the throughput run. On a shared machine these are steadier than the rate.

It prints one JSON object per line, one per worker count:

    {"bench": "webhooks", "workers": 1, "events": 3000, "lanes": 50,
     "deliveries_per_s": ..., "worker_cpu_ms_per_delivery": ...,
     "statements_per_delivery": ..., "commits_per_delivery": ...,
     "rate": 200, "latency_events": 2000, "p50_ms": ..., "p99_ms": ..., "cpus": 2}

With ``--profile DIR`` each worker process is sampled by py-spy during the
throughput run (collapsed stacks, ``DIR/webhooks-<workers>w-<n>.txt``).

Runtime: about 2 x (throughput run + --seconds + 10 s start-up); bounded by the
waits' timeouts (300 s and 120 s per worker count).

The receiver is a bare ASGI app under uvicorn in its own process on
127.0.0.1; it verifies nothing (verification is the receiver's cost, not ours).
Needs PostgreSQL at KEYAUTOMAT_TEST_POSTGRES_URL (default as in tests/services.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.fernet import Fernet
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from support import free_port
from tests.services import POSTGRES_ADMIN_URL

from keyautomat.adapters.migrate import upgrade
from keyautomat.bootstrap import bootstrap
from keyautomat.config import Settings
from keyautomat.domain import webhooks as wh
from keyautomat.domain.model import OrgUnitType, Role
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import accounts, webhooks

# Its own database per run: two runs at once (old and new code side by side) must not
# drop each other's.
DB_NAME = f"keyautomat_bench_webhooks_{os.getpid()}"


# -- receiver process ------------------------------------------------------------


def receiver_main(port: int) -> None:
    import uvicorn

    latencies: list[float] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "POST" and scope["path"] == "/hook":
            arrived = time.time()
            created = datetime.fromisoformat(json.loads(body)["createdAt"].replace("Z", "+00:00"))
            latencies.append((arrived - created.timestamp()) * 1000)
            payload = b"ok"
        elif scope["path"] == "/count":
            payload = json.dumps({"count": len(latencies)}).encode()
        elif scope["path"] == "/stats":
            payload = json.dumps({"count": len(latencies), "latencies": latencies}).encode()
        elif scope["path"] == "/reset":
            latencies.clear()
            payload = b"ok"
        else:
            payload = b"?"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- worker processes ----------------------------------------------------------------


def worker_main(settings_json: str, ready: Any, stop: Any, counts: Any) -> None:
    """One worker process; ``counts`` gets its statements (an executemany counts once) and
    commits so far."""
    settings = Settings.model_validate_json(settings_json)
    container = bootstrap(settings)

    def statement(*_: Any) -> None:
        counts[0] += 1

    def commit(*_: Any) -> None:
        counts[1] += 1

    event.listen(container.db.engine, "before_cursor_execute", statement)
    event.listen(container.db.engine, "commit", commit)
    worker = OutboxWorker(container.db, container.dispatcher, container.clock)

    async def main() -> None:
        halt = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)
            halt.set()

        watcher = asyncio.create_task(watch())
        ready.set()
        try:
            await worker.run(halt)
        finally:
            await container.webhooks.aclose()
            await watcher

    asyncio.run(main())
    container.close()


# -- driver --------------------------------------------------------------------------


def admin_url() -> str:
    return (
        make_url(POSTGRES_ADMIN_URL)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def drop_database() -> None:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def fresh_database() -> str:
    url = make_url(POSTGRES_ADMIN_URL)
    drop_database()
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    bench_url = url.set(database=DB_NAME).render_as_string(hide_password=False)
    upgrade(bench_url)
    return bench_url


def setup(settings: Settings, receiver_url: str) -> str:
    container = bootstrap(settings)
    now = datetime.now(UTC)

    def work(session: Any) -> str:
        unit = accounts.create_organization_unit(
            session,
            None,
            name="Bench",
            customer_id="bench",
            type=OrgUnitType.ORGANIZATION,
            parent_id=None,
            iloq_api_user=None,
            secrets=container.secrets,
            now=now,
        )
        accounts.create_service_account(
            session, None, organization_unit_id=unit.id, name="b", role=Role.ADMIN, now=now
        )
        return str(unit.id)

    unit_id = container.db.transaction(work)
    # Straight to active: the admin API's test step is not what is measured here.
    from keyautomat.service_layer.principal import Principal

    principal = Principal("bench", unit_id, f"/{unit_id}/", 0, "admin")
    sub, _secret = container.db.transaction(
        lambda s: webhooks.create_subscription(
            s,
            principal,
            name="bench",
            url=receiver_url,
            organization_unit_id=unit_id,
            event_types=["key-status"],
            secrets=container.secrets,
            now=now,
        )
    )
    container.db.transaction(lambda s: webhooks.activate(s, sub.id, now))
    container.close()
    return unit_id


def key_event(i: int, lanes: int) -> dict[str, Any]:
    return wh.key_status_data(
        state="key-fetched",
        device_id=f"{i % lanes:06d}",
        locker_index=i // lanes,
        key_id=f"k-{i}",
        contract_id=f"c-{i}",
        contract_object_id=f"c-{i}",
    )


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def statements_and_commits(counts: list[Any]) -> tuple[int, int]:
    """What the workers have sent to the database so far."""
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def wait_for(base: str, count: int, timeout: float) -> dict[str, Any]:
    """The receiver's latencies once it has ``count`` deliveries (or at the timeout).

    It polls the cheap ``/count``: the whole list every 20 ms took the receiver's CPU
    from the deliveries being measured."""
    deadline = time.monotonic() + timeout
    while httpx.get(base + "/count").json()["count"] < count and time.monotonic() < deadline:
        time.sleep(0.02)
    stats: dict[str, Any] = httpx.get(base + "/stats").json()
    return stats


def run(workers: int, args: argparse.Namespace, settings: Settings, base: str) -> dict[str, Any]:
    container = bootstrap(settings)
    with container.db.engine.begin() as conn:
        conn.execute(text("TRUNCATE outbox, outbox_lanes, webhook_attempts CASCADE"))
    httpx.post(base + "/reset")
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    readies = [ctx.Event() for _ in range(workers)]
    counts = [ctx.Array("q", 2, lock=False) for _ in range(workers)]
    procs = [
        ctx.Process(target=worker_main, args=(settings.model_dump_json(), r, stop, c), daemon=True)
        for r, c in zip(readies, counts, strict=True)
    ]
    for p in procs:
        p.start()
    for r in readies:
        r.wait(60)
    unit_id = args.unit_id

    # Throughput: everything committed at once.
    def publish_all(session: Any) -> None:
        now = datetime.now(UTC)
        for i in range(args.events):
            webhooks.publish(
                session,
                organization_unit_id=unit_id,
                event_type="key-status",
                data=key_event(i, args.lanes),
                occurred_at=now,
                now=now,
            )

    pids = [p.pid for p in procs if p.pid is not None]
    statements_before, commits_before = statements_and_commits(counts)
    profilers = [
        subprocess.Popen(
            [
                "py-spy",
                "record",
                "--format",
                "raw",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "-o",
                f"{args.profile}/webhooks-{workers}w-{n}.txt",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n, pid in enumerate(pids)
        if args.profile
    ]
    cpu_before = cpu_seconds(pids)
    container.db.transaction(publish_all)
    started = time.perf_counter()
    stats = wait_for(base, args.events, 300)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pids) - cpu_before
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)
    statements_after, commits_after = statements_and_commits(counts)
    throughput = stats["count"] / elapsed

    # Latency: a steady stream, one event per transaction.
    httpx.post(base + "/reset")
    total = int(args.rate * args.seconds)
    interval = 1 / args.rate
    t0 = time.perf_counter()
    for i in range(total):
        now = datetime.now(UTC)

        def publish(s: Session, i: int = i, now: datetime = now) -> list[str]:
            return webhooks.publish(
                s,
                organization_unit_id=unit_id,
                event_type="key-status",
                data=key_event(i, args.lanes),
                occurred_at=now,
                now=now,
            )

        container.db.transaction(publish)
        delay = t0 + (i + 1) * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    stats = wait_for(base, total, 120)
    latencies = sorted(stats["latencies"])
    stop.set()
    for p in procs:
        p.join(30)
    container.close()
    return {
        "bench": "webhooks",
        "workers": workers,
        "events": args.events,
        "lanes": args.lanes,
        "deliveries_per_s": round(throughput, 1),
        "worker_cpu_ms_per_delivery": round(cpu * 1000 / max(stats["count"], 1), 3),
        "statements_per_delivery": round(
            (statements_after - statements_before) / max(stats["count"], 1), 3
        ),
        "commits_per_delivery": round((commits_after - commits_before) / max(stats["count"], 1), 3),
        "rate": args.rate,
        "latency_events": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--lanes", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s in the latency run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record each worker with py-spy over the throughput run (collapsed stacks in DIR)",
    )
    args = parser.parse_args()

    port = free_port()
    receiver = mp.get_context("spawn").Process(target=receiver_main, args=(port,), daemon=True)
    receiver.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base + "/stats")
            break
        except httpx.TransportError:
            time.sleep(0.05)

    url = fresh_database()
    settings = Settings(
        database_url=url,
        secret_key=Fernet.generate_key().decode(),
        webhooks_allow_private=True,
        rate_limit_per_second=0,
        db_threads=4,
    )
    args.unit_id = setup(settings, base + "/hook")
    for workers in (1, 2):
        result = run(workers, args, settings, base)
        print(json.dumps({**result, "cpus": os.cpu_count()}), flush=True)
    receiver.terminate()
    drop_database()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
