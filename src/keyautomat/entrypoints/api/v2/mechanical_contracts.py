"""Mechanical key contracts (spec endpoints §9; gaps.md F1-F6, F10)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy.orm import Session

from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, Paginated, json_response, page_payload
from keyautomat.service_layer import mechanical_contracts as service
from keyautomat.service_layer.pagination import PageRequest

router = APIRouter(prefix="/mechanical/keycontracts", tags=["mechanical key contracts"])


class ContractKey(ApiModel):
    id: str
    storage_info: dict[str, Any]
    status: str | None
    in_history: bool


class MechanicalKeyContract(ApiModel):
    id: str
    start: str
    end: str | None
    contact: dict[str, Any] | None
    keys: list[ContractKey]
    free_locker_after_fetch: bool | None
    user_verification: str
    pick_up_info_for_manual_storage_keys: str | None


JsonBody = Annotated[Any, Body()]
OP = "MechanicalKeyContractsController_"


@router.get("", operation_id=f"{OP}list", response_model=Paginated[MechanicalKeyContract])
async def list_contracts(
    caller: Caller,
    services: Services,
    after: str | None = None,
    limit: str | None = None,
    ongoing: Annotated[bool | None, Query()] = None,
    ended: Annotated[bool | None, Query()] = None,
    future: Annotated[bool | None, Query()] = None,
    keyId: Annotated[str | None, Query()] = None,  # noqa: N803 - the wire name
) -> Response:
    page = PageRequest.parse(after, limit)
    now = services.clock.now()

    def work(session: Session) -> dict[str, Any]:
        result = service.list_contracts(
            session,
            caller,
            page,
            ongoing=ongoing,
            ended=ended,
            future=future,
            key_id=keyId,
            now=now,
        )
        return page_payload(result, [service.to_wire(session, c) for c in result.items])

    return json_response(await services.db.run(work))


@router.post("", status_code=201, operation_id=f"{OP}create", response_model=MechanicalKeyContract)
async def create_contract(body: JsonBody, caller: Caller, services: Services) -> Response:
    now = services.clock.now()
    new = service.parse_new_contract(body, now)

    def work(session: Session) -> dict[str, Any]:
        return service.to_wire(session, service.create_contract(session, caller, new, now=now))

    return json_response(await services.db.run(work), 201)


@router.get("/{id}", operation_id=f"{OP}get", response_model=MechanicalKeyContract)
async def get_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    def work(session: Session) -> dict[str, Any]:
        return service.to_wire(session, service.scoped_contract(session, caller, id))

    return json_response(await services.db.run(work))


@router.patch("/{id}", operation_id=f"{OP}update", response_model=MechanicalKeyContract)
async def update_contract(
    id: str,  # noqa: A002
    body: JsonBody,
    caller: Caller,
    services: Services,
) -> Response:
    change = service.parse_change(body)
    now = services.clock.now()

    def work(session: Session) -> dict[str, Any]:
        return service.to_wire(
            session, service.update_contract(session, caller, id, change, now=now)
        )

    return json_response(await services.db.run(work))


@router.delete("/{id}", status_code=204, operation_id=f"{OP}delete", response_class=Response)
async def delete_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    now = services.clock.now()
    await services.db.run(lambda s: service.delete_contract(s, caller, id, now=now))
    return Response(status_code=204)
