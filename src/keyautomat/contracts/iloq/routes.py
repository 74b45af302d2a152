"""``/v2/iloq/keycontracts`` (spec endpoints §3.1-3.6; gaps.md C1-C18), and reporting an
iLOQ key lost (``/admin/iloq/keys/{keyId}/lost``, signed like V2, admin only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyautomat.contracts.iloq import lost, wire
from keyautomat.contracts.iloq.kind import IloqKind, NewIloqContract
from keyautomat.contracts.routes import LostKeyContract, contract_router
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, StrictBool
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


admin_router = APIRouter(prefix="/iloq/keys", tags=["admin: lost keys"])


class LostIloqKeyDto(ApiModel):
    # true: each contract that held the key gets a free key of the same automat or group.
    replace: StrictBool = False


class LostIloqKey(ApiModel):
    key_id: str
    # On the locking system's blocklist now (false: it held no rights, or iLOQ knows no
    # such key: nothing to block).
    blocklisted: bool
    contracts: list[LostKeyContract]


@admin_router.post("/{key_id}/lost", operation_id="AdminIloqKey_lost")
async def report_lost(
    key_id: str, caller: Caller, services: Services, body: LostIloqKeyDto | None = None
) -> LostIloqKey:
    """The key is lost: blocklisted in iLOQ, blocked here, out of its contracts (key-lost),
    with a replacement each when ``replace`` is true."""
    replace = body.replace if body is not None else False
    key = await services.db.run(lambda s: lost.prepare(s, caller, key_id))
    blocklisted = await lost.blocklist(await services.iloq.port_for(key.unit_id), key_id)
    now = services.clock.now()
    kinds = services.contract_kinds
    report = await services.db.run(
        lambda s: lost.record(
            s, kinds, caller, key_id, replace=replace, blocklisted=blocklisted, now=now
        )
    )
    return LostIloqKey(
        key_id=report.key_id,
        blocklisted=report.blocklisted,
        contracts=[LostKeyContract.of(o) for o in report.outcomes],
    )
