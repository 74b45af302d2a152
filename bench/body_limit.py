"""Peak memory of ``keyautomat serve`` while clients stream oversized bodies at it.

    uv run python bench/body_limit.py [--clients 3] [--megabytes 100] [--path /sign/x]

Starts the server on a fresh SQLite database, lets it settle, then has each
client POST a chunked body (no Content-Length) of the given size, and prints
the answers, the time taken and the server's resident (VmRSS) and peak
(VmHWM) memory from /proc before and after. With the edge middleware's limit
the peak stays at the idle figure: no body is held past its limit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from support import serve

CHUNK = b"x" * 65536


def memory(pid: int) -> str:
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    )
    return f"rss {fields['VmRSS'].strip()}, peak {fields['VmHWM'].strip()}"


def body(total: int) -> Iterator[bytes]:
    for _ in range(total // len(CHUNK)):
        yield CHUNK


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--path", default="/sign/x")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="keyautomat-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTOMAT_")}
    env.update(
        KEYAUTOMAT_DATABASE_URL=f"sqlite:///{work / 'bench.db'}",
        KEYAUTOMAT_SECRET_KEY_FILE=str(work / "secret.key"),
    )
    cli = [sys.executable, "-m", "keyautomat.entrypoints.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    server, base = serve(env, "--no-worker", quiet=True)
    try:
        time.sleep(1)
        print(f"idle: {memory(server.pid)}")
        answers: list[str] = []

        def send() -> None:
            try:
                response = httpx.post(
                    base + args.path, content=body(args.megabytes << 20), timeout=300
                )
                answers.append(str(response.status_code))
            except httpx.HTTPError as exc:
                answers.append(type(exc).__name__)

        started = time.monotonic()
        clients = [threading.Thread(target=send) for _ in range(args.clients)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        took = time.monotonic() - started
        print(f"{args.clients} x {args.megabytes} MB to {args.path}: {answers} in {took:.1f} s")
        print(f"after: {memory(server.pid)}")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
