"""Groups (spec endpoints §5; gaps.md E1-E3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import Field
from sqlalchemy.orm import Session

from keyautomat.domain import model
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import (
    ApiModel,
    InputNumber,
    NonEmptyStr,
    Number,
    PageAfter,
    PageLimit,
    Paginated,
    StrictStr,
    absent,
    read_only,
)
from keyautomat.service_layer import groups
from keyautomat.service_layer.pagination import PageRequest
from keyautomat.service_layer.principal import Principal

router = APIRouter(prefix="/groups", tags=["groups"])


class GroupMember(ApiModel):
    id: str
    name: str


class Group(ApiModel):
    id: str
    name: str
    customer_id: str | None
    type: Number
    members: list[GroupMember] = read_only()


class CreateGroupDto(ApiModel):
    name: NonEmptyStr
    customer_id: StrictStr
    type: InputNumber = Field(description="1 device group, 2 key group")


class UpdateGroupDto(ApiModel):
    name: NonEmptyStr | None = absent()
    customer_id: StrictStr | None = absent()


def _render(session: Session, items: list[model.Group], principal: Principal) -> list[Group]:
    members = groups.members_of(session, items, principal)
    return [
        Group(
            id=g.id,
            name=g.name,
            customer_id=g.customer_id,
            type=g.type,
            members=[GroupMember(id=m.id, name=m.name) for m in members[g.id]],
        )
        for g in items
    ]


@router.get("", operation_id="GroupsController_list")
async def list_groups(
    caller: Caller,
    services: Services,
    after: PageAfter = None,
    limit: PageLimit = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    search: str | None = None,
) -> Paginated[Group]:
    page = PageRequest.parse(after, limit)

    def work(session: Session) -> Paginated[Group]:
        result = groups.list_groups(session, caller, page, customer_id=customer_id, search=search)
        return Paginated[Group].of(result, _render(session, list(result.items), caller))

    return await services.db.run(work)


@router.post("", status_code=201, operation_id="GroupsController_create")
async def create_group(body: CreateGroupDto, caller: Caller, services: Services) -> Group:
    def work(session: Session) -> Group:
        group = groups.create_group(
            session,
            caller,
            name=body.name,
            customer_id=body.customer_id,
            type=body.type,
            now=services.clock.now(),
        )
        return _render(session, [group], caller)[0]

    return await services.db.run(work)


@router.get("/{id}", operation_id="GroupsController_findOne")
async def get_group(id: str, caller: Caller, services: Services) -> Group:  # noqa: A002
    return await services.db.run(lambda s: _render(s, [groups.get_group(s, caller, id)], caller)[0])


@router.patch("/{id}", operation_id="GroupsController_update")
async def update_group(
    id: str,  # noqa: A002
    body: UpdateGroupDto,
    caller: Caller,
    services: Services,
) -> Group:
    def work(session: Session) -> Group:
        group = groups.update_group(
            session, caller, id, name=body.name, customer_id=body.customer_id
        )
        return _render(session, [group], caller)[0]

    return await services.db.run(work)


@router.delete(
    "/{id}", status_code=204, operation_id="GroupsController_delete", response_class=Response
)
async def delete_group(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    await services.db.run(lambda s: groups.delete_group(s, caller, id))
    return Response(status_code=204)
