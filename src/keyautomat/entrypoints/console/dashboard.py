"""The dashboard, ``/console/``: the state of everything the user sees, at a glance."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from keyautomat.entrypoints.console.web import SignedIn, console_of, fragment, render
from keyautomat.service_layer import console_views
from keyautomat.service_layer.console_views import Dashboard

router = APIRouter(include_in_schema=False)


async def _figures(request: Request, me: SignedIn) -> Dashboard:
    container = console_of(request).container
    now = container.clock.now()
    offline_after = container.settings.device_offline_after_seconds
    return await container.db.run(
        lambda s: console_views.dashboard(s, me.principal, now, offline_after)
    )


@router.get("/")
async def dashboard(request: Request, me: SignedIn) -> HTMLResponse:
    figures = await _figures(request, me)
    return render(request, "dashboard.html", section="dashboard", d=figures)


@router.get("/live/dashboard")
async def dashboard_figures(request: Request, me: SignedIn) -> HTMLResponse:
    return fragment(request, "_dashboard_figures.html", d=await _figures(request, me))
