"""Signed ``GET /v2/automats?limit=100`` throughput versus an unauthenticated route.

Starts ``keyautomat serve`` (uvicorn, one process) on a fresh SQLite database
with 100 installed automats, then alternates wrk runs against the signed list
and against ``/healthz`` of the same app, and prints both, their ratio and the
latency percentiles. Every signed request carries its own signature (the
server refuses replays), so the requests are signed ahead of time and wrk's
threads each replay a disjoint slice of them.

    uv run python bench/signed_get.py [--duration 10] [--connections 32] [--runs 3]

Needs ``wrk`` (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from support import serve

from keyautomat.client import signature_headers

LUA = r"""
local lines = {}
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local nthreads = tonumber(args[2])
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == id then
      local account, ts, sig = line:match("([^\t]+)\t([^\t]+)\t([^\t]+)")
      table.insert(lines, wrk.format("GET", args[3], {
        ["x-service-account-id"] = account,
        ["x-timestamp"] = ts,
        ["x-signature"] = sig,
        ["content-type"] = "application/json",
      }))
    end
    i = i + 1
  end
  idx = 0
end
function request()
  idx = idx + 1
  return lines[((idx - 1) % #lines) + 1]
end
"""


def _sign_chunk(args: tuple[str, str, str, int, int]) -> list[str]:
    account, key, url, start_ms, count = args
    out = []
    for i in range(count):
        h = signature_headers(
            method="GET",
            url=url,
            body="",
            service_account_id=account,
            private_key_pem=key,
            timestamp_ms=start_ms + i,
        )
        out.append(f"{account}\t{h['x-timestamp']}\t{h['x-signature']}")
    return out


def presign(account: str, key: str, url: str, count: int, workers: int) -> list[str]:
    # Distinct timestamps make distinct signatures; all lie in the next
    # ``count`` milliseconds, inside the server's five-minute window and after
    # it started (the server refuses requests signed before its start).
    base = time.time_ns() // 1_000_000
    per = -(-count // workers)
    chunks = [(account, key, url, base + i * per, per) for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        return [line for chunk in pool.map(_sign_chunk, chunks) for line in chunk]


def wrk(
    url: str, duration: int, connections: int, threads: int, script: Path | None, args: list[str]
) -> dict[str, float]:
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd += [url]
    if args:
        cmd += ["--", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        assert m is not None, out
        value = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        lat[pct] = value
    return {
        "rps": rps,
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--automats", type=int, default=100)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="keyautomat-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTOMAT_")}
    env.update(
        KEYAUTOMAT_DATABASE_URL=f"sqlite:///{work / 'bench.db'}",
        KEYAUTOMAT_RATE_LIMIT_PER_SECOND="0",
        KEYAUTOMAT_SECRET_KEY_FILE=str(work / "secret.key"),
    )
    cli = [sys.executable, "-m", "keyautomat.entrypoints.cli"]
    init = subprocess.run(
        [*cli, "init", "--org-name", "Bench", "--key-out", str(work / "admin.pem")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(init.stdout)
    key = Path(info["privateKeyFile"]).read_text()
    account = info["serviceAccountId"]

    server, base = serve(env, "--log-level", "warning", "--no-worker", quiet=True)
    try:
        from keyautomat.client import Client

        api = Client(f"{base}/v2", account, key)
        for i in range(args.automats):
            api.post(
                "/automats/install",
                {
                    "name": f"Automat {i}",
                    "address": "Benchmark street 1",
                    "postalCode": "00100",
                    "postalOffice": "Helsinki",
                    "timezone": "Europe/Helsinki",
                    "product": "key20",
                },
            )
        path = "/v2/automats?limit=100"
        smoke_path = "/v2/"
        body = api.get("/automats?limit=100")
        payload_bytes = len(json.dumps(body, separators=(",", ":")))
        script = work / "signed.lua"
        script.write_text(LUA)
        sig_file = work / "signatures.tsv"
        sign_seconds = 0.0
        signed_total = 0

        def signed_run(url_path: str, count: int) -> dict[str, float]:
            # Signatures are made just before each run, each with its own
            # timestamp inside the server's window, and never reused.
            nonlocal sign_seconds, signed_total
            started = time.monotonic()
            pool = presign(account, key, base + url_path, count, os.cpu_count() or 2)
            sign_seconds += time.monotonic() - started
            signed_total += len(pool)
            sig_file.write_text("\n".join(pool) + "\n")
            return wrk(
                base + url_path,
                args.duration,
                args.connections,
                args.threads,
                script,
                [str(sig_file), str(args.threads), url_path],
            )

        def enough(rows: list[dict[str, float]]) -> int:
            # Half again what the previous run managed, capped so that the
            # oldest signature stays well inside the five-minute window.
            rate = rows[-1]["rps"] if rows else 2_000.0
            return min(150_000, max(2_000, int(rate * args.duration * 1.5)))

        hello: list[dict[str, float]] = []
        smoke: list[dict[str, float]] = []
        signed: list[dict[str, float]] = []
        for _ in range(args.runs):
            hello.append(
                wrk(f"{base}/healthz", args.duration, args.connections, args.threads, None, [])
            )
            smoke.append(signed_run(smoke_path, enough(smoke)))
            signed.append(signed_run(path, enough(signed)))
    finally:
        server.terminate()
        server.wait(timeout=20)

    def med(rows: list[dict[str, float]], field: str) -> float:
        return statistics.median(r[field] for r in rows)

    print(
        f"pre-signed {signed_total} requests in {sign_seconds:.1f} s; "
        f"list response {payload_bytes} bytes ({args.automats} automats)"
    )
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"median of {args.runs} runs, one uvicorn process, SQLite"
    )
    print(f"{'route':<34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    for name, rows in (
        ("GET /healthz (unauthenticated)", hello),
        ("signed GET /v2/ (smoke test)", smoke),
        ("signed GET /v2/automats?limit=100", signed),
    ):
        print(
            f"{name:<34}{med(rows, 'rps'):>10.0f}{med(rows, 'p50_ms'):>10.2f}"
            f"{med(rows, 'p99_ms'):>10.2f}{med(rows, 'non2xx'):>10.0f}"
        )
    print(f"ratio signed list / unauthenticated: {med(signed, 'rps') / med(hello, 'rps'):.3f}")
    print(f"ratio signed smoke test / unauthenticated: {med(smoke, 'rps') / med(hello, 'rps'):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
