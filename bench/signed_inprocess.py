"""CPU per request of signed reads inside one process, no sockets: where the time goes.

Builds keyautomat's app on a fresh SQLite database (100 automats, no lockers) and
the bare FastAPI hello app (bench/hello_app.py), then drives each with pre-built
ASGI requests, one at a time, on one event loop: no HTTP parsing, no network, no
other process competing, so the figures are the application's own CPU per
request and steady even on a busy machine. Prints one JSON line per measure::

    {"measure": "signed_root", "value": <median µs per request>, "unit": "us/request",
     "runs": [...], "spread": ..., "ratio_vs_hello": hello µs / this µs}

With ``--profile`` it also prints the top functions (cProfile, cumulative) of each
signed measure to stderr.

    uv run python bench/signed_inprocess.py [--requests 2000] [--runs 3] [--profile]

Runtime: about half a minute (signing the requests is most of it).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import support  # noqa: F401 - puts the project root on sys.path
from cryptography.fernet import Fernet
from hello_app import app as hello_app
from signed_get import seed
from starlette.testclient import TestClient
from tests.conftest import make_tenant

from keyautomat.bootstrap import bootstrap
from keyautomat.client import Client, signature_headers
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
BASE = "http://testserver"


def scope_of(path: str, headers: dict[str, str]) -> dict[str, Any]:
    raw, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": raw,
        "raw_path": raw.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")]
        + [(k.encode(), v.encode()) for k, v in headers.items()],
    }


async def drive(app: ASGI, scopes: list[dict[str, Any]]) -> float:
    """Seconds of CPU (process time) per request, the requests served one by one."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    began = time.process_time()
    for scope in scopes:
        await app(scope, receive, send)
    took = time.process_time() - began
    bad = [s for s in statuses if s != 200]
    assert not bad, f"{len(bad)} answers were not 200: {bad[:3]}"
    return took / len(scopes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--automats", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="keyautomat-inprocess-"))
    settings = Settings(
        database_url=f"sqlite:///{work / 'bench.db'}",
        secret_key=Fernet.generate_key().decode(),
        secret_key_file=work / "unused.key",
        rate_limit_per_second=0,
    )
    from keyautomat.adapters.migrate import upgrade

    upgrade(settings.database_url)
    container = bootstrap(settings)
    app = create_app(container, run_gateway=False)
    results: dict[str, list[float]] = {}
    with TestClient(app, base_url=BASE) as http:
        tenant = make_tenant(container, http)
        api: Client = tenant.api
        first = seed(api, args.automats)
        paths = {
            "signed_root": "/v2/",
            "signed_automat": f"/v2/automats/{first}",
            "signed_list": "/v2/automats?limit=100",
        }

        def signed(path: str, count: int) -> list[dict[str, Any]]:
            start = time.time_ns() // 1_000_000
            return [
                scope_of(
                    path,
                    signature_headers(
                        method="GET",
                        url=BASE + path,
                        body="",
                        service_account_id=tenant.account_id,
                        private_key_pem=tenant.private_key,
                        timestamp_ms=start + i,
                    ),
                )
                for i in range(count)
            ]

        # The app's lifespan runs in the test client's thread; requests are driven on a
        # loop of our own, as uvicorn would on its one loop.
        loop = asyncio.new_event_loop()
        hello_scopes = [scope_of("/", {})] * args.requests
        for run in range(args.runs):
            results.setdefault("hello", []).append(
                loop.run_until_complete(drive(hello_app, hello_scopes))
            )
            for name, path in paths.items():
                count = args.requests if name != "signed_list" else args.requests // 4
                scopes = signed(path, count)
                profile = cProfile.Profile() if args.profile and run == 0 else None
                if profile is not None:
                    profile.enable()
                results.setdefault(name, []).append(loop.run_until_complete(drive(app, scopes)))
                if profile is not None:
                    profile.disable()
                    out = io.StringIO()
                    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(45)
                    print(f"=== {name}\n{out.getvalue()}", file=sys.stderr)
        loop.close()
    container.close()
    hello = statistics.median(results["hello"])
    for name, seconds in results.items():
        us = [round(s * 1e6, 1) for s in seconds]
        value = statistics.median(us)
        print(
            json.dumps(
                {
                    "measure": name,
                    "value": value,
                    "unit": "us/request",
                    "runs": us,
                    "spread": round((max(us) - min(us)) / value, 3),
                    "ratio_vs_hello": round(hello * 1e6 / value, 3),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
