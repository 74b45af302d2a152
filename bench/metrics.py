"""What the request metrics cost per request, and what a scrape costs to render.

    uv run python bench/metrics.py [--requests 50000]

Drives the edge middleware (entrypoints/api/edge.py) around an app that answers at
once, in process, logging at WARNING (no access line): with the metrics call
replaced by a no-op (the floor), and with it, first in one process (values in
memory), then in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``: values in
memory-mapped files, run in a child process). Then the time to render
``/metrics`` for the per-process families with 100 route templates x 3 statuses
observed. Microseconds, the best of three runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from prometheus_client import generate_latest
from request_logging import answer, best  # the same app and timing as that bench

from keyautomat import metrics
from keyautomat.entrypoints.api.edge import EdgeMiddleware
from keyautomat.logs import configure_logging


def render_cost() -> float:
    for route in range(100):
        for status in (200, 400, 404):
            metrics.request_done("GET", f"/v2/route{route}/{{id}}", status, 0.004)
    registry = metrics.process_registry()
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(20):
            generate_latest(registry)
        runs.append((time.perf_counter() - started) / 20 * 1e6)
    return min(runs)


def measured(requests: int) -> None:
    app = EdgeMiddleware(answer)
    with_metrics = best(app, requests)
    mode = "multiprocess" if metrics.is_multiprocess() else "one process"
    print(f"edge with request metrics ({mode}) {with_metrics:7.1f} µs/request")
    print(f"render /metrics, 300 series ({mode}) {render_cost():7.0f} µs/scrape")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--measured-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    with open("/dev/null", "w") as sink:
        configure_logging(level="warning", log_format="text", stream=sink)
        if args.measured_only:
            measured(args.requests)
            return
        real = metrics.request_done
        metrics.request_done = lambda *_args: None
        floor = best(EdgeMiddleware(answer), args.requests)
        metrics.request_done = real
        print(f"edge, metrics call a no-op (floor)     {floor:7.1f} µs/request")
        measured(args.requests)
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, metrics.MULTIPROCESS_ENV: folder}
        command = [sys.executable, __file__, "--measured-only", "--requests", str(args.requests)]
        subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    main()
