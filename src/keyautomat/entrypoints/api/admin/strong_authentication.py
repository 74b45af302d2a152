"""``/admin/organizationunits/{id}/strong-authentication``: which units allow
``userVerification`` "2" on mechanical key contracts (gaps.md F3).

Signed like V2, outside ``/v2``; admin role only, scoped to the caller's subtree
(an unknown or out-of-scope unit is a 404). The setting is per unit: a child unit
is not enabled by its parent's setting.
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from keyautomat.contracts.mechanical import signature as service
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, StrictBool

router = APIRouter(tags=["admin: strong authentication"])

PATH = "/organizationunits/{id}/strong-authentication"


class StrongAuthentication(ApiModel):
    enabled: StrictBool


@router.get(PATH, operation_id="AdminStrongAuthentication_get")
async def get_strong_authentication(
    id: str,  # noqa: A002
    caller: Caller,
    services: Services,
) -> StrongAuthentication:
    def work(session: Session) -> bool:
        return service.strong_auth_enabled(session, caller, id)

    return StrongAuthentication(enabled=await services.db.run(work))


@router.put(PATH, operation_id="AdminStrongAuthentication_put")
async def put_strong_authentication(
    id: str,  # noqa: A002
    body: StrongAuthentication,
    caller: Caller,
    services: Services,
) -> StrongAuthentication:
    def work(session: Session) -> bool:
        return service.set_strong_auth(session, caller, id, body.enabled)

    return StrongAuthentication(enabled=await services.db.run(work))
