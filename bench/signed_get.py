"""Signed reads against a bare FastAPI hello app, side by side (issue #17, items 1-2).

One run starts both servers itself, each one uvicorn process served the same way
(uvloop, httptools, no access log; bench/hello_app.py):

* the bare FastAPI hello app (``GET /``), the stack's ceiling;
* ``keyautomat serve --no-worker`` on a fresh SQLite database with ``--automats``
  installed automats (no lockers; 100 of them make the list's body ~27 KB),

and alternates wrk runs over four measures, ``--runs`` rounds of each:

* ``hello``: the bare app;
* ``signed_root``: signed ``GET /v2/`` (the smoke test);
* ``signed_automat``: signed ``GET /v2/automats/{id}``, an automat without lockers;
* ``signed_list``: signed ``GET /v2/automats?limit=100``.

Every signed request carries its own signature (the server refuses replays), so
each run's requests are signed just before it (RSA-2048, ~1-2.5 ms each: most of
the bench's runtime) and wrk's threads each replay a disjoint slice of them. A run
that spends its pool before its time is up measured the pool, not the server: it is
run again with twice as many (the first pools are sized from a guess, later ones from
the last run's rate; on 2026-12-01 a faster machine met the guesses' ceiling).

For each measure it prints one JSON line::

    {"measure": "signed_root", "value": <median req/s>, "unit": "req/s",
     "runs": [...], "spread": (max - min) / median, "ratio_vs_hello": ...,
     "cpu_us_per_request": <median>, "cpu_runs": [...], "cpu_ratio_vs_hello": ...,
     "p50_ms": ..., "p99_ms": ..., "non2xx": ..., "pool_spent": <runs capped by MAX_POOL>,
     "bytes": <response body size>}

``cpu_us_per_request`` is the server process's user + system CPU time over the run
divided by the requests wrk completed: the figure to compare while the machine is
busy with other work, when req/s are low and noisy.

    uv run python bench/signed_get.py [--duration 5] [--connections 32] [--runs 3]
    uv run python bench/signed_get.py --server-path /tmp/old/src   # another tree's server

Runtime with the defaults: about 2-3 minutes (wrk 60 s, signing the rest). Needs
``wrk`` (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from support import free_port, serve
from tests.processes import wait_until_serving

from keyautomat.client import Client, signature_headers

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
  if idx >= #lines then
    -- The pool is spent: a signature sent twice is a replay (401), so stop here.
    wrk.thread:stop()
  end
  return lines[((idx - 1) % #lines) + 1]
end
"""

