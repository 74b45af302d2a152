"""Automats (spec endpoints §4; gaps.md D1-D5)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import Field
from sqlalchemy.orm import Session

from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
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
from keyautomat.service_layer.automats import AutomatView, Location
from keyautomat.service_layer.pagination import PageRequest

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


def wire(view: AutomatView) -> dict[str, Any]:
    """The ``Automat`` schema as JSON-ready data."""
    return {
        "id": view.id,
        "name": view.name,
        "location": {
            "address": view.address,
            "postalCode": view.postal_code,
            "postalOffice": view.postal_office,
        },
        "label": view.label,
        "groups": [{"id": gid, "name": name} for gid, name in view.groups],
        "hwId": view.hw_id,
        "timezone": view.timezone,
        "installationPincode": view.installation_pincode,
        "lockers": [
            {
                "lockerIndex": str(locker.locker_index),
                "isKeyInside": locker.is_key_inside,
                # A key without a name (a mechanical key may have none) is named by its id:
                # the vendor's type has no null there (docs/api.md).
                "key": (
                    {"id": locker.key_id, "name": locker.key_name or locker.key_id}
                    if locker.key_id is not None
                    else None
                ),
            }
            for locker in view.lockers
        ],
        "lifecycleState": view.lifecycle_state,
    }


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


@router.get("", operation_id="AutomatsController_getAutomats", response_model=Paginated[Automat])
async def list_automats(
    caller: Caller, services: Services, after: PageAfter = None, limit: PageLimit = None
) -> Response:
    page = PageRequest.parse(after, limit)

    def work(session: Session) -> dict[str, Any]:
        result = automats.list_automats(session, caller, page)
        return page_payload(result, [wire(v) for v in result.items])

    return json_response(await services.db.run(work))


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
        return wire(automats.view_automat(session, caller, automat.id))

    return json_response(await services.db.run(work), 201)


@router.get("/{id}", operation_id="AutomatsController_getAutomatById", response_model=Automat)
async def get_automat(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    return json_response(
        await services.db.run(lambda s: wire(automats.view_automat(s, caller, id)))
    )


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
        return wire(automats.view_automat(session, caller, id))

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
        return wire(automats.view_automat(session, caller, id))

    return json_response(await services.db.run(work))
