"""The outermost layer of the API: what every request must meet before anything else runs.

One pure ASGI middleware, wrapped around everything the application adds, with
four jobs (docs/api.md, "The edge"):

* **Request ids.** Each request gets an id: the client's ``X-Request-Id`` when it
  is 1-128 visible ASCII characters, else a new one. It is returned in the
  ``X-Request-Id`` response header and stamped on every log record made while the
  request is handled (``keyautomat.logs``), and the request ends with one line
  on the ``keyautomat.access`` logger: method, route template (never the raw
  path, which may carry a token: ``/sign/{token}``), status and duration.

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
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyautomat import metrics
from keyautomat.domain.text import text_problem
from keyautomat.entrypoints.api.errors import send_error
from keyautomat.logs import REQUEST_ID, REQUEST_ID_HEADER, SERVICE_ACCOUNT_ID, accepted_request_id

log = logging.getLogger(__name__)
access_log = logging.getLogger("keyautomat.access")

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


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def route_of(scope: Scope) -> str:
    """The template of the route that answered (``/v2/automats/{automatId}``), or "-".

    A route of an included router knows only its own part (``/automats/{automatId}``);
    FastAPI keeps the prefix on the inclusion. The prefix is then the request path's
    segments in front of as many as the template has: literal text the router matched
    (no route here takes a ``{name:path}`` parameter, which would spoil the count).
    """
    template = getattr(scope.get("route"), "path", None)
    if not isinstance(template, str):
        return "-"
    segments = scope["path"].split("/")
    prefix = segments[: max(1, len(segments) - template.count("/"))]
    return "/".join(prefix) + template


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
        request_id = accepted_request_id(_header(scope, REQUEST_ID_HEADER))
        tagged = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        request_token = REQUEST_ID.set(request_id)
        account_token = SERVICE_ACCOUNT_ID.set(None)
        began = time.perf_counter()
        status = 0

        async def tagged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), tagged]}
            await send(message)

        try:
            await self._handle(scope, receive, tagged_send)
        finally:
            seconds = time.perf_counter() - began
            route = route_of(scope)
            metrics.request_done(scope["method"], route, status, seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %s %.1f ms", scope["method"], route, status or "-", seconds * 1000
                )
            SERVICE_ACCOUNT_ID.reset(account_token)
            REQUEST_ID.reset(request_token)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
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
