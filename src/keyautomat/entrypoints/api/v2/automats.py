"""Automats (spec endpoints §4; gaps.md D1-D5)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field
from sqlalchemy.orm import Session

from keyautomat.adapters.db import Database, Statements
from keyautomat.entrypoints.api.auth import Caller, caller_of
from keyautomat.entrypoints.api.deps import Services, services_of
from keyautomat.entrypoints.api.schemas import (
    ApiModel,
    NonEmptyStr,
    PageAfter,
    PageLimit,
    Paginated,
    StrictStr,
    absent,
    json_response,
    page_payload,
    read_only,
)
from keyautomat.service_layer import automats
from keyautomat.service_layer.automats import AutomatRows, Location
from keyautomat.service_layer.pagination import PageRequest
from keyautomat.service_layer.principal import Principal

router = APIRouter(prefix="/automats", tags=["automats"])


class AutomatLocation(ApiModel):
    address: str | None
    postal_code: str | None
    postal_office: str | None


class AutomatGroup(ApiModel):
    id: str
    name: str


class AutomatLockerAssignedKey(ApiModel):
    id: str
    name: str = Field(description="The key's name; its id when it has none")


class AutomatLocker(ApiModel):
    locker_index: str
    is_key_inside: bool
    key: AutomatLockerAssignedKey | None


class Automat(ApiModel):
    id: str
    name: str
    location: AutomatLocation
    label: str | None
    groups: list[AutomatGroup] = read_only()
    hw_id: str | None
    timezone: str | None
    installation_pincode: str | None
    lockers: list[AutomatLocker] = read_only()
    lifecycle_state: str | None


def wire(found: AutomatRows) -> list[dict[str, Any]]:
    """Each automat of ``found`` in the ``Automat`` schema, as JSON-ready data: the keys in
    the vendor's order (the model above), built from plain rows."""
    lockers, groups = found.lockers, found.groups
    return [
        {
            "id": automat_id,
            "name": name,
            "location": {"address": address, "postalCode": postal_code, "postalOffice": office},
            "label": label,
            "groups": [{"id": g[1], "name": g[2]} for g in groups.get(automat_id, ())],
            "hwId": hw_id,
            "timezone": timezone,
            "installationPincode": pincode,
            "lockers": [
                {
                    "lockerIndex": str(locker[1]),
                    "isKeyInside": bool(locker[2]),
                    # A key without a name (a mechanical key may have none) is named by its
                    # id: the vendor's type has no null there (docs/api.md).
                    "key": (
                        {"id": locker[3], "name": locker[4] or locker[3]}
                        if locker[3] is not None
                        else None
                    ),
                }
                for locker in lockers.get(automat_id, ())
            ],
            "lifecycleState": state,
        }
        for (
            automat_id,
            name,
            label,
            address,
            postal_code,
            office,
            timezone,
            hw_id,
            pincode,
            state,
        ) in found.automats
    ]


def _one(session: Session, caller: Principal, automat_id: str) -> dict[str, Any]:
    """The automat as the API answers it, read in the session's transaction."""
    return wire(automats.automat_rows(Statements.of(session), caller, automat_id))[0]


class AutomatLocationDto(ApiModel):
    address: StrictStr | None = absent()
    postal_code: StrictStr | None = absent()
    postal_office: StrictStr | None = absent()


class UpdateAutomatDto(ApiModel):
    name: NonEmptyStr | None = absent()
    label: StrictStr | None = absent()
    groups: list[StrictStr] | None = absent("Device group ids: the whole membership")
    timezone: NonEmptyStr | None = absent("An IANA time zone, e.g. Europe/Helsinki")
    location: AutomatLocationDto | None = absent("The sub-fields given are changed")


class InstallAutomatDto(ApiModel):
    name: NonEmptyStr
    organization_unit_id: StrictStr | None = absent("Default: the caller's unit")
    label: StrictStr | None = absent()
    group_id: StrictStr | None = absent("A device group the automat joins")
    address: StrictStr
    postal_code: StrictStr
    postal_office: StrictStr
    timezone: NonEmptyStr
    product: Literal["key20", "key30"]


