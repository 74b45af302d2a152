"""iLOQ key contracts (spec endpoints §3.1-3.6; gaps.md C1-C18)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy.orm import Session

from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import (
    ApiModel,
    Paginated,
    json_response,
    page_payload,
)
from keyautomat.service_layer import access_rights, iloq_contracts
from keyautomat.service_layer.pagination import PageRequest

router = APIRouter(prefix="/iloq/keycontracts", tags=["iloq"])


class IloqContractKeyStorageInfo(ApiModel):
    device_id: str | None
    pincode: str | None


class IloqContractKey(ApiModel):
    id: str
    status: str | None
    storage_info: IloqContractKeyStorageInfo
    in_history: bool


class IloqKeyContract(ApiModel):
    id: str
    access_right_ids: list[str] | None
    start: str
    end: str | None
    contact: dict[str, Any] | None
    keys: list[IloqContractKey]
    number_of_keys: int | None
    key_ids: list[str] | None
    key_automat_id: str | None
    group_id: str | None
    contract_type: int


JsonBody = Annotated[Any, Body()]


@router.get(
    "", operation_id="IloqController_getContracts", response_model=Paginated[IloqKeyContract]
)
async def list_contracts(
    caller: Caller,
    services: Services,
    after: str | None = None,
    limit: str | None = None,
    ongoing: Annotated[bool | None, Query()] = None,
    ended: Annotated[bool | None, Query()] = None,
    future: Annotated[bool | None, Query()] = None,
) -> Response:
    page = PageRequest.parse(after, limit)
    now = services.clock.now()

    def work(session: Session) -> dict[str, Any]:
        result = iloq_contracts.list_contracts(
            session, caller, page, ongoing=ongoing, ended=ended, future=future, now=now
        )
        return page_payload(result, [iloq_contracts.to_wire(session, c) for c in result.items])

    return json_response(await services.db.run(work))


@router.post(
    "",
    status_code=201,
    operation_id="IloqController_createContract",
    response_model=IloqKeyContract,
    description='Body: {"input": {...}} (the fields may also be sent unwrapped).',
)
async def create_contract(body: JsonBody, caller: Caller, services: Services) -> Response:
    now = services.clock.now()
    new = iloq_contracts.parse_new_contract(body, now)
    if new.access_right_ids is not None:
        await access_rights.check_access_right_ids(
            new.access_right_ids,
            caller,
            systems=services.iloq,
            cache=services.access_rights_cache,
        )

    def work(session: Session) -> dict[str, Any]:
        contract = iloq_contracts.create_contract(session, caller, new, now=now)
        return iloq_contracts.to_wire(session, contract)

    return json_response(await services.db.run(work), 201)


@router.get("/{id}", operation_id="IloqController_getContract", response_model=IloqKeyContract)
async def get_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    def work(session: Session) -> dict[str, Any]:
        return iloq_contracts.to_wire(session, iloq_contracts.scoped_contract(session, caller, id))

    return json_response(await services.db.run(work))


@router.patch("/{id}", operation_id="IloqController_updateContract", response_model=IloqKeyContract)
async def update_contract(
    id: str,  # noqa: A002
    body: JsonBody,
    caller: Caller,
    services: Services,
) -> Response:
    change = iloq_contracts.parse_change(body)
    now = services.clock.now()

    def work(session: Session) -> dict[str, Any]:
        contract = iloq_contracts.update_contract(session, caller, id, change, now=now)
        return iloq_contracts.to_wire(session, contract)

    return json_response(await services.db.run(work))


@router.delete(
    "/{id}",
    status_code=204,
    operation_id="IloqController_deleteContract",
    response_class=Response,
)
async def delete_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    now = services.clock.now()
    await services.db.run(lambda s: iloq_contracts.delete_contract(s, caller, id, now=now))
    return Response(status_code=204)
