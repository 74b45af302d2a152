"""The five routes of a contract kind (create, list, get, PATCH, DELETE), built once.

Each handler parses the wire format with the kind's ``wire`` module, calls the
contract flow (``service.py``) with the kind the container registered, and
answers with the kind's response shape; the kind's router module says only what
differs (path, operation ids, extra list filters, checks before a creation).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Body, Depends, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from keyautomat.contracts import service
from keyautomat.contracts.kind import ContractKind
from keyautomat.contracts.lost import Outcome
from keyautomat.contracts.model import Contract, ContractChange, ListFilters
from keyautomat.contracts.store import SqlContractStore
from keyautomat.contracts.wire import period_filters
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import (
    ApiModel,
    PageAfter,
    PageLimit,
    Paginated,
    documented_body,
    json_response,
    page_payload,
)
from keyautomat.service_layer.notifications import contact_response
from keyautomat.service_layer.pagination import PageRequest
from keyautomat.service_layer.principal import Principal

JsonBody = Annotated[Any, Body()]


# --- lost keys (admin; docs/contracts.md, "Lost keys") -------------------------------------


class Replacement(ApiModel):
    key_id: str
    pincode: str | None


class LostKeyContract(ApiModel):
    """A contract that held the lost key: it lost it (status ``key-lost``), and got this
    replacement (null: none was asked for, or none was free)."""

    id: str
    replacement: Replacement | None

    @classmethod
    def of(cls, outcome: Outcome) -> LostKeyContract:
        replacement = None
        if outcome.replacement_key_id is not None:
            replacement = Replacement(
                key_id=outcome.replacement_key_id, pincode=outcome.replacement_pincode
            )
        return cls(id=outcome.contract_id, replacement=replacement)


class WireFormat(Protocol):
    """What a kind's ``wire`` module provides."""

    def parse_new_contract(self, body: Any, now: datetime) -> Any: ...
    def parse_change(self, raw: Any) -> ContractChange: ...
    def to_wire(self, contract: Contract, contact: dict[str, Any] | None) -> dict[str, Any]: ...


# Checks a creation needs before its transaction (iLOQ: the access rights, from iLOQ).
BeforeCreate = Callable[[Any, Principal, Any], Awaitable[None]]


def kind_of(services: Services, name: str) -> ContractKind[Any]:
    kind: ContractKind[Any] = services.contract_kinds[name]
    return kind


def response(wire: WireFormat, session: Session, contract: Contract) -> dict[str, Any]:
    contact = contact_response(session, contract.organization_unit_id, contract.contact)
    return wire.to_wire(contract, contact)


def contract_router(
    path: str,
    kind: str,
    wire: WireFormat,
    model: type[BaseModel],
    bodies: tuple[type[BaseModel], type[BaseModel]],
    /,
    *,
    tags: list[str],
    operations: dict[str, str],
    filters: Callable[..., Awaitable[ListFilters]] = period_filters,
    before_create: BeforeCreate | None = None,
) -> APIRouter:
    router = APIRouter(prefix=path, tags=list(tags))

    @router.get("", operation_id=operations["list"], response_model=Paginated[model])  # type: ignore[valid-type]
    async def list_contracts(
        caller: Caller,
        services: Services,
        after: PageAfter = None,
        limit: PageLimit = None,
        # A default, not an Annotated type: this module's annotations are strings, and
        # ``filters`` is a local name FastAPI could not resolve from one.
        chosen: ListFilters = Depends(filters),  # noqa: B008
    ) -> Response:
        page = PageRequest.parse(after, limit)
        now = services.clock.now()
        of_kind = kind_of(services, kind)
        wanted: ListFilters = chosen

        def work(session: Session) -> dict[str, Any]:
            store = SqlContractStore(session)
            result = service.list_contracts(store, of_kind, caller, page, wanted, now=now)
            return page_payload(result, [response(wire, session, c) for c in result.items])

        return json_response(await services.db.run(work))

    @router.post(
        "",
        status_code=201,
        operation_id=operations["create"],
        response_model=model,
        openapi_extra=documented_body(bodies[0]),
    )
    async def create_contract(body: JsonBody, caller: Caller, services: Services) -> Response:
        now = services.clock.now()
        new = wire.parse_new_contract(body, now)
        if before_create is not None:
            await before_create(new, caller, services)
        of_kind = kind_of(services, kind)

        def work(session: Session) -> dict[str, Any]:
            contract = service.create(SqlContractStore(session), of_kind, caller, new, now=now)
            return response(wire, session, contract)

        return json_response(await services.db.run(work), 201)

    @router.get("/{id}", operation_id=operations["get"], response_model=model)
    async def get_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
        of_kind = kind_of(services, kind)

        def work(session: Session) -> dict[str, Any]:
            contract = service.get(SqlContractStore(session), of_kind, caller, id)
            return response(wire, session, contract)

        return json_response(await services.db.run(work))

    @router.patch(
        "/{id}",
        operation_id=operations["update"],
        response_model=model,
        openapi_extra=documented_body(bodies[1]),
    )
    async def update_contract(
        id: str,  # noqa: A002
        body: JsonBody,
        caller: Caller,
        services: Services,
    ) -> Response:
        change = wire.parse_change(body)
        now = services.clock.now()
        of_kind = kind_of(services, kind)

        def work(session: Session) -> dict[str, Any]:
            store = SqlContractStore(session)
            contract = service.update(store, of_kind, caller, id, change, now=now)
            return response(wire, session, contract)

        return json_response(await services.db.run(work))

    @router.delete(
        "/{id}", status_code=204, operation_id=operations["delete"], response_class=Response
    )
    async def delete_contract(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
        now = services.clock.now()
        of_kind = kind_of(services, kind)
        await services.db.run(
            lambda s: service.delete(SqlContractStore(s), of_kind, caller, id, now=now)
        )
        return Response(status_code=204)

    return router
