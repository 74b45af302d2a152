"""Overload: iLOQ contract creation offered at 1x, 2x, 3x the rate one process can serve.

Seeds and starts ``keyautomat serve`` as bench/contracts.py does (1,000 key20 automats of
30 lockers, one group of them all, SQLite by default; ``seeded_server``), then:

1. **Saturation**, closed loop: ``--clients`` senders each send their next
   ``POST /v2/iloq/keycontracts`` as soon as the last is answered; the rate of 201s
   over ``--seconds`` (after ``--warmup``) is the saturation rate.
2. **Each level** (``--levels``, default 1,2,3 times that rate), open loop: requests
   are sent at the offered rate whatever the answers, for ``--seconds``; latency is
   taken from the moment each request was due to be sent, so a client that falls
   behind shows up rather than hiding the server's delay.

One JSON line for the saturation, then one per level::

    {"level", "offered_per_s", "served_per_s", "refused_per_s",
     "served_fraction_of_saturation", "p50_ms", "p99_ms" (of the 201s), "max_ms",
     "refused_p99_ms", "statuses" (0: no answer within 30 s), "server_cpu_ms_per_request",
     "send_lag_p99_ms" (how late this client sent: near 0, or the figures are the client's)}

The server runs with the default admission control unless ``--max-in-flight`` (0: off,
to compare with the behaviour before it), ``--wait-ms`` or ``--target-ms`` say otherwise.

    uv run python bench/overload.py                      # ~2.5 min on 2 busy cores
    uv run python bench/overload.py --max-in-flight 0    # without admission control
    uv run python bench/overload.py --seconds 5 --levels 1,3
    uv run python bench/overload.py --target-ms 0       # the limit fixed, not following latency

The client is cheap by design: requests are signed ahead in two worker processes (an
RSA-2048 signature costs the client 1-4 ms, more than the server spends on a refusal),
sent as raw HTTP/1.1 over kept-alive connections, and a request refused with 429 is
sent again later as it is (a refusal happens before the signature is checked, so its
signature is still unused). Contract periods move two days on every 10,000 requests so
that the keys never run out, however long it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing
import re
import statistics
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts import IloqWorkload, cpu_seconds, seeded_server

from keyautomat.client import compact_json, signature_headers

PER_ROUND = 10_000  # requests before the contract periods move on
TIMEOUT_SECONDS = 30.0
MAX_CONNECTIONS = 1000
RETRY_AFTER_SECONDS = 1.0
LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    account: str
    key: str


def sign_batch(target: Target, bodies: list[bytes]) -> list[bytes]:
    """Raw HTTP/1.1 requests, each signed now (in a worker process)."""
    url = f"http://{target.host}:{target.port}{target.path}"
    requests = []
    for body in bodies:
        signed = signature_headers(
            method="POST",
            url=url,
            body=body,
            service_account_id=target.account,
            private_key_pem=target.key,
        )
        head = [
            f"POST {target.path} HTTP/1.1",
            f"host: {target.host}:{target.port}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            *(f"{name}: {value}" for name, value in signed.items()),
        ]
        requests.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return requests


@dataclass
class Signer:
    target: Target
    workload: IloqWorkload
    pool: ProcessPoolExecutor
    numbers: Iterator[int] = field(default_factory=itertools.count)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def body(self, n: int) -> bytes:
        moved = self.now + timedelta(days=2 * (n // PER_ROUND))
        return compact_json(self.workload.body(n, moved)).encode()

    def ahead(self, count: int) -> deque[bytes]:
        bodies = [self.body(next(self.numbers)) for _ in range(count)]
        chunks = [bodies[i : i + 250] for i in range(0, len(bodies), 250)]
        signed = self.pool.map(sign_batch, [self.target] * len(chunks), chunks)
        return deque(itertools.chain.from_iterable(signed))

    def one(self) -> bytes:
        """Signed here, when the requests signed ahead ran out (slow: counted)."""
        return sign_batch(self.target, [self.body(next(self.numbers))])[0]


class Connections:
    """Kept-alive HTTP/1.1 connections to the server, at most ``MAX_CONNECTIONS`` at once."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.limit = asyncio.Semaphore(MAX_CONNECTIONS)

    async def exchange(self, raw: bytes) -> int:
        """The answer's status; 0 when none came (timeout, connection lost)."""
        async with self.limit:
            reused = bool(self.idle)
            status = await self._exchange(raw, reused)
            if status < 0:
                # A kept-alive connection the server had closed before the request
                # arrived (no byte answered): the request never reached it.
                status = await self._exchange(raw, reused=False)
            return max(status, 0)

    async def _exchange(self, raw: bytes, reused: bool) -> int:
        if reused:
            reader, writer = self.idle.pop()
        else:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                return 0
        head = b""
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                length = LENGTH.search(head)
                await reader.readexactly(int(length.group(1)) if length else 0)
        except TimeoutError:
            writer.close()
            return 0
        except (OSError, asyncio.IncompleteReadError):
            writer.close()
            return -1 if reused and not head else 0
        if b"connection: close" in head.lower():
            writer.close()
        else:
            self.idle.append((reader, writer))
        return int(head[9:12])

    def close(self) -> None:
        """Closes the idle connections (the server closes them after 5 s idle anyway)."""
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


