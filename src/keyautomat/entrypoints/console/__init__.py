"""The web console under ``/console/``: server-rendered pages for people (docs/console.md).

A FastAPI application of its own, mounted by the API application, so that it has
its own error pages (HTML, not the API's JSON shape) and stays out of every
OpenAPI document. Every asset it uses is a file of this package.
"""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from keyautomat.adapters.passwords import Passwords
from keyautomat.bootstrap import Container
from keyautomat.domain.console import SessionPolicy
from keyautomat.domain.errors import DomainError
from keyautomat.entrypoints.api.errors import STATUS_OF, describe_validation_errors
from keyautomat.entrypoints.console import (
    account,
    automats,
    contracts,
    dashboard,
    groups,
    keypad,
    keys,
    notifications,
    organization,
    webhooks,
)
from keyautomat.entrypoints.console.gate import LoginGate
from keyautomat.entrypoints.console.strings import t
from keyautomat.entrypoints.console.web import (
    MAX_FORM,
    PREFIX,
    STATIC_DIR,
    Console,
    ConsoleHeaders,
    CsrfRefused,
    SignInRequired,
    build_templates,
    render,
)
from keyautomat.service_layer.iloq import IloqError

__all__ = ["MAX_FORM", "PREFIX", "build_console"]


def build_console(container: Container, *, passwords: Passwords | None = None) -> FastAPI:
    """The console application for ``container``; ``passwords`` is for tests (cheap hashes)."""
    settings = container.settings
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.console = Console(
        container=container,
        gate=LoginGate(settings, passwords or Passwords()),
        policy=SessionPolicy(
            idle=timedelta(minutes=settings.console_session_idle_minutes),
            absolute=timedelta(hours=settings.console_session_max_hours),
        ),
        templates=build_templates(),
    )
    for module in (
        account,
        dashboard,
        automats,
        keypad,
        contracts,
        keys,
        groups,
        webhooks,
        organization,
        notifications,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_error_pages(app)
    app.add_middleware(ConsoleHeaders)
    return app


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status=status, status_code=status, message=message)


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _exc: SignInRequired) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        location = f"{PREFIX}/login"
        # Back to the page after signing in; a form posted with an ended session is not
        # sent again (its page is shown anew instead).
        if request.method == "GET" and target != f"{PREFIX}/":
            location += "?" + urlencode({"next": target})
        return RedirectResponse(location, status_code=303)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _exc: CsrfRefused) -> HTMLResponse:
        return error_page(request, 403, t("error.403.csrf"))

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> HTMLResponse:
        status = next((code for kind, code in STATUS_OF.items() if isinstance(exc, kind)), 400)
        if status == 400:
            return error_page(request, 400, t("error.400", detail=exc.message))
        if status in (403, 404):
            return error_page(request, status, t(f"error.{status}"))
        return error_page(request, status, exc.message)

    @app.exception_handler(IloqError)
    async def _iloq(request: Request, exc: IloqError) -> HTMLResponse:
        if exc.permanent:
            return error_page(request, 502, t("error.502", detail=str(exc)))
        return error_page(request, 503, t("error.503"))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> HTMLResponse:
        detail = "; ".join(describe_validation_errors(exc.errors()))
        return error_page(request, 400, t("error.400", detail=detail))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        key = f"error.{exc.status_code}"
        try:
            message = t(key)
        except KeyError:
            message = HTTPStatus(exc.status_code).phrase
        return error_page(request, exc.status_code, message)
