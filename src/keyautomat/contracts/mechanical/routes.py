"""``/v2/mechanical/keycontracts`` (spec endpoints §9; gaps.md F1-F6, F10), and the staff
handovers of manual-storage keys (F11) and lost keys, signed like V2 but outside ``/v2``."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from keyautomat.contracts.mechanical import custody, wire
from keyautomat.contracts.mechanical.kind import MechanicalKind
from keyautomat.contracts.model import ListFilters
from keyautomat.contracts.routes import LostKeyContract, contract_router, response
from keyautomat.contracts.wire import PeriodFilters
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, UtcDatetime, json_response

admin_router = APIRouter(prefix="/mechanical/keycontracts", tags=["admin"])
keys_admin_router = APIRouter(prefix="/mechanical/keys", tags=["admin: lost keys"])
# The bodies are parsed by hand (wire.py says why); these models describe them.
REQUEST_MODELS = (wire.CreateMechanicalKeyContractDto, wire.UpdateMechanicalKeyContractDto)


def kind_of(services: Services) -> MechanicalKind:
    kind = services.contract_kinds[MechanicalKind.name]
    assert isinstance(kind, MechanicalKind)
    return kind


async def _filters(
    period: PeriodFilters,
    keyId: Annotated[str | None, Query()] = None,  # noqa: N803 - the wire name
) -> ListFilters:
    # async: a plain def dependency would cost a worker-thread round trip per request
    return replace(period, key_id=keyId)


router = contract_router(
    "/mechanical/keycontracts",
    MechanicalKind.name,
    wire,
    wire.MechanicalKeyContract,
    REQUEST_MODELS,
    tags=["mechanical key contracts"],
    # The vendor's document gives these operations the ids of the mechanical keys' own
    # (endpoints.md §1); so does ours, for a client generated from it to equal the vendor's.
    operations={name: name for name in ("list", "create", "get", "update", "delete")},
    filters=_filters,
)


@admin_router.post("/{id}/keys/{key_id}/handover", operation_id="AdminMechanical_handover")
async def handover(id: str, key_id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    """Staff handed the key over to the contact: ``key-fetched``."""
    now = services.clock.now()
    kind = kind_of(services)

    def work(session: Session) -> dict[str, Any]:
        contract = custody.record_handover(session, kind, caller, id, key_id, now=now)
        return response(wire, session, contract)

    return json_response(await services.db.run(work))


@admin_router.post("/{id}/keys/{key_id}/return", operation_id="AdminMechanical_return")
async def give_back(id: str, key_id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    """The contact gave the key back to staff: ``key-returned``."""
    now = services.clock.now()
    kind = kind_of(services)

    def work(session: Session) -> dict[str, Any]:
        contract = custody.record_return(session, kind, caller, id, key_id, now=now)
        return response(wire, session, contract)

    return json_response(await services.db.run(work))


class LostMechanicalKey(ApiModel):
    key_id: str
    lost_at: UtcDatetime
    contracts: list[LostKeyContract]


@keys_admin_router.post("/{id}/lost", operation_id="AdminMechanicalKey_lost")
async def report_lost(id: str, caller: Caller, services: Services) -> LostMechanicalKey:  # noqa: A002
    """The key is lost: offered to no new contract until found, out of its contracts."""
    now = services.clock.now()
    kinds = services.contract_kinds

    def work(session: Session) -> LostMechanicalKey:
        key, outcomes = custody.report_lost(session, kinds, caller, id, now=now)
        assert key.lost_at is not None
        return LostMechanicalKey(
            key_id=key.id,
            lost_at=key.lost_at,
            contracts=[LostKeyContract.of(o) for o in outcomes],
        )

    return await services.db.run(work)
