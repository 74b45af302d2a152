"""The ``Idempotency-Key`` header on every POST and PATCH of ``/v2`` and ``/admin``.

An ASGI middleware just inside the signing middleware: it runs only for a request
whose signature held (the key belongs to the service account that signed), and it
compares the very body the signature was verified over. The rules and the table
are in ``service_layer/idempotency.py``; docs/api.md, "Idempotent requests", says
what clients see.

A request without the header passes straight through, at the cost of one header
scan. With it: the key is checked (400), claimed in a transaction of its own, and
either the request runs (its response is buffered, stored, then sent: a client
that has the answer can count on a retry getting it too) or the stored response
is replayed, or the request is refused (422 another request under this key, 409
one in progress).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyautomat.entrypoints.api.auth import read_body, replaying
from keyautomat.entrypoints.api.errors import send_error
from keyautomat.service_layer import idempotency as rules
from keyautomat.service_layer.idempotency import (
    IdempotencyStore,
    Refused,
    Replay,
    StoredResponse,
    Verdict,
)
from keyautomat.service_layer.principal import Principal

log = logging.getLogger(__name__)

RETRY_SOON = ((b"retry-after", b"1"),)


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, store: IdempotencyStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in rules.COVERED_METHODS:
            await self.app(scope, receive, send)
            return
        keys = [value for name, value in scope["headers"] if name == rules.HEADER_NAME]
        principal: Principal | None = scope.get("state", {}).get("principal")
        if not keys or principal is None:
            # No principal: not a signed route (the signing middleware refused the others).
            await self.app(scope, receive, send)
            return
        problem = rules.key_problem(keys)
        if problem is not None:
            await send_error(send, 400, [problem])
            return
        key = keys[0].decode("ascii")
        account_id = principal.service_account_id
        body = await read_body(receive)
        query: bytes = scope.get("query_string", b"")
        target = (scope.get("raw_path") or scope["path"].encode()) + (
            b"?" + query if query else b""
        )
        outcome = await self.store.claim(
            account_id, key, rules.fingerprint(scope["method"], target, body)
        )
        if isinstance(outcome, Refused):
            if outcome.verdict is Verdict.MISMATCH:
                await send_error(send, 422, rules.MISMATCH)
            else:
                await send_error(send, 409, rules.IN_PROGRESS, RETRY_SOON)
            return
        if isinstance(outcome, Replay):
            await _send(send, outcome.response, (rules.REPLAYED_HEADER,))
            return
        await self._run(scope, replaying(body, receive), send, account_id, key, outcome.token)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, account_id: str, key: str, token: str
    ) -> None:
        recorder = _Recorder()
        try:
            await self.app(scope, receive, recorder)
            response = recorder.response()
        except Exception:
            # The edge answers 500; the change, if any, was rolled back with the error. (A
            # cancellation at shutdown is no Exception: whether its transaction committed
            # is unknown, so its claim stays until the claim bound lets a retry take over.)
            await self.store.release(account_id, key, token)
            raise
        if not rules.is_stored(response.status):
            await self.store.release(account_id, key, token)
        else:
            try:
                kept = StoredResponse.kept(response.status, response.headers, response.body)
                if not await self.store.finish(account_id, key, token, kept):
                    log.warning(
                        "idempotency key of %s was taken over before it finished", account_id
                    )
            except Exception:
                # The request's change is committed: the client gets its answer anyway,
                # and a retry after the claim bound runs the request again.
                log.exception("could not store the response for an idempotency key")
        await _send(send, response)


class _Recorder:
    """A ``send`` that keeps the response instead of sending it."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        elif message["type"] == "http.response.body":
            self.chunks.append(bytes(message.get("body", b"")))

    def response(self) -> StoredResponse:
        if self.status is None:
            raise RuntimeError("the application returned without a response")
        return StoredResponse(self.status, tuple(self.headers), b"".join(self.chunks))


async def _send(
    send: Send, response: StoredResponse, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    headers = [(n, v) for n, v in response.headers if n.lower() != b"content-length"]
    headers += [(b"content-length", str(len(response.body)).encode()), *extra]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