@dataclass
class Tally:
    answers: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds)
    lags: list[float] = field(default_factory=list)
    signed_here: int = 0


async def send(
    conns: Connections, signer: Signer, ready: deque[bytes], due: float, tally: Tally
) -> int:
    if ready:
        raw = ready.popleft()
    else:
        raw = signer.one()
        tally.signed_here += 1
    tally.lags.append(time.perf_counter() - due)
    status = await conns.exchange(raw)
    tally.answers.append((status, time.perf_counter() - due))
    if status == 429:
        ready.append(raw)  # refused unread: its signature is still unused
    return status


async def closed_loop(
    conns: Connections, signer: Signer, ready: deque[bytes], clients: int, seconds: float
) -> tuple[Tally, float]:
    tally = Tally()
    started = time.perf_counter()
    deadline = started + seconds

    async def sender() -> None:
        while time.perf_counter() < deadline:
            if await send(conns, signer, ready, time.perf_counter(), tally) == 429:
                # As LivionKey's clients do (they wait at least 1 s): resending at once
                # would only measure how fast the server refuses.
                await asyncio.sleep(RETRY_AFTER_SECONDS)

    await asyncio.gather(*(sender() for _ in range(clients)))
    return tally, time.perf_counter() - started


async def open_loop(
    conns: Connections, signer: Signer, ready: deque[bytes], rate: float, seconds: float
) -> tuple[Tally, float]:
    tally = Tally()
    count = int(rate * seconds)
    tasks: list[asyncio.Task[int]] = []
    started = time.perf_counter()
    while len(tasks) < count:
        now = time.perf_counter()
        due_now = min(count, int((now - started) * rate) + 1)
        for i in range(len(tasks), due_now):
            due = started + i / rate
            tasks.append(asyncio.create_task(send(conns, signer, ready, due, tally)))
        next_due = started + len(tasks) / rate
        await asyncio.sleep(max(0.0, next_due - time.perf_counter()))
    await asyncio.gather(*tasks)
    # Until the last answer: what was still in flight when the offering stopped counts.
    return tally, time.perf_counter() - started


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(len(ordered) * q) - 1)] * 1000, 1)


def summary(tally: Tally, elapsed: float, cpu: float | None) -> dict[str, Any]:
    served = [s for status, s in tally.answers if status == 201]
    refused = [s for status, s in tally.answers if status in {429, 503}]
    return {
        "served_per_s": round(len(served) / elapsed, 1),
        "refused_per_s": round(len(refused) / elapsed, 1),
        "p50_ms": None if not served else round(statistics.median(served) * 1000, 1),
        "p99_ms": quantile(served, 0.99),
        "max_ms": quantile(served, 1.0),
        "refused_p99_ms": quantile(refused, 0.99),
        "statuses": dict(sorted(Counter(status for status, _ in tally.answers).items())),
        "server_cpu_ms_per_request": (
            None if cpu is None or not tally.answers else round(cpu * 1000 / len(tally.answers), 2)
        ),
        "send_lag_p99_ms": quantile(tally.lags, 0.99),
        "signed_in_the_loop": tally.signed_here,
    }


