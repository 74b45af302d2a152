"""The outermost layer of the API: what every request must meet before anything else runs.

One pure ASGI middleware, wrapped around everything the application adds, with
three jobs (docs/api.md, "The edge"):

* **URL text.** A NUL (or an unpaired surrogate) anywhere in the decoded path or
  in a query parameter answers 400 before routing or authentication, by the one
  text rule of ``domain/text.py``. No URL part can then reach the database.
* **Body size.** One limit for every route, with smaller limits for some path
  prefixes (the signature form). A declared ``Content-Length`` over the limit is
  refused before the application runs; otherwise the bytes are counted as they
  arrive and the request is refused the moment the count passes the limit, so a
  chunked or lying body is never buffered. 413, with ``Connection: close`` so the
  unread rest of the body does not have to be drained.
* **Unexpected errors.** Anything the application raises before it started a
  response is logged and answered 500 in the one error shape, and the exception
  ends here. Starlette's outer error middleware would send the same 500 and then
  re-raise, and uvicorn closes the connection of a request whose application
  raised: the client's next request on that keep-alive connection would fail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyautomat.domain.text import text_problem
from keyautomat.entrypoints.api.errors import send_error

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
TOO_LARGE = "Request body is too large"
CLOSE = ((b"connection", b"close"),)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit.

    An ``HTTPException`` so that FastAPI's own body parsing passes it on unchanged
    (it turns any other exception into a 400) and its handler answers the same 413.
    """

    def __init__(self) -> None:
        super().__init__(413, TOO_LARGE, headers={"Connection": "close"})


def url_problem(scope: Scope) -> str | None:
    """What is wrong with the request's path or query text, naming the part, or None."""
    problem = text_problem(scope["path"])
    if problem is not None:
        return f"path: {problem}"
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        # Parsing costs ~17 µs a request, and only a NUL can be in the way: the parser
        # decodes escapes as UTF-8 with replacement, which never yields a lone surrogate.
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        problem = text_problem(name)
        if problem is not None:
            return f"query: {problem}"
        problem = text_problem(value)
        if problem is not None:
            return f"{name}: {problem}"
    return None


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # The server refuses a malformed Content-Length; a huge one is still a number.
            return int(value) if value.isdigit() else None
    return None


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        body_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Longest prefix first, so the most specific limit wins.
        self.body_limits = sorted((body_limits or {}).items(), key=lambda kv: -len(kv[0]))

    def body_limit(self, path: str) -> int:
        for prefix, limit in self.body_limits:
            if path.startswith(prefix):
                return limit
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = url_problem(scope)
        if problem is not None:
            await send_error(send, 400, [problem])
            return
        limit = self.body_limit(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await send_error(send, 413, TOO_LARGE, CLOSE)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await send_error(send, 413, TOO_LARGE, CLOSE)
        except Exception:
            if started:
                # Half a response is out: closing the connection is all that is left.
                raise
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await send_error(send, 500, "Internal server error")
