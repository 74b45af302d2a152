"""sendPincode and cancelSendPincode (spec endpoints §4.8-4.9; gaps.md D6-D7)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import AfterValidator, Field

from keyautomat.adapters.device_protocol import MAX_CODE_LENGTH
from keyautomat.domain.text import NOT_ASCII_DIGITS, is_ascii_digits
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, StrictBool, StrictStr

router = APIRouter(prefix="/automats", tags=["automats"])


def _keypad_code(value: str) -> str:
    if not is_ascii_digits(value):
        raise ValueError(NOT_ASCII_DIGITS)
    return value


# What the automat's keypad can type and the device protocol can carry; checked here,
# so that a code the gateway could not send is a 400, not a failure in the gateway.
KeypadCode = Annotated[
    StrictStr, Field(min_length=1, max_length=MAX_CODE_LENGTH), AfterValidator(_keypad_code)
]


class SendPincodeDto(ApiModel):
    pincode: KeypadCode
    proximity_check: StrictBool = False


class SendPincodeResponseDto(ApiModel):
    success: bool
    reason: str | None


class CancelSendPincodeDto(ApiModel):
    pincode: KeypadCode


@router.post("/{id}/sendPincode", operation_id="AutomatsController_sendPincode")
async def send_pincode(
    id: str,  # noqa: A002
    body: SendPincodeDto,
    caller: Caller,
    services: Services,
) -> SendPincodeResponseDto:
    result = await services.commands.send_pincode(
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
    await services.commands.cancel_send_pincode(caller, id, body.pincode)
    return Response(status_code=200)
