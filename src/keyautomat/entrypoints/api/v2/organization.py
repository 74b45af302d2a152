"""Organization units and service accounts (spec endpoints §6-§7, auth.md §4)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import ConfigDict, Field
from sqlalchemy.orm import Session

from keyautomat.domain import model
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import (
    ApiModel,
    InputNumber,
    NonEmptyStr,
    Number,
    StrictStr,
    absent,
)
from keyautomat.service_layer import accounts

router = APIRouter()

MASKED_PASSWORD = "********"  # noqa: S105 - a mask, not a secret


class IloqApiUserDto(ApiModel):
    username: NonEmptyStr
    password: NonEmptyStr
    customer_code: NonEmptyStr
    service_address: NonEmptyStr


def _type_is_required(schema: dict[str, Any]) -> None:
    # The vendor's document marks `type` required and gives it a default; we take it
    # as 1 when absent (docs/api.md).
    schema["required"] = ["type", *schema.get("required", [])]


class CreateOrganizationUnitDto(ApiModel):
    model_config = ConfigDict(json_schema_extra=_type_is_required)

    type: Annotated[InputNumber, Field(ge=0, le=6)] = Field(
        default=1,
        description="0 organization (platform operators only), 1 country, 2 area, 3 town, "
        "4 district, 5 company, 6 other",
    )
    name: NonEmptyStr
    customer_id: StrictStr
    parent_id: StrictStr | None = absent("Default: the caller's unit")
    iloq_api_user: IloqApiUserDto | None = absent()


class IloqApiUser(ApiModel):
    username: str
    password: str
    customer_code: str
    service_address: str


class OrganizationUnit(ApiModel):
    id: str
    name: str
    customer_id: str | None
    iloq_api_user: IloqApiUser | None
    parent_id: str | None
    type: Number

    @classmethod
    def of(cls, unit: model.OrganizationUnit) -> OrganizationUnit:
        iloq = None
        if unit.iloq_username is not None:
            iloq = IloqApiUser(
                username=unit.iloq_username,
                password=MASKED_PASSWORD,  # never echo the secret (gaps.md B9)
                customer_code=unit.iloq_customer_code or "",
                service_address=unit.iloq_service_address or "",
            )
        return cls(
            id=unit.id,
            name=unit.name,
            customer_id=unit.customer_id,
            iloq_api_user=iloq,
            parent_id=unit.parent_id,
            type=unit.type,
        )


class CreateServiceAccountDto(ApiModel):
    organization_unit_id: NonEmptyStr
    name: NonEmptyStr
    role: StrictStr | None = absent(
        "Our extension: `integration` (default) or `admin` (platform operators only)"
    )


class ServiceAccount(ApiModel):
    id: str
    name: str
    role: str
    private_key: str
    organization_unit_id: str


@router.post(
    "/organizationUnits",
    status_code=201,
    operation_id="OrganizationUnitsController_create",
    response_model=OrganizationUnit,
)
async def create_organization_unit(
    body: CreateOrganizationUnitDto, caller: Caller, services: Services
) -> OrganizationUnit:
    iloq = None
    if body.iloq_api_user is not None:
        u = body.iloq_api_user
        services.iloq.check_service_address(u.service_address, "iloqApiUser.serviceAddress")
        iloq = model.IloqApiUser(u.username, u.password, u.customer_code, u.service_address)

    def work(session: Session) -> OrganizationUnit:
        unit = accounts.create_organization_unit(
            session,
            caller,
            name=body.name,
            customer_id=body.customer_id,
            type=body.type,
            parent_id=body.parent_id,
            iloq_api_user=iloq,
            secrets=services.secrets,
            now=services.clock.now(),
        )
        return OrganizationUnit.of(unit)

    return await services.db.run(work)


@router.post(
    "/serviceAccounts",
    status_code=201,
    operation_id="ServiceAccountsController_create",
    response_model=ServiceAccount,
)
async def create_service_account(
    body: CreateServiceAccountDto, caller: Caller, services: Services
) -> ServiceAccount:
    def work(session: Session) -> ServiceAccount:
        created = accounts.create_service_account(
            session,
            caller,
            organization_unit_id=body.organization_unit_id,
            name=body.name,
            role=body.role,
            now=services.clock.now(),
        )
        return ServiceAccount(
            id=created.account.id,
            name=created.account.name,
            role=created.account.role,
            private_key=created.private_key_pem,
            organization_unit_id=created.account.organization_unit_id,
        )

    return await services.db.run(work)


@router.delete(
    "/serviceAccounts/{id}",
    status_code=204,
    operation_id="ServiceAccountsController_delete",
    response_class=Response,
)
async def delete_service_account(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    await services.db.run(lambda s: accounts.delete_service_account(s, caller, id))
    return Response(status_code=204)
