"""``/v2/mechanical/keycontracts`` (spec endpoints §9; gaps.md F1-F6, F10), and the staff
handovers of manual-storage keys (F11), signed like V2 but outside ``/v2``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy.orm import Session

from keyautomat.contracts import service
from keyautomat.contracts.mechanical import custody, wire
from keyautomat.contracts.mechanical.kind import MechanicalKind
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
from keyautomat.service_layer.notifications import contact_response
from keyautomat.service_layer.pagination import PageRequest

router = APIRouter(prefix="/mechanical/keycontracts", tags=["mechanical key contracts"])
admin_router = APIRouter(prefix="/mechanical/keycontracts", tags=["admin"])
JsonBody = Annotated[Any, Body()]
OP = "MechanicalKeyContractsController_"
# The bodies are parsed by hand (wire.py says why); these models describe them.
REQUEST_MODELS = (wire.CreateMechanicalKeyContractDto, wire.UpdateMechanicalKeyContractDto)


def kind_of(services: Services) -> MechanicalKind:
    kind = services.contract_kinds[MechanicalKind.name]
    assert isinstance(kind, MechanicalKind)
    return kind


def _wire(session: Session, contract: Contract) -> dict[str, Any]:
    contact = contact_response(session, contract.organization_unit_id, contract.contact)
    return wire.to_wire(contract, contact)


@router.get("", operation_id=f"{OP}list", response_model=Paginated[wire.MechanicalKeyContract])
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
    filters = ListFilters(ongoing=ongoing, ended=ended, future=future, key_id=keyId)
    now = services.clock.now()
    kind = kind_of(services)

    def work(session: Session) -> dict[str, Any]:
        store = SqlContractStore(session)
        result = service.list_contracts(store, kind, caller, page, filters, now=now)
        return page_payload(result, [_wire(session, c) for c in result.items])

    return json_response(await services.db.run(work))


@router.post(
    "",
    status_code=201,
    operation_id=f"{OP}create",
    response_model=wire.MechanicalKeyContract,
    openapi_extra=documented_body(wire.CreateMechanicalKeyContractDto),
)
async def create_contract(body: JsonBody, caller: Caller, services: Services) -> Response:
    now = services.clock.now()
    new = wire.parse_new_contract(body, now)
    kind = kind_of(services)

    def work(session: Session) -> dict[str, Any]:
        contract = service.create(SqlContractStore(session), kind, caller, new, now=now)
        return _wire(session, contract)

    return json_response(await services.db.run(work), 201)


@router.get("/{id}", operation_id=f"{OP}get", response_model=wire.MechanicalKeyContract)
async def get_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    kind = kind_of(services)

    def work(session: Session) -> dict[str, Any]:
        return _wire(session, service.get(SqlContractStore(session), kind, caller, id))

    return json_response(await services.db.run(work))


@router.patch(
    "/{id}",
    operation_id=f"{OP}update",
    response_model=wire.MechanicalKeyContract,
    openapi_extra=documented_body(wire.UpdateMechanicalKeyContractDto),
)
async def update_contract(
    id: str,  # noqa: A002
    body: JsonBody,
    caller: Caller,
    services: Services,
) -> Response:
    change = wire.parse_change(body)
    now = services.clock.now()
    kind = kind_of(services)

    def work(session: Session) -> dict[str, Any]:
        store = SqlContractStore(session)
        return _wire(session, service.update(store, kind, caller, id, change, now=now))

    return json_response(await services.db.run(work))


@router.delete("/{id}", status_code=204, operation_id=f"{OP}delete", response_class=Response)
async def delete_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    now = services.clock.now()
    kind = kind_of(services)
    await services.db.run(lambda s: service.delete(SqlContractStore(s), kind, caller, id, now=now))
    return Response(status_code=204)


@admin_router.post("/{id}/keys/{key_id}/handover", operation_id="AdminMechanical_handover")
async def handover(id: str, key_id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    """Staff handed the key over to the contact: ``key-fetched``."""
    now = services.clock.now()
    kind = kind_of(services)

    def work(session: Session) -> dict[str, Any]:
        contract = custody.record_handover(session, kind, caller, id, key_id, now=now)
        return _wire(session, contract)

    return json_response(await services.db.run(work))


@admin_router.post("/{id}/keys/{key_id}/return", operation_id="AdminMechanical_return")
async def give_back(id: str, key_id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    """The contact gave the key back to staff: ``key-returned``."""
    now = services.clock.now()
    kind = kind_of(services)

    def work(session: Session) -> dict[str, Any]:
        contract = custody.record_return(session, kind, caller, id, key_id, now=now)
        return _wire(session, contract)

    return json_response(await services.db.run(work))
