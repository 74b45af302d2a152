"""Staff handovers of manual-storage keys (gaps.md F11), signed like V2, outside ``/v2``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import json_response
from keyautomat.service_layer import mechanical_contracts as service
from keyautomat.service_layer import mechanical_progress

router = APIRouter(prefix="/mechanical/keycontracts", tags=["admin"])


@router.post("/{id}/keys/{key_id}/handover", operation_id="AdminMechanical_handover")
async def handover(id: str, key_id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    """Staff handed the key over to the contact: ``key-fetched``."""
    now = services.clock.now()

    def work(session: Session) -> dict[str, Any]:
        contract = mechanical_progress.record_handover(session, caller, id, key_id, now=now)
        return service.to_wire(session, contract)

    return json_response(await services.db.run(work))


@router.post("/{id}/keys/{key_id}/return", operation_id="AdminMechanical_return")
async def give_back(id: str, key_id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    """The contact gave the key back to staff: ``key-returned``."""
    now = services.clock.now()

    def work(session: Session) -> dict[str, Any]:
        contract = mechanical_progress.record_return(session, caller, id, key_id, now=now)
        return service.to_wire(session, contract)

    return json_response(await services.db.run(work))
