"""Every error leaves the API in one shape (spec/gaps.md A1), mapped here and nowhere else.

(Unexpected exceptions are answered 500 by the edge middleware, ``edge.py``, through
``send_error`` below, so that the connection stays usable.)

``{"statusCode": 400, "message": "<text>" | ["<text>", ...], "error": "Bad Request"}``;
``message`` is a list for field-validation failures and names each offending field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError as DatabaseDataError
from sqlalchemy.exc import DBAPIError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Send

from keyautomat.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
)
from keyautomat.entrypoints.api.schemas import SafeJSONResponse
from keyautomat.service_layer.iloq import IloqError

log = logging.getLogger(__name__)

STATUS_OF: dict[type[DomainError], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
}


def error_body(status: int, message: str | list[str]) -> dict[str, Any]:
    return {"statusCode": status, "message": message, "error": HTTPStatus(status).phrase}


def error_response(
    status: int, message: str | list[str], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return SafeJSONResponse(error_body(status, message), status_code=status, headers=headers)


async def send_error(
    send: Send,
    status: int,
    message: str | list[str],
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """The one shape sent straight from an ASGI middleware, where no response class runs."""
    data = json.dumps(error_body(status, message), separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


INVALID_DATA = "Request contains a value the database cannot store"


def is_invalid_data(exc: StatementError) -> bool:
    """A statement refused for the data it carried, not for a fault of the server.

    PostgreSQL reports NUL in text and out-of-range numbers as a DataError; values
    the driver cannot even bind (an unencodable string, a number too large for the
    column) arrive as a StatementError around a UnicodeEncodeError or an
    OverflowError. Any other ValueError at bind time is a bug of the server's own
    (a naive datetime for a UTC column) and stays a 500.
    """
    if isinstance(exc, DatabaseDataError):
        return True
    return not isinstance(exc, DBAPIError) and isinstance(
        exc.orig, UnicodeEncodeError | OverflowError
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the request's path answers (Starlette names one route's)."""
    base = {k: v for k, v in request.scope.items() if k in {"type", "path", "root_path", "headers"}}
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**base, "method": method})[0] is Match.FULL for route in routes)
    ]


def _field_path(loc: Sequence[int | str]) -> str:
    parts = list(loc)
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def describe_validation_errors(errors: Sequence[Any]) -> list[str]:
    messages: list[str] = []
    for err in errors:
        field = _field_path(err.get("loc", ()))
        kind = err.get("type", "")
        if kind == "missing":
            messages.append(f"{field}: is required")
        elif kind == "json_invalid":
            messages.append("body: is not valid JSON")
        else:
            messages.append(f"{field}: {err.get('msg', 'is invalid')}")
    return messages


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> JSONResponse:
        status = next((code for kind, code in STATUS_OF.items() if isinstance(exc, kind)), 400)
        message: str | list[str] = [exc.message] if isinstance(exc, InvalidInput) else exc.message
        return error_response(status, message)

    @app.exception_handler(IloqError)
    async def _iloq(_request: Request, exc: IloqError) -> JSONResponse:
        # The customer's iLOQ system failed us: a gateway error, never a 500. Transient
        # failures ask the client to retry later; permanent ones need the system fixed.
        log.warning("iLOQ call failed: %s", exc)
        if exc.permanent:
            return error_response(502, f"iLOQ system refused the request: {exc}")
        return error_response(503, "iLOQ system is not reachable; try again later")

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = "Cannot find the requested resource"
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc.status_code, detail, headers=headers)

    @app.exception_handler(StatementError)
    async def _database(request: Request, exc: StatementError) -> JSONResponse:
        # A backstop: the edge refuses bad text and numbers before they reach a statement.
        if is_invalid_data(exc):
            # The kind of refusal only: a driver's message may quote the refused value.
            cause = exc.orig
            kind = getattr(cause, "sqlstate", None) or type(cause).__name__
            log.warning("invalid data on %s %s: %s", request.method, request.url.path, kind)
            return error_response(400, [INVALID_DATA])
        raise exc

    # Any other exception is answered 500 by the edge middleware (edge.py), which
    # also keeps the connection usable.
