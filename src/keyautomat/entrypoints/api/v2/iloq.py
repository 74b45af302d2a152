"""iLOQ access rights (spec endpoints §3.7; gaps.md C19)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, PageAfter, PageLimit, Paginated
from keyautomat.service_layer import access_rights
from keyautomat.service_layer.pagination import PageRequest

router = APIRouter(prefix="/iloq", tags=["iloq"])


class IloqAccessRight(ApiModel):
    id: str
    name: str
    real_estate_path: str | None


@router.get(
    "/accessRights",
    operation_id="IloqController_getAccessRights",
    description="API-enabled access rights of the iLOQ S5 system serving the caller's "
    "organization unit, by name; cached for about five minutes.",
)
async def get_access_rights(
    caller: Caller,
    services: Services,
    after: PageAfter = None,
    limit: PageLimit = None,
    search: Annotated[str | None, Query(description="Case-insensitive part of the name")] = None,
    return_default_accesses_only: Annotated[
        bool | None,
        Query(
            alias="returnDefaultAccessesOnly",
            description="Only the rights iLOQ Manager shows by default (default false)",
        ),
    ] = None,
) -> Paginated[IloqAccessRight]:
    page = PageRequest.parse(after, limit)
    result = await access_rights.list_access_rights(
        caller,
        page,
        search=search,
        default_only=bool(return_default_accesses_only),
        systems=services.iloq,
        cache=services.access_rights_cache,
    )
    data = [
        IloqAccessRight(id=r.id, name=r.name, real_estate_path=r.real_estate_path)
        for r in result.items
    ]
    return Paginated[IloqAccessRight].of(result, data)
