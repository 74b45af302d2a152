"""``/v2/iloq/keycontracts`` (spec endpoints §3.1-3.6; gaps.md C1-C18)."""

from __future__ import annotations

from typing import Any

from keyautomat.contracts.iloq import wire
from keyautomat.contracts.iloq.kind import IloqKind, NewIloqContract
from keyautomat.contracts.routes import contract_router
from keyautomat.service_layer import access_rights
from keyautomat.service_layer.principal import Principal

# The bodies are parsed by hand (wire.py says why); these models describe them, and the
# document lists them all.
REQUEST_MODELS = wire.DOCUMENTED


async def known_access_rights(new: NewIloqContract, caller: Principal, services: Any) -> None:
    """Refuse a right the caller's iLOQ system would not program, before any transaction
    (the API's routes and the console's form both check it)."""
    if new.access_right_ids is not None:
        await access_rights.check_access_right_ids(
            new.access_right_ids,
            caller,
            systems=services.iloq,
            cache=services.access_rights_cache,
        )


router = contract_router(
    "/iloq/keycontracts",
    IloqKind.name,
    wire,
    wire.IloqKeyContract,
    (wire.CreateIloqKeyContractDto, wire.UpdateIloqContractDto),
    tags=["iloq"],
    operations={
        "list": "IloqController_getListOfContracts",
        "create": "IloqController_createContract",
        "get": "IloqController_getContractById",
        "update": "IloqController_updateContractById",
        "delete": "IloqController_deleteContractById",
    },
    before_create=known_access_rights,
)
