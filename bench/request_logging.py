"""What the edge middleware's request id and access line cost per request.

    uv run python bench/request_logging.py [--requests 50000]

Drives the edge middleware (entrypoints/api/edge.py) around an app that answers at
once, in process, with the log written to /dev/null: without the middleware (the
floor), with it at WARNING (request id, context variables, response header; no
access line), and at INFO with the access line in text and in JSON. Printed in
microseconds per request, the best of three runs.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyautomat.entrypoints.api.edge import EdgeMiddleware
from keyautomat.logs import configure_logging

SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "GET",
    "path": "/v2/automats",
    "raw_path": b"/v2/automats",
    "query_string": b"limit=100",
    "headers": [
        (b"host", b"127.0.0.1:8080"),
        (b"x-service-account-id", b"6b0db4ec9e737f6539817fa1"),
        (b"x-timestamp", b"1767225600000"),
        (b"x-signature", b"s" * 344),
        (b"x-request-id", b"trace-0001"),
    ],
}


async def answer(_scope: Scope, _receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def drop(_message: Message) -> None:
    return None


async def per_request(app: ASGIApp, requests: int) -> float:
    for _ in range(requests // 10):
        await app(dict(SCOPE), receive, drop)
    started = time.perf_counter()
    for _ in range(requests):
        await app(dict(SCOPE), receive, drop)
    return (time.perf_counter() - started) / requests * 1e6


def best(app: ASGIApp, requests: int) -> float:
    return min(asyncio.run(per_request(app, requests)) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    with open("/dev/null", "w") as sink:
        cases: list[tuple[str, ASGIApp, str, str]] = [
            ("no middleware", answer, "warning", "text"),
            ("edge, WARNING (no access line)", EdgeMiddleware(answer), "warning", "text"),
            ("edge, INFO, text access line", EdgeMiddleware(answer), "info", "text"),
            ("edge, INFO, JSON access line", EdgeMiddleware(answer), "info", "json"),
        ]
        for label, app, level, log_format in cases:
            configure_logging(level=level, log_format=log_format, stream=sink)
            print(f"{label:34} {best(app, args.requests):6.1f} µs/request")


if __name__ == "__main__":
    main()
