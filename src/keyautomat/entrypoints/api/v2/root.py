"""``GET /v2/``: the signed smoke test the official auth examples call (gaps.md A8)."""

from __future__ import annotations

from fastapi import APIRouter

from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.schemas import ApiModel

router = APIRouter()


class SmokeTestResponse(ApiModel):
    ok: bool
    service_account_id: str
    organization_unit_id: str


@router.get("/", operation_id="AppController_root", summary="Signed connectivity check")
async def root(caller: Caller) -> SmokeTestResponse:
    return SmokeTestResponse(
        ok=True,
        service_account_id=caller.service_account_id,
        organization_unit_id=caller.organization_unit_id,
    )
