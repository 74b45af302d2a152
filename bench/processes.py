"""Signed reads and contract creations per second with one and with two API processes on
PostgreSQL (``keyautomat serve --no-worker --no-gateway``, DESIGN.md "Scale out").

Seeds a fresh database as bench/contracts.py does (one organization, 1,000 active key20
automats of 30 lockers holding iLOQ keys, one device group of them all, and
``--existing`` contracts), then for 1 and then 2 API processes on it:

* reads: signed ``GET /v2/`` (the smoke test: the signature and the shared replay and
  rate check, nothing else) and ``GET /v2/automats?limit=10`` (``--read-path`` instead);
* creations: signed ``POST /v2/iloq/keycontracts`` with ``groupId``, one key each, so
  the server ranks the group and picks a key (every one should answer 201).

The processes sit behind one public URL (``KEYAUTOMAT_PUBLIC_URL``), as behind a load
balancer, so a request signed once is good at any of them. Every request is signed
before the run (by a pool of processes; RSA signing costs 0.5 ms a request, which would
otherwise be taken from the servers' CPU) and each carries its own signature (the
server refuses replays). The client is this process, apart from the servers: asyncio
with plain HTTP/1.1 on ``--connections`` keep-alive connections split evenly over the
API processes, each sending its next request as soon as the last is answered
(saturation). The first ``--warmup`` requests of a workload are not measured; their
rate decides how many requests to sign for the measured ``--seconds``.

Prints, for each configuration: requests per second, p50/p99 latency, the answers'
statuses, the API processes' CPU per request (all of them together) and this client's,
and how busy the whole machine was (the servers, PostgreSQL and this client share its
cores). The database is a fresh one next to ``--database-url``'s, dropped afterwards.

    uv run python bench/processes.py [--seconds 10] [--connections 32] [--runs 3]
        [--apis 1 --apis 2] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import support  # noqa: F401 - puts the project root on sys.path, for tests.*
from contracts import cpu_seconds, fresh_postgres, machine_ticks, seed_iloq
from cryptography.fernet import Fernet
from tests.processes import Processes, all_ready, settings_env
from tests.services import POSTGRES_ADMIN_URL

from keyautomat.adapters.migrate import upgrade
from keyautomat.bootstrap import bootstrap
from keyautomat.client import compact_json, signature_headers
from keyautomat.config import Settings

# What the clients sign, whichever process answers (KEYAUTOMAT_PUBLIC_URL).
PUBLIC_BASE = "http://keyautomat.bench.test"
READS = ("/v2/", "/v2/automats?limit=10")
MAX_SIGNED = 60_000  # their timestamps span a minute, well inside the five-minute window


@dataclass(frozen=True)
class Signing:
    """One account's credentials and what it signs: (method, path, body) of each request."""

    account: str
    key: str
    method: str
    requests: list[tuple[str, bytes]]  # (path with query, body)
    first_ms: int  # timestamp of the first; the n-th gets first_ms + n (all distinct)


def _sign(signing: Signing) -> list[bytes]:
    """Raw HTTP/1.1 requests, each with its own signature."""
    out = []
    for n, (path, body) in enumerate(signing.requests):
        headers = signature_headers(
            method=signing.method,
            url=PUBLIC_BASE + path,
            body=body,
            service_account_id=signing.account,
            private_key_pem=signing.key,
            timestamp_ms=signing.first_ms + n,
        )
        lines = [
            f"{signing.method} {path} HTTP/1.1",
            "host: bench",
            "content-type: application/json",
            f"content-length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return out


def presign(account: str, key: str, method: str, requests: list[tuple[str, bytes]]) -> list[bytes]:
    # Distinct timestamps make distinct signatures even for identical reads; they span
    # the next len(requests) ms, well inside the server's five-minute window.
    first = time.time_ns() // 1_000_000
    workers = os.cpu_count() or 2
    per = -(-len(requests) // workers)
    chunks = [
        Signing(account, key, method, requests[i : i + per], first + i)
        for i in range(0, len(requests), per)
    ]
    with ProcessPoolExecutor(workers) as pool:
        return [raw for chunk in pool.map(_sign, chunks) for raw in chunk]


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, float]:
    started = time.perf_counter()
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1]), time.perf_counter() - started