MEASURES = ("hello", "signed_root", "signed_automat", "signed_list")
# Signatures of one run at most (stamped ahead by their signing time, they must still fit
# the server's five-minute window: ~30 s of signing on 2026-12-01's machine).
MAX_POOL = 150_000
SIGNING_ACCOUNTS = 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def presign(
    accounts: list[tuple[str, str]], url: str, count: int, workers: int, start_ms: int
) -> tuple[list[str], int]:
    """``count`` signatures, spread over ``accounts`` (id, key), each account's with its
    own milliseconds from ``start_ms`` on; and the first millisecond left unused. A
    signature is a replay if its account and timestamp were sent before, so pools must
    not overlap; with several accounts a pool of 150,000 spans seconds, not minutes."""
    per = -(-count // len(accounts))
    chunks = [(account, key, url, start_ms, per) for account, key in accounts]
    with ProcessPoolExecutor(workers) as pool:
        lines = [line for chunk in pool.map(_sign_chunk, chunks) for line in chunk]
    return lines, start_ms + per


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wrk(
    url: str,
    duration: int,
    connections: int,
    threads: int,
    script: Path | None,
    args: list[str],
    pid: int,
) -> dict[str, float]:
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd += [url]
    if args:
        cmd += ["--", *args]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx and total:
        rps *= 1 - int(non2xx.group(1)) / total  # only answers served count
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        assert m is not None, out
        lat[pct] = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return {
        "rps": rps,
        "requests": float(total),
        "cpu_us": cpu / max(total, 1) * 1e6,
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _py_spy(folder: str | None, name: str, pid: int) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of ``pid`` into ``folder/<name>.txt`` until interrupted."""
    if folder is None:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    out = Path(folder) / f"{name}.txt"
    cmd = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "-o", str(out), "-r", "250"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_hello(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    hello = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("hello_app.py")), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_serving(port, 120.0)
    return hello, f"http://127.0.0.1:{port}"


def seed(api: Client, automats: int) -> str:
    """Installs ``automats`` automats (no lockers) through ``api``; returns the first one's id."""
    first = ""
    for i in range(automats):
        made = api.post(
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
        first = first or str(made["id"])
    return first


def summary(name: str, rows: list[dict[str, float]], hello: dict[str, Any]) -> dict[str, Any]:
    rps = [r["rps"] for r in rows]
    cpu = [round(r["cpu_us"], 1) for r in rows]
    value = statistics.median(rps)
    cpu_median = statistics.median(cpu)
    return {
        "measure": name,
        "value": round(value, 1),
        "unit": "req/s",
        "runs": [round(r, 1) for r in rps],
        "spread": round((max(rps) - min(rps)) / value, 3) if value else None,
        "ratio_vs_hello": round(value / hello["rps"], 3),
        # Each run against the hello run just before it: the ratio taken side by side.
        "ratio_runs": [round(r / h, 3) for r, h in zip(rps, hello["rps_runs"], strict=True)],
        "cpu_us_per_request": cpu_median,
        "cpu_runs": cpu,
        "cpu_spread": round((max(cpu) - min(cpu)) / cpu_median, 3) if cpu_median else None,
        "cpu_ratio_vs_hello": round(hello["cpu_us"] / cpu_median, 3) if cpu_median else None,
        "p50_ms": statistics.median(r["p50_ms"] for r in rows),
        "p99_ms": statistics.median(r["p99_ms"] for r in rows),
        "non2xx": statistics.median(r["non2xx"] for r in rows),
        # Runs that spent their signatures even at MAX_POOL: the figure is then a floor.
        "pool_spent": int(sum(r.get("pool_spent", 0.0) for r in rows)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--automats", type=int, default=100)
    parser.add_argument(
        "--profile",
        help="a folder: py-spy records the server during each measure's first run there "
        "(collapsed stacks, <measure>.txt)",
    )
    parser.add_argument(
        "--server-path",
        help="a src/ folder to run keyautomat from (PYTHONPATH), e.g. an older tree's",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="keyautomat-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTOMAT_")}
    hello_env = dict(env)
    if args.server_path:
        env["PYTHONPATH"] = str(Path(args.server_path).resolve())
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
    hello_server, hello_base = start_hello(hello_env)
    script = work / "signed.lua"
    script.write_text(LUA)
    sig_file = work / "signatures.tsv"
    sign_seconds = 0.0
    signed_total = 0
    started = time.monotonic()
    try:
        api = Client(f"{base}/v2", account, key)
        automat_id = seed(api, args.automats)
        signers = [(account, key)]
        for i in range(1, SIGNING_ACCOUNTS):
            made = api.post(
                "/serviceAccounts",
                {"organizationUnitId": info["organizationUnitId"], "name": f"Bench {i}"},
            )
            signers.append((made["id"], made["privateKey"]))
        next_ms = 0
        paths = {
            "signed_root": "/v2/",
            "signed_automat": f"/v2/automats/{automat_id}",
            "signed_list": "/v2/automats?limit=100",
        }
        sizes = {
            "signed_root": len(json.dumps(api.get("/"), separators=(",", ":"))),
            "signed_automat": len(
                json.dumps(api.get(f"/automats/{automat_id}"), separators=(",", ":"))
            ),
            "signed_list": len(json.dumps(api.get("/automats?limit=100"), separators=(",", ":"))),
        }

        def signed_run(name: str, count: int) -> dict[str, float]:
            # Signatures are made just before each run, each with its own
            # timestamp inside the server's window, and never reused. A run that
            # spends its whole pool stops early and measures the pool, not the server:
            # it is discarded and run again with twice the pool.
            nonlocal sign_seconds, signed_total, next_ms
            url_path = paths[name]
            while True:
                # Stamped ahead by the time the signing will take (as the last pools went),
                # so that the first signature is not older than the last when wrk starts;
                # the server takes timestamps up to five minutes either side of its clock.
                signing_ms = int(1000 * count * sign_seconds / max(signed_total, 1))
                began = time.monotonic()
                pool, next_ms = presign(
                    signers,
                    base + url_path,
                    count,
                    os.cpu_count() or 2,
                    max(time.time_ns() // 1_000_000 + signing_ms, next_ms),
                )
                sign_seconds += time.monotonic() - began
                signed_total += len(pool)
                sig_file.write_text("\n".join(pool) + "\n")
                row = wrk(
                    base + url_path,
                    args.duration,
                    args.connections,
                    args.threads,
                    script,
                    [str(sig_file), str(args.threads), url_path],
                    server.pid,
                )
                # wrk stops a thread at its slice's end with its connections' requests
                # still out: a spent pool shows as a count up to that many short of it.
                spent = row["requests"] >= len(pool) - 2 * args.connections
                if not spent or count >= MAX_POOL:
                    row["pool_spent"] = float(spent)
                    return row
                count = min(MAX_POOL, count * 2)

        results: dict[str, list[dict[str, float]]] = {name: [] for name in MEASURES}

        def enough(rows: list[dict[str, float]], first_guess: float) -> int:
            # A fifth again what the previous run managed, capped so that the
            # oldest signature stays well inside the five-minute window.
            rate = rows[-1]["rps"] if rows else first_guess
            return min(MAX_POOL, max(1_000, int(rate * args.duration * 1.2)))

        # First pools, before a run of the measure tells its rate; later ones follow it.
        guesses = {"signed_root": 2_500.0, "signed_automat": 2_000.0, "signed_list": 1_000.0}
        for _ in range(args.runs):
            for name in MEASURES:
                if name == "hello":
                    row = wrk(
                        f"{hello_base}/",
                        args.duration,
                        args.connections,
                        args.threads,
                        None,
                        [],
                        hello_server.pid,
                    )
                else:
                    spy = _py_spy(args.profile, name, server.pid) if not results[name] else None
                    row = signed_run(name, enough(results[name], guesses[name]))
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(timeout=60)
                results[name].append(row)
    finally:
        for process in (server, hello_server):
            process.terminate()
            process.wait(timeout=20)

    hello = {
        "rps_runs": [r["rps"] for r in results["hello"]],
        "rps": statistics.median(r["rps"] for r in results["hello"]),
        "cpu_us": statistics.median(r["cpu_us"] for r in results["hello"]),
    }
    for name in MEASURES:
        line = summary(name, results[name], hello)
        line["bytes"] = sizes.get(name, len(b'{"hello":"world"}'))
        line["duration_s"] = args.duration
        line["connections"] = args.connections
        print(json.dumps(line), flush=True)
    print(
        json.dumps(
            {
                "measure": "bench",
                "value": round(time.monotonic() - started, 1),
                "unit": "s",
                "runs": args.runs,
                "spread": None,
                "signed_requests": signed_total,
                "signing_s": round(sign_seconds, 1),
                "server_path": args.server_path or "this tree",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
