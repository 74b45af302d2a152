"""Automats: the list, one automat (status, lockers, alarms, events), and installing,
editing, replacing and uninstalling one. Every change calls the use case the API's
route calls (``service_layer/automats.py``, ``devices.py``): the rules are theirs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from keyautomat.domain.errors import InvalidInput
from keyautomat.entrypoints.console.web import (
    PREFIX,
    SignedIn,
    Submission,
    Submitted,
    console_of,
    field_errors,
    fragment,
    notice_text,
    render,
    see_other,
)
from keyautomat.service_layer import automats, console_views, devices, virtual_keypad
from keyautomat.service_layer.automats import AutomatView, Location
from keyautomat.service_layer.console_views import EventView, Holder
from keyautomat.service_layer.devices import AlarmView, DeviceStatus
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal

router = APIRouter(prefix="/automats", include_in_schema=False)

PAGE_SIZE = 25
NOTICES = (
    "automat.installed",
    "automat.replaced",
    "automat.uninstalled",
    "automat.saved",
    "automat.acknowledged",
)


@router.get("")
async def automat_list(request: Request, me: SignedIn) -> HTMLResponse:
    page = PageRequest.parse(
        request.query_params.get("after"),
        request.query_params.get("limit"),
        default_limit=PAGE_SIZE,
    )
    container = console_of(request).container
    now, offline_after = container.clock.now(), container.settings.device_offline_after_seconds

    def work(session: Session) -> tuple[Page[AutomatView], set[str]]:
        found = automats.list_automats(session, me.principal, page)
        ids = [v.id for v in found.items]
        return found, console_views.online_automats(session, ids, now, offline_after)

    found, online = await container.db.run(work)
    return render(
        request,
        "automats.html",
        section="automats",
        page=found,
        request_page=page,
        online=online,
    )


# --- installing -------------------------------------------------------------------------

INSTALL_FIELDS = (
    "name",
    "label",
    "organization_unit_id",
    "group_id",
    "address",
    "postal_code",
    "postal_office",
    "timezone",
    "product",
)


async def _install_form(
    request: Request,
    principal: Principal,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    principal.require_admin()
    container = console_of(request).container
    units, groups = await container.db.run(lambda s: console_views.install_choices(s, principal))
    defaults = {"timezone": "Europe/Helsinki", "product": "key20"}
    return render(
        request,
        "automat_install.html",
        status=status,
        section="automats",
        units=units,
        groups=groups,
        values={**defaults, **(values or {})},
        errors=errors or {},
    )


@router.get("/new")
async def install_page(request: Request, me: SignedIn) -> HTMLResponse:
    return await _install_form(request, me.principal)


@router.post("/new")
async def install(request: Request, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    now = container.clock.now()
    try:
        location = _location(submitted, required=True)
        name = submitted.required("name")
        product = submitted.required("product")
        if product not in ("key20", "key30"):
            raise InvalidInput("product", "must be key20 or key30")
        timezone = submitted.required("timezone", max_length=64)

        def work(session: Session) -> str:
            return automats.install_automat(
                session,
                principal,
                name=name,
                organization_unit_id=submitted.text("organization_unit_id", max_length=64),
                label=submitted.text("label"),
                group_id=submitted.text("group_id", max_length=64),
                location=location,
                timezone=timezone,
                product=product,
                now=now,
            ).id

        automat_id = await container.db.run(work)
    except InvalidInput as exc:
        values = {k: submitted.form.get(k, "") for k in INSTALL_FIELDS}
        return await _install_form(
            request, principal, values=values, errors=_errors(exc), status=400
        )
    return see_other(f"{PREFIX}/automats/{automat_id}", notice="automat.installed")


def _location(submitted: Submission, *, required: bool) -> Location:
    return Location(
        submitted.text("address", required=required),
        submitted.text("postal_code", required=required, max_length=32),
        submitted.text("postal_office", required=required),
    )


def _errors(exc: InvalidInput) -> dict[str, str]:
    """Field errors of a form whose names are the use case's (camelCase) or the form's."""
    names = {"organizationUnitId": "organization_unit_id", "groupId": "group_id"}
    return {names.get(k, k): v for k, v in field_errors(exc).items()}


# --- one automat ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AutomatPage:
    automat: AutomatView
    status: DeviceStatus
    alarms: list[AlarmView]
    events: list[EventView]
    holders: dict[int, Holder]
    simulated: bool  # a simulator stands for it: it has a virtual keypad (keypad.py)


async def _automat_page(request: Request, principal: Principal, automat_id: str) -> AutomatPage:
    container = console_of(request).container
    now, offline_after = container.clock.now(), container.settings.device_offline_after_seconds

    def work(session: Session) -> AutomatPage:
        return AutomatPage(
            automat=automats.view_automat(session, principal, automat_id),
            status=devices.device_status(session, principal, automat_id, now, offline_after),
            alarms=devices.list_alarms(session, principal, automat_id, limit=20),
            events=console_views.recent_events(session, principal, automat_id),
            holders=console_views.locker_holders(session, principal, automat_id, now),
            simulated=virtual_keypad.is_simulated(session, principal, automat_id),
        )

    return await container.db.run(work)


@router.get("/{automat_id}")
async def automat_detail(request: Request, automat_id: str, me: SignedIn) -> HTMLResponse:
    page = await _automat_page(request, me.principal, automat_id)
    notice = notice_text(request.query_params.get("notice"), NOTICES)
    return render(
        request, "automat.html", section="automats", p=page, a=page.automat, notice=notice
    )


@router.get("/{automat_id}/live")
async def automat_live(request: Request, automat_id: str, me: SignedIn) -> HTMLResponse:
    page = await _automat_page(request, me.principal, automat_id)
    return fragment(request, "_automat_live.html", p=page, a=page.automat)


# --- changing one -----------------------------------------------------------------------

EDIT_FIELDS = (
    "name",
    "label",
    "address",
    "postal_code",
    "postal_office",
    "timezone",
    "simulated",
)


@router.get("/{automat_id}/edit")
async def edit_page(request: Request, automat_id: str, me: SignedIn) -> HTMLResponse:
    me.principal.require_admin()
    container = console_of(request).container

    def work(session: Session) -> tuple[AutomatView, bool]:
        return (
            automats.view_automat(session, me.principal, automat_id),
            virtual_keypad.is_simulated(session, me.principal, automat_id),
        )

    view, simulated = await container.db.run(work)
    values = {
        "name": view.name,
        "label": view.label or "",
        "address": view.address or "",
        "postal_code": view.postal_code or "",
        "postal_office": view.postal_office or "",
        "timezone": view.timezone,
        "simulated": "on" if simulated else "",
    }
    return _edit_form(request, view, values, {})


def _edit_form(
    request: Request,
    view: AutomatView,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "automat_edit.html",
        status=status,
        section="automats",
        a=view,
        values=values,
        errors=errors,
    )


@router.post("/{automat_id}/edit")
async def edit(request: Request, automat_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    try:
        changes: dict[str, Any] = {
            "name": submitted.required("name"),
            # An emptied label is cleared; the API's PATCH does the same with "".
            "label": submitted.text("label") or "",
            "timezone": submitted.required("timezone", max_length=64),
            "location": _location(submitted, required=False),
        }
        simulated = submitted.form.get("simulated") == "on"

        def work(session: Session) -> None:
            automats.update_automat(session, principal, automat_id, **changes)
            virtual_keypad.set_simulated(session, principal, automat_id, simulated)

        await container.db.run(work)
    except InvalidInput as exc:
        view = await container.db.run(lambda s: automats.view_automat(s, principal, automat_id))
        values = {k: submitted.form.get(k, "") for k in EDIT_FIELDS}
        return _edit_form(request, view, values, _errors(exc), status=400)
    return see_other(f"{PREFIX}/automats/{automat_id}", notice="automat.saved")


@router.post("/{automat_id}/replace")
async def replace(request: Request, automat_id: str, submitted: Submitted) -> Response:
    container = console_of(request).container
    now = container.clock.now()
    principal = submitted.identity.principal
    await container.db.run(lambda s: automats.replace_automat(s, principal, automat_id, now))
    return see_other(f"{PREFIX}/automats/{automat_id}", notice="automat.replaced")


@router.post("/{automat_id}/uninstall")
async def uninstall(request: Request, automat_id: str, submitted: Submitted) -> Response:
    container = console_of(request).container
    principal = submitted.identity.principal
    await container.db.run(lambda s: automats.uninstall_automat(s, principal, automat_id))
    return see_other(f"{PREFIX}/automats/{automat_id}", notice="automat.uninstalled")


@router.post("/{automat_id}/alarms/{alarm_id}/acknowledge")
async def acknowledge(
    request: Request, automat_id: str, alarm_id: str, submitted: Submitted
) -> Response:
    container = console_of(request).container
    now = container.clock.now()
    principal = submitted.identity.principal
    await container.db.run(
        lambda s: devices.acknowledge_alarm(s, principal, automat_id, alarm_id, now)
    )
    return see_other(f"{PREFIX}/automats/{automat_id}", notice="automat.acknowledged")
