"""``/v2/iloq/keycontracts`` (spec endpoints §3.1-3.6; gaps.md C1-C18): thin handlers that
parse the wire format, call the contract flow with the iLOQ kind, and answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy.orm import Session

from keyautomat.contracts import service
from keyautomat.contracts.iloq import wire
from keyautomat.contracts.iloq.kind import IloqKind
from keyautomat.contracts.model import Contract, ListFilters
from keyautomat.contracts.store import SqlContractStore
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import (
    Paginated,
    documented_body,
    json_response,
    page_payload,
)
from keyautomat.service_layer import access_rights
from keyautomat.service_layer.notifications import contact_response
from keyautomat.service_layer.pagination import PageRequest

router = APIRouter(prefix="/iloq/keycontracts", tags=["iloq"])
JsonBody = Annotated[Any, Body()]
KIND = IloqKind.name
# The bodies are parsed by hand (wire.py says why); these models describe them.
REQUEST_MODELS = (wire.CreateIloqKeyContractDto, wire.UpdateIloqContractDto)


def _wire(session: Session, contract: Contract) -> dict[str, Any]:
    contact = contact_response(session, contract.organization_unit_id, contract.contact)
    return wire.to_wire(contract, contact)


@router.get(
    "", operation_id="IloqController_getContracts", response_model=Paginated[wire.IloqKeyContract]
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
    filters = ListFilters(ongoing=ongoing, ended=ended, future=future)
    now = services.clock.now()

    def work(session: Session) -> dict[str, Any]:
        store = SqlContractStore(session)
        result = service.list_contracts(
            store, services.contract_kinds[KIND], caller, page, filters, now=now
        )
        return page_payload(result, [_wire(session, c) for c in result.items])

    return json_response(await services.db.run(work))


@router.post(
    "",
    status_code=201,
    operation_id="IloqController_createContract",
    response_model=wire.IloqKeyContract,
    openapi_extra=documented_body(wire.CreateIloqKeyContractDto),
)
async def create_contract(body: JsonBody, caller: Caller, services: Services) -> Response:
    now = services.clock.now()
    new = wire.parse_new_contract(body, now)
    if new.access_right_ids is not None:
        await access_rights.check_access_right_ids(
            new.access_right_ids,
            caller,
            systems=services.iloq,
            cache=services.access_rights_cache,
        )

    def work(session: Session) -> dict[str, Any]:
        contract = service.create(
            SqlContractStore(session), services.contract_kinds[KIND], caller, new, now=now
        )
        return _wire(session, contract)

    return json_response(await services.db.run(work), 201)


@router.get("/{id}", operation_id="IloqController_getContract", response_model=wire.IloqKeyContract)
async def get_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    def work(session: Session) -> dict[str, Any]:
        return _wire(
            session,
            service.get(SqlContractStore(session), services.contract_kinds[KIND], caller, id),
        )

    return json_response(await services.db.run(work))


@router.patch(
    "/{id}",
    operation_id="IloqController_updateContract",
    response_model=wire.IloqKeyContract,
    openapi_extra=documented_body(wire.UpdateIloqContractDto),
)
async def update_contract(
    id: str,  # noqa: A002
    body: JsonBody,
    caller: Caller,
    services: Services,
) -> Response:
    change = wire.parse_change(body)
    now = services.clock.now()

    def work(session: Session) -> dict[str, Any]:
        store = SqlContractStore(session)
        return _wire(
            session,
            service.update(store, services.contract_kinds[KIND], caller, id, change, now=now),
        )

    return json_response(await services.db.run(work))


@router.delete(
    "/{id}",
    status_code=204,
    operation_id="IloqController_deleteContract",
    response_class=Response,
)
async def delete_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    now = services.clock.now()
    await services.db.run(
        lambda s: service.delete(
            SqlContractStore(s), services.contract_kinds[KIND], caller, id, now=now
        )
    )
    return Response(status_code=204)
