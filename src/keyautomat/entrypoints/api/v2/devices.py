"""sendPincode and cancelSendPincode (spec endpoints §4.8-4.9; gaps.md D6-D7)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, NonEmptyStr, StrictBool

router = APIRouter(prefix="/automats", tags=["automats"])


class SendPincodeDto(ApiModel):
    pincode: NonEmptyStr
    proximity_check: StrictBool = False


class SendPincodeResponseDto(ApiModel):
    success: bool
    reason: str | None


class CancelSendPincodeDto(ApiModel):
    pincode: NonEmptyStr


@router.post("/{id}/sendPincode", operation_id="AutomatsController_sendPincode")
async def send_pincode(
    id: str,  # noqa: A002
    body: SendPincodeDto,
    caller: Caller,
    services: Services,
) -> SendPincodeResponseDto:
    result = await services.devices.send_pincode(
        caller, id, body.pincode, proximity_check=body.proximity_check
    )
    return SendPincodeResponseDto(
        success=result.success, reason=str(result.reason) if result.reason else None
    )


@router.post(
    "/{id}/cancelSendPincode",
    operation_id="AutomatsController_cancelSendPincode",
    response_class=Response,
)
async def cancel_send_pincode(
    id: str,  # noqa: A002
    body: CancelSendPincodeDto,
    caller: Caller,
    services: Services,
) -> Response:
    # 200 with an empty body, as documented (gaps.md A7), whether or not anything was pending.
    await services.devices.cancel_send_pincode(caller, id, body.pincode)
    return Response(status_code=200)
