"""``GET /v2/``: the signed smoke test the official auth examples call (gaps.md A8)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from keyautomat.entrypoints.api.auth import caller_of
from keyautomat.entrypoints.api.schemas import ApiModel, json_response
from keyautomat.service_layer.principal import Principal

router = APIRouter()


class SmokeTestResponse(ApiModel):
    ok: bool
    service_account_id: str
    organization_unit_id: str


@router.get(
    "/",
    operation_id="AppController_root",
    summary="Signed connectivity check",
    response_model=SmokeTestResponse,
)
async def root(request: Request) -> Response:
    # The hottest signed route: no dependency to resolve, no response model to validate.
    # Served by hot_reads.py before routing; this route answers what that path passes on.
    return smoke_test(caller_of(request))


def smoke_test(caller: Principal) -> Response:
    """``GET /v2/`` as answered by its route and by the hot-read path (hot_reads.py)."""
    return json_response(
        {
            "ok": True,
            "serviceAccountId": caller.service_account_id,
            "organizationUnitId": caller.organization_unit_id,
        }
    )
