"""The mechanical contract's wire format (endpoints.md §9): requests parsed into commands,
contracts written as ``MechanicalKeyContract``.

Requests are parsed by hand, like the iLOQ ones and for the same reason (see
``contracts/iloq/wire.py``): ``bench/contract_parse.py`` times a typical create
body at 8.4-9.4 µs per call by hand and 5.9-8.0 µs through ``model_validate``,
which checks less. The Pydantic models below describe the bodies in the
OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from keyautomat.contracts.mechanical.kind import KeyInput, NewMechanicalContract
from keyautomat.contracts.model import UNSET, Contract, ContractChange
from keyautomat.contracts.model import ContractKey as StoredKey
from keyautomat.contracts.rules import (
    MAX_KEYS_PER_CONTRACT,
    MAX_PINCODE_LENGTH,
    MIN_PINCODE_LENGTH,
    check_new_period,
    check_pincode,
)
from keyautomat.contracts.wire import change_body
from keyautomat.domain import webhooks as wh
from keyautomat.domain.contact import parse_contact
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.notifications import Contact
from keyautomat.domain.times import parse_time
from keyautomat.entrypoints.api.schemas import (
    ApiModel,
    CommonContractContact,
    ContractContactInput,
    absent,
    read_only,
)

MAX_ID = 128
VERIFICATIONS = ("0", "1", "2")

# --- requests -----------------------------------------------------------------------------


def parse_verification(value: Any) -> str:
    """F3: "0"/"1"/"2" or the numbers 0/1/2; None means "0"."""
    if value is None:
        return "0"
    if isinstance(value, bool):
        raise InvalidInput("userVerification", 'must be "0", "1" or "2"')
    if isinstance(value, int) and value in (0, 1, 2):
        return str(value)
    if isinstance(value, str) and value in VERIFICATIONS:
        return value
    raise InvalidInput("userVerification", 'must be "0", "1" or "2"')


def _contact(value: Any) -> Contact:
    if value is None:
        raise InvalidInput("contact", "is required")
    if not isinstance(value, Mapping):
        raise InvalidInput("contact", "must be an object")
    contact = parse_contact(value)
    if contact is None:
        raise InvalidInput("contact", "is required")
    return contact


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(name, "must be a non-empty string")
    return value


def _key_inputs(value: Any) -> list[KeyInput]:  # noqa: PLR0912 - one rule per field
    if not isinstance(value, list) or not value:
        raise InvalidInput("keys", "must be a non-empty array")
    if len(value) > MAX_KEYS_PER_CONTRACT:
        raise InvalidInput("keys", f"must hold at most {MAX_KEYS_PER_CONTRACT} keys")
    result: list[KeyInput] = []
    for index, item in enumerate(value):
        name = f"keys.{index}"
        if not isinstance(item, Mapping):
            raise InvalidInput(name, "must be an object")
        key_id = item.get("id")
        if not isinstance(key_id, str) or not key_id:
            raise InvalidInput(f"{name}.id", "is required")
        if any(k.id == key_id for k in result):
            raise InvalidInput(f"{name}.id", "repeats a key given earlier")
        info = item.get("storageInfo")
        if info is None:
            result.append(KeyInput(key_id))
            continue
        if not isinstance(info, Mapping):
            raise InvalidInput(f"{name}.storageInfo", "must be an object")
        manual = info.get("manualStorageInfo")
        automat = info.get("automatId")
        pincode = info.get("pincode")
        if manual is not None and (automat is not None or pincode is not None):
            raise InvalidInput(
                f"{name}.storageInfo", "give automatId/pincode or manualStorageInfo, not both"
            )
        if manual is not None:
            if not isinstance(manual, str) or not manual.strip():
                raise InvalidInput(f"{name}.storageInfo.manualStorageInfo", "must not be empty")
            result.append(KeyInput(key_id, manual_info=manual, kind="manual"))
            continue
        if automat is not None and (not isinstance(automat, str) or not automat):
            raise InvalidInput(f"{name}.storageInfo.automatId", "must be a non-empty string")
        if pincode is not None:
            reason = check_pincode(pincode)
            if reason is not None:
                raise InvalidInput(f"{name}.storageInfo.pincode", reason)
        kind = "device" if automat is not None or pincode is not None else None
        result.append(KeyInput(key_id, automat_id=automat, pincode=pincode, kind=kind))
    return result


def parse_new_contract(body: Any, now: datetime) -> NewMechanicalContract:
    """The flat ``CreateMechanicalKeyContractDto`` (endpoints.md §9.3)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("body", "must be an object")
    public_id = body.get("id")
    if public_id is not None and (
        not isinstance(public_id, str)
        or not 1 <= len(public_id) <= MAX_ID
        or not public_id.isprintable()
        or "/" in public_id
    ):
        raise InvalidInput("id", "must be 1-128 printable characters without '/'")
    if body.get("start") is None:
        raise InvalidInput("start", "is required")
    start = parse_time(body["start"], "start")
    end = parse_time(body["end"], "end") if body.get("end") is not None else None
    check_new_period(start, end, now)
    contact = _contact(body.get("contact"))
    keys = _key_inputs(body.get("keys"))
    free = body.get("freeLockerAfterFetch")
    if free is not None and not isinstance(free, bool):
        raise InvalidInput("freeLockerAfterFetch", "must be a boolean")
    return NewMechanicalContract(
        public_id=public_id,
        start=start,
        end=end,
        contact=contact,
        keys=keys,
        user_verification=parse_verification(body.get("userVerification")),
        pick_up_info=_optional_text(body, "pickUpInfoForManualStorageKeys"),
        free_locker_after_fetch=bool(free),
    )


