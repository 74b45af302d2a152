"""The three hottest signed reads answered before FastAPI's routing (issue #17).

``GET /v2/``, ``GET /v2/automats`` and ``GET /v2/automats/{id}`` are most of what an
integration polls. Through FastAPI each pays the router (every included router is
asked in turn), the request handler's parameter machinery (even with no dependency),
its exit stack and the exception middleware: about half of a signed ``GET /v2/``.

This pure ASGI layer sits just inside the signing and idempotency middlewares, so the
edge, admission control, the signature and the idempotency check run exactly as for
any request. It recognises only the plainest form of each read (:func:`hot_read`) and
calls the very functions the routes call (``root.smoke_test``,
``automats.automat_page``, ``automats.one_automat``): the parameter checks, the scope
check and the bytes on the wire are written once, there. Anything else (HEAD, a
trailing slash, an escaped or non-ASCII path, a ``root_path``, a query the route would
read differently) is passed on to FastAPI untouched. The routes stay declared, so the
OpenAPI document and every request this layer passes on are as before.

An error the read raises is answered by the application's own exception handler for
it (errors.py), looked up as Starlette's exception middleware looks it up; one with no
handler propagates to the edge, which answers 500 as it does for any route.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from keyautomat.adapters.db import Database
from keyautomat.entrypoints.api.openapi import V2_PREFIX
from keyautomat.entrypoints.api.v2 import automats, root
from keyautomat.service_layer.principal import Principal

ROOT_PATH = f"{V2_PREFIX}/"
AUTOMATS_PATH = f"{V2_PREFIX}{automats.router.prefix}"
ONE_AUTOMAT_PREFIX = f"{AUTOMATS_PATH}/"
PAGE_PARAMETERS = frozenset({"after", "limit"})

Kind = Literal["root", "page", "one"]
ErrorHandler = Callable[[Request, Any], Response | Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HotRead:
    """A request this layer answers: which read, and its arguments as the route gets them."""

    kind: Kind
    automat_id: str = ""
    after: str | None = None
    limit: str | None = None


def hot_read(scope: Scope) -> HotRead | None:
    """The read ``scope`` asks for when it is one of the three in its plainest form, else
    None (FastAPI answers it).

    Plainest: method ``GET`` (HEAD and the rest are FastAPI's to answer or refuse), no
    ``root_path``, a path with no escape and nothing the router would match
    differently, a query only where the route reads one (the list: ``after`` and
    ``limit``, each at most once, parsed by the same ``QueryParams`` FastAPI uses).
    """
    if scope["method"] != "GET" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    raw_path = scope.get("raw_path")
    if raw_path is not None and raw_path != path.encode():
        # Escaped (%2F, %20, ...) or non-ASCII: the router matches the decoded path, which
        # this layer could too, but there is nothing to gain from serving them here.
        return None
    query: bytes = scope.get("query_string", b"")
    if path == AUTOMATS_PATH:
        if not query:
            return HotRead("page")
        params = QueryParams(query)
        names = [name for name, _ in params.multi_items()]
        if len(names) != len(set(names)) or not PAGE_PARAMETERS.issuperset(names):
            return None
        return HotRead("page", after=params.get("after"), limit=params.get("limit"))
    if query:
        return None
    if path == ROOT_PATH:
        return HotRead("root")
    if path.startswith(ONE_AUTOMAT_PREFIX):
        automat_id = path[len(ONE_AUTOMAT_PREFIX) :]
        # The route's ``{id}`` is one non-empty segment (Starlette's ``[^/]+``).
        if automat_id and "/" not in automat_id:
            return HotRead("one", automat_id=automat_id)
    return None


def _route(router_routes: list[BaseRoute], endpoint: Callable[..., Any]) -> APIRoute:
    """The declared route of ``endpoint``: what FastAPI leaves in ``scope["route"]``, from
    which the edge names the request in its access line and metrics (``edge.route_of``)."""
    for route in router_routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            return route
    raise LookupError(f"no route for {endpoint.__qualname__}")


ROUTES: dict[Kind, APIRoute] = {
    "root": _route(root.router.routes, root.root),
    "page": _route(automats.router.routes, automats.list_automats),
    "one": _route(automats.router.routes, automats.get_automat),
}


def handler_for(handlers: Mapping[Any, ErrorHandler], exc: Exception) -> ErrorHandler | None:
    """The handler of ``exc``'s nearest class that has one, as Starlette's exception
    middleware looks it up (``Exception`` itself belongs to the outer error middleware)."""
    for kind in type(exc).__mro__:
        if kind is not Exception and kind in handlers:
            return handlers[kind]
    return None


class HotReadsMiddleware:
    def __init__(
        self, app: ASGIApp, *, db: Database, error_handlers: Mapping[Any, ErrorHandler]
    ) -> None:
        self.app = app
        self.db = db
        # The application's own dict, filled before the first request (errors.py).
        self.error_handlers = error_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = hot_read(scope) if scope["type"] == "http" else None
        caller: Principal | None = scope.get("state", {}).get("principal")
        if read is None or caller is None:
            # No principal: not behind the signing middleware (it admitted nothing).
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTES[read.kind]
        try:
            response = await self._answer(read, caller)
        except Exception as exc:
            handler = handler_for(self.error_handlers, exc)
            if handler is None:
                raise
            handled = handler(Request(scope, receive, send), exc)
            # Every handler of ours is async; Starlette would run a plain one in a thread.
            response = await handled if inspect.isawaitable(handled) else handled
        await response(scope, receive, send)

    async def _answer(self, read: HotRead, caller: Principal) -> Response:
        if read.kind == "root":
            return root.smoke_test(caller)
        if read.kind == "page":
            return await automats.automat_page(self.db, caller, read.after, read.limit)
        return await automats.one_automat(self.db, caller, read.automat_id)
