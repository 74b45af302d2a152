"""A real webhook receiver on 127.0.0.1 that verifies every delivery with ``standardwebhooks``.

It runs ``http.server`` in a thread, as an integrator's endpoint would run
elsewhere: our sender reaches it over TCP, and it checks the signature with
the receivers' own library before answering. ``plan`` decides the answer, so a
test can make it fail on purpose.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str | None
    status: int

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    port: int = 0
    secrets: list[str] = field(default_factory=list)
    # Answer for a delivery that verified; None means 200.
    plan: Callable[[Received], int | None] = lambda _r: None
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def verify(self, body: bytes, headers: dict[str, str]) -> str | None:
        if not self.secrets:
            return "receiver has no secret"
        errors = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError as exc:
                errors.append(str(exc))
            else:
                return None
        return "; ".join(errors)

    @property
    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.status < 300]

    def payloads(self) -> list[Any]:
        return [r.payload for r in self.accepted]


@contextmanager
def running_receiver(**kwargs: Any) -> Iterator[Receiver]:
    receiver = Receiver(**kwargs)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            error = receiver.verify(body, headers)
            record = Received(self.path, headers, body, error is None, error, 0)
            status = 401 if error is not None else (receiver.plan(record) or 200)
            record.status = status
            with receiver.lock:
                receiver.received.append(record)
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