def parse_change(raw: Any) -> ContractChange:
    """``UpdateMechanicalKeyContractDto``: all optional; the contact is replaced whole."""
    body, start, end = change_body(raw)
    contact: Any = _contact(body["contact"]) if body.get("contact") is not None else UNSET
    verification = (
        parse_verification(body["userVerification"])
        if body.get("userVerification") is not None
        else None
    )
    pick_up: Any = UNSET
    if "pickUpInfoForManualStorageKeys" in body:
        pick_up = _optional_text(body, "pickUpInfoForManualStorageKeys")
    return ContractChange(
        start=start,
        end=end,
        contact=contact,
        user_verification=verification,
        pick_up_info=pick_up,
    )


# --- the bodies in the OpenAPI document ---------------------------------------------------
# In the vendor's types (docs/api.md, "The OpenAPI documents"); what the parser above
# accepts beyond them (userVerification as a number, null for an absent field) and refuses
# (rules between fields) is in docs/api.md.

UserVerification = Annotated[
    str | None,
    Field(
        description="0 none (default), 1 signature via tablet or phone, 2 strong "
        "authentication (only where enabled for the organization)"
    ),
]
PickUpInfo = Annotated[
    str | None,
    Field(
        description="Pick-up instructions for keys in manual storage, used in notifications; "
        "required for such a contract that starts in the future"
    ),
]


class KeyFromAutomatInfoInput(ApiModel):
    """The key is handed out from an automat."""

    pincode: str | None = absent(
        f"{MIN_PINCODE_LENGTH} to {MAX_PINCODE_LENGTH} ASCII digits; generated when absent"
    )
    automat_id: str | None = absent("Only to hand the key out from another automat than its own")


class KeyFromManualStorageInfoInput(ApiModel):
    """The key is handed out by staff (not together with automatId or pincode)."""

    manual_storage_info: str | None = absent(
        "Only to hand the key out from another place than its own storage"
    )


class ContractKeyInput(ApiModel):
    """A mechanical key of the contract; automat and manual-storage keys do not mix."""

    id: str
    storage_info: KeyFromManualStorageInfoInput | KeyFromAutomatInfoInput | None = absent()


class CreateMechanicalKeyContractDto(ApiModel):
    """A flat body: no `input` wrapper."""

    start: datetime
    end: datetime | None = Field(default=None, description="None: permanent")
    contact: ContractContactInput
    user_verification: UserVerification = None
    keys: list[ContractKeyInput] = Field(
        description=f"1 to {MAX_KEYS_PER_CONTRACT} keys, automat or manual-storage keys"
    )
    pick_up_info_for_manual_storage_keys: PickUpInfo = None
    free_locker_after_fetch: bool | None = Field(
        default=None,
        description="Free the locker at the fetch instead of keeping it for the contract "
        "(automat keys only); default false",
    )
    id: str | None = Field(
        default=None,
        description=f"The caller's contract id, unique in the organization; 1 to {MAX_ID} "
        "printable characters without '/'. Generated when absent",
    )


class UpdateMechanicalKeyContractDto(ApiModel):
    """Every field optional; a contact given replaces the stored one whole."""

    start: datetime | None = None
    end: datetime | None = Field(default=None, description="None: permanent")
    contact: ContractContactInput | None = None
    user_verification: UserVerification = Field(
        default=None, description="Fixed once the contract is signed or a key fetched"
    )
    pick_up_info_for_manual_storage_keys: PickUpInfo = None


# --- responses ----------------------------------------------------------------------------


class KeyFromAutomatInfo(ApiModel):
    pincode: str = Field(description='"" once the key has no usable code (docs/api.md)')
    automat_id: str


class KeyFromManualStorageInfo(ApiModel):
    manual_storage_info: str


class ContractKey(ApiModel):
    id: str
    storage_info: KeyFromManualStorageInfo | KeyFromAutomatInfo
    status: str | None = None
    in_history: bool | None = absent()


class MechanicalKeyContract(ApiModel):
    id: str
    start: datetime
    end: datetime | None
    contact: CommonContractContact | None
    keys: list[ContractKey] = read_only()
    free_locker_after_fetch: bool | None = None
    user_verification: str | None = absent()
    pick_up_info_for_manual_storage_keys: str | None = None


def _storage_info(key: StoredKey) -> dict[str, Any]:
    # Never null where the vendor's type is a string (docs/api.md): a spent or withheld
    # code is "".
    if key.in_automat:
        return {"pincode": key.pincode or "", "automatId": key.automat_id}
    return {"manualStorageInfo": key.manual_info or ""}


def to_wire(contract: Contract, contact: dict[str, Any] | None) -> dict[str, Any]:
    """``MechanicalKeyContract`` (endpoints.md §9.1)."""
    return {
        "id": contract.public_id,
        "start": wh.format_time(contract.start),
        "end": wh.format_time(contract.end) if contract.end else None,
        "contact": contact,
        "keys": [
            {
                "id": key.key_id,
                "storageInfo": _storage_info(key),
                "status": key.status,
                "inHistory": key.in_history,
            }
            for key in contract.keys
        ],
        "freeLockerAfterFetch": contract.free_locker_after_fetch,
        "userVerification": contract.user_verification,
        "pickUpInfoForManualStorageKeys": contract.pick_up_info,
    }
