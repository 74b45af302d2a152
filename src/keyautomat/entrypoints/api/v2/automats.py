"""Automats (spec endpoints §4; gaps.md D1-D5)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from keyautomat.domain import model
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, NonEmptyStr, Paginated, StrictStr
from keyautomat.service_layer import automats
from keyautomat.service_layer.automats import Location
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
    name: str | None


class AutomatLocker(ApiModel):
    locker_index: str
    is_key_inside: bool
    key: AutomatLockerAssignedKey | None


class Automat(ApiModel):
    id: str
    name: str
    location: AutomatLocation
    label: str | None
    groups: list[AutomatGroup]
    hw_id: str | None
    timezone: str | None
    installation_pincode: str | None
    lockers: list[AutomatLocker]
    lifecycle_state: str | None

    @classmethod
    def of(cls, automat: model.Automat) -> Automat:
        return cls(
            id=automat.id,
            name=automat.name,
            location=AutomatLocation(
                address=automat.address,
                postal_code=automat.postal_code,
                postal_office=automat.postal_office,
            ),
            label=automat.label,
            groups=[AutomatGroup(id=g.id, name=g.name) for g in automat.groups],
            hw_id=automat.hw_id,
            timezone=automat.timezone,
            installation_pincode=automat.installation_pincode,
            lockers=[
                AutomatLocker(
                    locker_index=str(locker.locker_index),
                    is_key_inside=locker.is_key_inside,
                    key=(
                        AutomatLockerAssignedKey(id=locker.key_id, name=locker.key_name)
                        if locker.key_id is not None
                        else None
                    ),
                )
                for locker in automat.lockers
            ],
            lifecycle_state=automat.lifecycle_state,
        )


class AutomatLocationDto(ApiModel):
    address: StrictStr | None = None
    postal_code: StrictStr | None = None
    postal_office: StrictStr | None = None


class UpdateAutomatDto(ApiModel):
    name: NonEmptyStr | None = None
    label: StrictStr | None = None
    groups: list[StrictStr] | None = None
    timezone: NonEmptyStr | None = None
    location: AutomatLocationDto | None = None


class InstallAutomatDto(ApiModel):
    name: NonEmptyStr
    organization_unit_id: StrictStr | None = None
    label: StrictStr | None = None
    group_id: StrictStr | None = None
    address: StrictStr
    postal_code: StrictStr
    postal_office: StrictStr
    timezone: NonEmptyStr
    product: Literal["key20", "key30"]


@router.get("", operation_id="AutomatsController_getAutomats")
async def list_automats(
    caller: Caller, services: Services, after: str | None = None, limit: str | None = None
) -> Paginated[Automat]:
    page = PageRequest.parse(after, limit)

    def work(session: Session) -> Paginated[Automat]:
        result = automats.list_automats(session, caller, page)
        return Paginated[Automat].of(result, [Automat.of(a) for a in result.items])

    return await services.db.run(work)


@router.post("/install", status_code=201, operation_id="AutomatsController_installAutomat")
async def install_automat(body: InstallAutomatDto, caller: Caller, services: Services) -> Automat:
    def work(session: Session) -> Automat:
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
        return Automat.of(automat)

    return await services.db.run(work)


@router.get("/{id}", operation_id="AutomatsController_getAutomatById")
async def get_automat(id: str, caller: Caller, services: Services) -> Automat:  # noqa: A002
    return await services.db.run(lambda s: Automat.of(automats.get_automat(s, caller, id)))


@router.patch("/{id}", operation_id="AutomatsController_updateAutomat")
async def update_automat(
    id: str,  # noqa: A002
    body: UpdateAutomatDto,
    caller: Caller,
    services: Services,
) -> Automat:
    location = None
    if body.location is not None:
        location = Location(
            body.location.address, body.location.postal_code, body.location.postal_office
        )

    def work(session: Session) -> Automat:
        automat = automats.update_automat(
            session,
            caller,
            id,
            name=body.name,
            label=body.label,
            group_ids=body.groups,
            timezone=body.timezone,
            location=location,
        )
        return Automat.of(automat)

    return await services.db.run(work)


@router.post(
    "/{id}/uninstall",
    status_code=204,
    operation_id="AutomatsController_uninstallAutomat",
    response_class=Response,
)
async def uninstall_automat(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    await services.db.run(lambda s: automats.uninstall_automat(s, caller, id))
    return Response(status_code=204)


@router.post("/{id}/replace", operation_id="AutomatsController_replaceAutomat")
async def replace_automat(id: str, caller: Caller, services: Services) -> Automat:  # noqa: A002
    return await services.db.run(lambda s: Automat.of(automats.replace_automat(s, caller, id)))