# The furthest page of the automat list read on the event loop (Database.read); one further
# on goes to the database thread.
LOOP_READ_MAX_OFFSET = 1_000


async def automat_page(
    db: Database, caller: Principal, after: str | None, limit: str | None
) -> Response:
    """``GET /v2/automats`` as answered by its route and by the hot-read path (hot_reads.py):
    the query's two parameters as they arrived (text or None), checked here."""
    page = PageRequest.parse(after, limit)
    found, listed = await db.read(
        lambda r: automats.automat_page_rows(r, caller, page),
        # Skipping costs a row each, and the loop can do nothing else meanwhile.
        small=page.offset <= LOOP_READ_MAX_OFFSET,
    )
    return json_response(page_payload(listed, wire(found)))


async def one_automat(db: Database, caller: Principal, automat_id: str) -> Response:
    """``GET /v2/automats/{id}`` as answered by its route and by the hot-read path."""
    found = await db.read(lambda r: automats.automat_rows(r, caller, automat_id))
    return json_response(wire(found)[0])


@router.get("", operation_id="AutomatsController_getAutomats", response_model=Paginated[Automat])
async def list_automats(
    request: Request, after: PageAfter = None, limit: PageLimit = None
) -> Response:
    # A hot read: the caller and the container straight from the request (auth.caller_of).
    # Served by hot_reads.py before routing; this route answers what that path passes on.
    return await automat_page(services_of(request).db, caller_of(request), after, limit)


@router.post(
    "/install",
    status_code=201,
    operation_id="AutomatsController_installAutomat",
    response_model=Automat,
)
async def install_automat(body: InstallAutomatDto, caller: Caller, services: Services) -> Response:
    def work(session: Session) -> dict[str, Any]:
        automat = automats.install_automat(
            session,
            caller,
            name=body.name,
            organization_unit_id=body.organization_unit_id,
            label=body.label,
            group_id=body.group_id,
            location=Location(body.address, body.postal_code, body.postal_office),
            timezone=body.timezone,
            product=body.product,
            now=services.clock.now(),
        )
        return _one(session, caller, automat.id)

    return json_response(await services.db.run(work), 201)


@router.get("/{id}", operation_id="AutomatsController_getAutomatById", response_model=Automat)
async def get_automat(id: str, request: Request) -> Response:  # noqa: A002
    return await one_automat(services_of(request).db, caller_of(request), id)


@router.patch("/{id}", operation_id="AutomatsController_updateAutomat", response_model=Automat)
async def update_automat(
    id: str,  # noqa: A002
    body: UpdateAutomatDto,
    caller: Caller,
    services: Services,
) -> Response:
    location = None
    if body.location is not None:
        location = Location(
            body.location.address, body.location.postal_code, body.location.postal_office
        )

    def work(session: Session) -> dict[str, Any]:
        automats.update_automat(
            session,
            caller,
            id,
            name=body.name,
            label=body.label,
            group_ids=body.groups,
            timezone=body.timezone,
            location=location,
        )
        return _one(session, caller, id)

    return json_response(await services.db.run(work))


@router.post(
    "/{id}/uninstall",
    status_code=204,
    operation_id="AutomatsController_uninstallAutomat",
    response_class=Response,
)
async def uninstall_automat(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    await services.db.run(lambda s: automats.uninstall_automat(s, caller, id))
    return Response(status_code=204)


@router.post(
    "/{id}/replace", operation_id="AutomatsController_replaceAutomat", response_model=Automat
)
async def replace_automat(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    now = services.clock.now()

    def work(session: Session) -> dict[str, Any]:
        automats.replace_automat(session, caller, id, now)
        return _one(session, caller, id)

    return json_response(await services.db.run(work))