async def drive(
    ports: Sequence[int], requests: list[bytes], connections: int, seconds: float | None = None
) -> tuple[list[float], Counter[int], float, int]:
    """Send ``requests`` on ``connections`` connections spread over ``ports``, each one's next
    as soon as its last is answered, for at most ``seconds``; (latencies, statuses, seconds
    until the last answer, requests left unsent)."""
    queue = list(reversed(requests))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    deadline = started + seconds if seconds is not None else float("inf")

    async def connection(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue and time.perf_counter() < deadline:
                status, took = await _exchange(reader, writer, queue.pop())
                statuses[status] += 1
                latencies.append(took)
        finally:
            writer.close()

    await asyncio.gather(*(connection(ports[i % len(ports)]) for i in range(connections)))
    return latencies, statuses, time.perf_counter() - started, len(queue)


@dataclass(frozen=True)
class Workload:
    """A kind of request: its name, method, and the path and body of the next one."""

    name: str
    method: str
    next_request: Callable[[], tuple[str, bytes]]


@dataclass(frozen=True)
class Setup:
    account: str
    key: str
    connections: int
    seconds: float
    warmup: int  # requests


def measure(workload: Workload, setup: Setup, pids: list[int], ports: list[int]) -> dict[str, Any]:
    """Warm up, then saturate the processes with ``workload`` for ``setup.seconds``.

    The warm-up's rate says how many requests to sign for the measured run (two and a half
    times what it would take at that rate, and one a connection).
    """

    def signed(count: int) -> list[bytes]:
        requests = [workload.next_request() for _ in range(count)]
        return presign(setup.account, setup.key, workload.method, requests)

    _, _, took, _ = asyncio.run(drive(ports, signed(setup.warmup), setup.connections))
    rate = setup.warmup / took
    count = min(MAX_SIGNED, int(rate * setup.seconds * 2.5) + setup.connections)
    measured = signed(count)
    cpu_before = sum(cpu_seconds(pid) or 0.0 for pid in pids)
    machine_before = machine_ticks()
    client_before = time.process_time()
    latencies, statuses, elapsed, left = asyncio.run(
        drive(ports, measured, setup.connections, setup.seconds)
    )
    client = time.process_time() - client_before
    cpu = sum(cpu_seconds(pid) or 0.0 for pid in pids) - cpu_before
    machine_after = machine_ticks()
    busy = None
    if machine_before is not None and machine_after is not None:
        total = machine_after[1] - machine_before[1]
        busy = (machine_after[0] - machine_before[0]) / total if total else None
    ms = sorted(x * 1000 for x in latencies)
    return {
        "api_processes": len(pids),
        "workload": workload.name,
        "requests": len(ms),
        # Ran out of signed requests before the time was up: the rate is still right.
        "ran_out": left == 0,
        "statuses": dict(statuses),
        "throughput": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 1),
        "server_cpu_ms_per_request": round(cpu * 1000 / len(ms), 2),
        "client_cpu_ms_per_request": round(client * 1000 / len(ms), 2),
        "machine_cpu_busy": None if busy is None else round(busy, 2),
    }


def run(
    apis: int, env: dict[str, str], workdir: Path, workloads: list[Workload], setup: Setup
) -> list[dict[str, Any]]:
    """Start ``apis`` API processes (together), drive each workload at them, stop them."""
    with Processes(workdir, env) as procs:
        servers = all_ready(
            procs.serve("--no-worker", "--no-gateway", wait=False) for _ in range(apis)
        )
        pids = [server.pid for server in servers]
        ports = [server.port for server in servers if server.port is not None]
        return [measure(workload, setup, pids, ports) for workload in workloads]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=POSTGRES_ADMIN_URL)
    parser.add_argument(
        "--read-path", action="append", help=f"signed GET (default {' and '.join(READS)})"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured, per workload")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured requests first")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--existing", type=int, default=1000, help="seeded contracts")
    parser.add_argument(
        "--apis", type=int, action="append", help="API process counts to run (default 1 and 2)"
    )
    parser.add_argument("--runs", type=int, default=1, help="rounds over the API counts")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="keyautomat-bench-"))
    database_url, drop = fresh_postgres(args.database_url)
    results = []
    try:
        upgrade(database_url)
        settings = Settings(
            database_url=database_url,
            secret_key=Fernet.generate_key().decode(),
            rate_limit_per_second=0,
            # The capacity of each process, every request served: admission control would
            # refuse the connections past its limit (bench/overload.py measures that).
            max_requests_in_flight=0,
            public_url=f"{PUBLIC_BASE}/v2",
            notify_sink_dir=work / "sink",
        )
        container = bootstrap(settings)
        account, key, creation = seed_iloq(container, args.existing)
        with container.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        container.close()
        # Neither the seed's writes nor this process's garbage should land in the figures.
        os.sync()
        gc.collect()
        gc.freeze()
        now = datetime.now(UTC)
        numbers = itertools.count()

        def read(path: str) -> Callable[[], tuple[str, bytes]]:
            return lambda: (path, b"")

        def create() -> tuple[str, bytes]:
            return creation.path, compact_json(creation.body(next(numbers), now)).encode()

        workloads = [Workload(f"GET {path}", "GET", read(path)) for path in args.read_path or READS]
        workloads.append(Workload(f"POST {creation.path} (groupId)", "POST", create))
        setup = Setup(account, key, args.connections, args.seconds, args.warmup)
        env = settings_env(settings)
        for round_ in range(args.runs):
            for apis in args.apis or [1, 2]:
                workdir = work / f"run{round_}-apis{apis}"
                results += run(apis, env, workdir, workloads, setup)
    finally:
        drop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"PostgreSQL, {os.cpu_count()} CPUs; {args.connections} keep-alive connections from "
        f"one client process, saturating for {args.seconds:g} s after {args.warmup} requests; "
        f"{args.existing} seeded contracts"
    )
    columns = {
        "throughput": "req/s",
        "p50_ms": "p50 ms",
        "p99_ms": "p99 ms",
        "server_cpu_ms_per_request": "API CPU ms",
        "client_cpu_ms_per_request": "client ms",
        "machine_cpu_busy": "busy",
    }
    print(f"APIs  {'workload':<40}" + "".join(f"{h:>11}" for h in columns.values()), "statuses")
    for r in results:
        print(
            f"{r['api_processes']:>4}  {r['workload']:<40}"
            + "".join(f"{r[c]!s:>11}" for c in columns),
            json.dumps(r["statuses"]),
            "(ran out of signed requests)" if r["ran_out"] else "",
        )
    for r in results:  # the same, one JSON object a line, for bench/table.py
        print(json.dumps(r))


if __name__ == "__main__":
    main()