async def measure(
    target: Target, signer: Signer, pid: int, args: argparse.Namespace, limited: bool
) -> None:
    conns = Connections(target.host, target.port)
    try:
        # Warm up (the server's statement caches fill on first use), then saturate.
        ready = signer.ahead(args.presign)
        conns.close()
        await closed_loop(conns, signer, ready, args.clients, args.warmup)
        before = cpu_seconds(pid)
        tally, elapsed = await closed_loop(conns, signer, ready, args.clients, args.seconds)
        after = cpu_seconds(pid)
        cpu = None if before is None or after is None else after - before
        saturation = summary(tally, elapsed, cpu)
        rate = saturation["served_per_s"]
        print(
            json.dumps(
                {
                    "level": "saturation",
                    "clients": args.clients,
                    "max_in_flight": args.max_in_flight,
                    "wait_ms": args.wait_ms,
                    **saturation,
                }
            ),
            flush=True,
        )
        if rate <= 0:
            raise SystemExit("nothing was served: no saturation rate to offer multiples of")
        for level in args.levels:
            offered = rate * level
            # Refused requests are sent again, so only what can be served needs signing.
            served_at_most = min(offered, 1.5 * rate) if limited else offered
            ready = signer.ahead(int(served_at_most * args.seconds) + 200)
            conns.close()  # idle through the signing: the server has closed them
            before = cpu_seconds(pid)
            tally, elapsed = await open_loop(conns, signer, ready, offered, args.seconds)
            after = cpu_seconds(pid)
            cpu = None if before is None or after is None else after - before
            result = summary(tally, elapsed, cpu)
            print(
                json.dumps(
                    {
                        "level": f"{level:g}x",
                        "offered_per_s": round(offered, 1),
                        "served_per_s": result.pop("served_per_s"),
                        "refused_per_s": result.pop("refused_per_s"),
                        "served_fraction_of_saturation": round(
                            len([1 for s, _ in tally.answers if s == 201]) / elapsed / rate, 2
                        ),
                        **result,
                    }
                ),
                flush=True,
            )
    finally:
        conns.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--existing", type=int, default=1000, help="contracts seeded before")
    parser.add_argument("--database-url", help="PostgreSQL (default: SQLite in a temp dir)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured per level")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=16, help="closed-loop senders")
    parser.add_argument(
        "--levels",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[1.0, 2.0, 3.0],
        help="multiples of the saturation rate to offer",
    )
    parser.add_argument(
        "--max-in-flight", type=int, help="KEYAUTOMAT_MAX_REQUESTS_IN_FLIGHT (0: off)"
    )
    parser.add_argument("--wait-ms", type=int, help="KEYAUTOMAT_ADMISSION_WAIT_MS")
    parser.add_argument(
        "--target-ms", type=int, help="KEYAUTOMAT_ADMISSION_TARGET_MS (0: a fixed limit)"
    )
    parser.add_argument(
        "--presign", type=int, default=4000, help="requests signed ahead for the saturation"
    )
    args = parser.parse_args()
    extra_env = {}
    if args.max_in_flight is not None:
        extra_env["KEYAUTOMAT_MAX_REQUESTS_IN_FLIGHT"] = str(args.max_in_flight)
    if args.wait_ms is not None:
        extra_env["KEYAUTOMAT_ADMISSION_WAIT_MS"] = str(args.wait_ms)
    if args.target_ms is not None:
        extra_env["KEYAUTOMAT_ADMISSION_TARGET_MS"] = str(args.target_ms)
    limited = args.max_in_flight != 0
    with (
        seeded_server("iloq", args.existing, args.database_url, extra_env) as started,
        ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):
        server, base_url, (account, key), workload = started
        assert isinstance(workload, IloqWorkload)
        host, port = base_url.removeprefix("http://").rsplit(":", 1)
        target = Target(host, int(port), workload.path, account, key)
        signer = Signer(target, workload, pool)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(measure(target, signer, server.pid, args, limited))


if __name__ == "__main__":
    main()
