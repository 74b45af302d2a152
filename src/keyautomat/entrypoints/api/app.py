"""The FastAPI application: V2 under /v2, signed by the middleware, errors in one shape."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from keyautomat import metrics
from keyautomat.adapters.db import is_busy
from keyautomat.adapters.request_state import SharedLedger
from keyautomat.admission import LatencyLimit, Slots
from keyautomat.bootstrap import Container
from keyautomat.contracts.iloq import routes as iloq_contracts
from keyautomat.contracts.mechanical import routes as mechanical_contracts
from keyautomat.entrypoints.api import admin, identify, sign
from keyautomat.entrypoints.api.account_cache import AccountCache
from keyautomat.entrypoints.api.admission import AdmissionMiddleware
from keyautomat.entrypoints.api.auth import (
    RateLimiter,
    RequestLedger,
    SignatureVerifier,
    SignedRequestMiddleware,
)
from keyautomat.entrypoints.api.docs_page import docs_page, install_docs_assets
from keyautomat.entrypoints.api.edge import EdgeMiddleware
from keyautomat.entrypoints.api.errors import install_error_handlers
from keyautomat.entrypoints.api.hot_reads import HotReadsMiddleware
from keyautomat.entrypoints.api.idempotency import IdempotencyMiddleware
from keyautomat.entrypoints.api.metrics_endpoint import add_metrics
from keyautomat.entrypoints.api.openapi import (
    ADMIN_PREFIX,
    V2_PREFIX,
    admin_document,
    v2_document,
)
from keyautomat.entrypoints.api.readiness import add_probes
from keyautomat.entrypoints.api.schemas import SafeJSONResponse
from keyautomat.entrypoints.api.v2 import (
    automats,
    devices,
    groups,
    iloq,
    mechanical_keys,
    organization,
    root,
)
from keyautomat.entrypoints.console import MAX_FORM as CONSOLE_MAX_FORM
from keyautomat.entrypoints.console import PREFIX as CONSOLE_PREFIX
from keyautomat.entrypoints.console import build_console
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer.accounts import (
    ACCOUNTS_VERSION,
    AccountKey,
    accounts_version,
    load_account_versioned,
)
from keyautomat.service_layer.idempotency import IdempotencyStore

API_PREFIX = V2_PREFIX
OPENAPI_URL = f"{API_PREFIX}/openapi.json"
DOCS_URL = f"{API_PREFIX}/docs"
ADMIN_OPENAPI_URL = f"{ADMIN_PREFIX}/openapi.json"
ADMIN_DOCS_URL = f"{ADMIN_PREFIX}/docs"

# Schemas of the V2 document that no route names: bodies parsed by hand in their routes
# (schemas.documented_body), and the vendor's schemas listed beside the ones in use.
V2_MODELS = (
    *iloq_contracts.REQUEST_MODELS,
    *mechanical_contracts.REQUEST_MODELS,
    *mechanical_keys.DOCUMENTED,
)


def _mount_console(app: FastAPI, container: Container) -> None:
    """The web console (docs/console.md): an application of its own under ``/console/``, in
    no OpenAPI document; ``/`` leads there."""
    app.mount(CONSOLE_PREFIX, build_console(container))

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(f"{CONSOLE_PREFIX}/", status_code=307)


async def _close_clients(container: Container) -> None:
    """The outbound HTTP clients the API process keeps open."""
    await container.webhooks.aclose()
    await container.oidc.aclose()


def create_app(  # noqa: PLR0915 - the wiring of every part, in order
    container: Container,
    *,
    run_worker: bool = False,
    run_gateway: bool = True,
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    hot_reads: bool = True,
) -> FastAPI:
    """The API and, for its lifetime, the device gateway.

    With ``run_worker`` the outbox worker runs in-process (``keyautomat serve``);
    without ``run_gateway`` the device gateway runs in another process
    (``keyautomat gateway``) and device commands are routed to it;
    ``background`` coroutines (e.g. the simulated automats of ``serve --demo``)
    run next to them. Without ``hot_reads`` the three hottest reads go through FastAPI's
    routing like every other request (hot_reads.py; the tests compare the two).
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_gateway:
            await container.devices.start()
        stop = asyncio.Event()
        workers: list[asyncio.Task[None]] = []
        if run_worker:
            worker = OutboxWorker(container.db, container.dispatcher, container.clock)
            workers.append(asyncio.create_task(worker.run(stop), name="outbox-worker"))
        tasks = [asyncio.create_task(run()) for run in background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
            await container.commands.close()
            await container.simulators.close()
            if run_gateway:
                await container.devices.stop()
            await _close_clients(container)

    app = FastAPI(
        title="keyautomat — LivionKey API V2",
        version="2.0.0",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.container = container
    install_error_handlers(app)
    for module in (
        root,
        organization,
        automats,
        groups,
        devices,
        iloq,
        iloq_contracts,
        mechanical_keys,
        mechanical_contracts,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(admin.build_router())
    app.include_router(sign.router)
    app.include_router(identify.router)

    documents = {
        OPENAPI_URL: lambda: v2_document(app, V2_MODELS),
        ADMIN_OPENAPI_URL: lambda: admin_document(app),
    }
    built: dict[str, dict[str, Any]] = {}

    def document(url: str) -> dict[str, Any]:
        if url not in built:
            built[url] = documents[url]()
        return built[url]

    for url, docs in ((OPENAPI_URL, DOCS_URL), (ADMIN_OPENAPI_URL, ADMIN_DOCS_URL)):
        _serve_document(app, url, docs, document)
    install_docs_assets(app)  # Swagger UI and our signing script, no CDN (docs_page.py)
    app.openapi = lambda: document(OPENAPI_URL)  # type: ignore[method-assign]

    _mount_console(app, container)

    settings = container.settings

    add_probes(app, container, run_gateway=run_gateway)
    add_metrics(app, container)

    accounts = _account_cache(container)

    def clock_ms() -> int:
        return int(container.clock.now().timestamp() * 1000)

    ledger: RequestLedger | None = None
    if not container.db.is_sqlite:
        # Several API processes may serve one PostgreSQL database: a signature accepted
        # by one is a replay to all, and an account's rate counts across all of them.
        ledger = SharedLedger(
            container.db,
            ttl_ms=2 * settings.signature_window_ms,
            rate=settings.rate_limit_per_second,
            burst=settings.rate_limit_burst,
        )
    verifier = SignatureVerifier(
        # On PostgreSQL the ledger reads the counter of account changes in its transaction.
        lookup=accounts,
        window_ms=settings.signature_window_ms,
        public_bases=settings.public_bases,
        trust_forwarded=settings.trust_forwarded_headers,
        clock_ms=clock_ms,
        rate_limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        ledger=ledger,
    )
    if hot_reads:
        # Innermost of ours: only a request every middleware above admitted is answered here.
        app.add_middleware(
            HotReadsMiddleware, db=container.db, error_handlers=app.exception_handlers
        )
    # Added before the signing middleware, so it runs inside it: after the signature holds,
    # on the same body.
    app.add_middleware(
        IdempotencyMiddleware,
        store=IdempotencyStore(
            container.db,
            container.secrets,
            container.clock,
            ttl=timedelta(hours=settings.idempotency_ttl_hours),
            claim_bound=timedelta(seconds=settings.idempotency_claim_seconds),
        ),
    )
    app.add_middleware(
        SignedRequestMiddleware,
        verifier=verifier,
        public_paths=frozenset({OPENAPI_URL, DOCS_URL, ADMIN_OPENAPI_URL, ADMIN_DOCS_URL}),
    )
    app.state.verifier = verifier
    app.state.accounts = accounts
    # Just inside the edge: a request refused for overload costs no body read, no lookup
    # and no signature check, yet has its request id and access line (admission.py).
    limit = settings.requests_in_flight_limit
    app.state.admission = None
    if limit > 0:
        target = settings.admission_target_ms
        slots = Slots(
            limit,
            max_waiting=limit,
            max_wait=settings.admission_wait_ms / 1000,
            on_change=metrics.requests_in_flight,
            adapt=LatencyLimit(ceiling=limit, target=target / 1000) if target else None,
            on_limit=metrics.requests_in_flight_limit,
        )
        app.add_middleware(AdmissionMiddleware, slots=slots)
        app.state.admission = slots
    # Added last, so it wraps everything above: URL text, body limits, the 500 (edge.py).
    app.add_middleware(
        EdgeMiddleware,
        body_limits={f"{sign.PREFIX}/": sign.MAX_FORM, f"{CONSOLE_PREFIX}/": CONSOLE_MAX_FORM},
    )

    return app


def _account_cache(container: Container) -> AccountCache:
    """The service accounts of signed requests, kept while the counter of account changes
    stands still (account_cache.py). On SQLite the counter is read on every request right
    on the loop; on PostgreSQL the shared ledger reads it in its transaction."""
    db = container.db

    async def load(account_id: str) -> tuple[AccountKey | None, int]:
        return await db.run(lambda s: load_account_versioned(s, account_id))

    if not db.is_sqlite:
        return AccountCache(load)
    reader = db.loop_reader
    if reader is None:
        # An in-memory database: no second connection can see it.
        return AccountCache(load, lambda: db.run(accounts_version))
    query = str(ACCOUNTS_VERSION.compile(compile_kwargs={"literal_binds": True}))

    async def current_version() -> int:
        try:
            return int(reader.scalar(query))
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            return await db.run(accounts_version)

    return AccountCache(load, current_version)


def _serve_document(
    app: FastAPI, url: str, docs_url: str, document: Callable[[str], dict[str, Any]]
) -> None:
    """``url`` answers the document, ``docs_url`` the interactive docs of it (docs_page.py);
    no signature."""

    @app.get(url, include_in_schema=False)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(document(url))

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return docs_page(f"{app.title} - docs", url)
