"""The iLOQ contract's wire format (endpoints.md §3.1-3.6): requests parsed into commands,
contracts written as ``IloqKeyContract``.

Requests are parsed by hand rather than by Pydantic models, and not for speed.
``bench/contract_parse.py`` (µs per call, best of five runs of 20,000-50,000
calls, on a loaded 2-core machine), hand parser against ``model_validate`` of
the models below: create 7.3-8.7 against 5.7-7.1; PATCH of the end 1.3-2.2
against 2.0; PATCH of the contact 4.4-4.8 against 2.1-2.9. The model checks
less (no rules between fields, no email normalisation, which alone is 1.7), and
a creation costs the server 5-7 ms of CPU (docs/contracts.md): no difference
that can be measured at the API. The parser is kept because it checks the
rules of endpoints.md §3.3 in their order and names the offending field the way
the API always has (gaps.md A1: ``accessRightIds: is required``,
``keyIds.0: ...``), where the model would name ``input.1.accessRightIds`` and
state no rule between fields. The models describe the bodies in the OpenAPI
document.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from keyautomat.contracts.iloq.kind import NewIloqContract
from keyautomat.contracts.model import Contract, ContractChange
from keyautomat.contracts.rules import (
    MAX_KEYS_PER_CONTRACT,
    MAX_PINCODE_LENGTH,
    MIN_PINCODE_LENGTH,
    ContractType,
    check_new_period,
    check_pincode,
)
from keyautomat.contracts.wire import change_body
from keyautomat.domain import webhooks as wh
from keyautomat.domain.contact import parse_contact
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.iloq import check_key_id
from keyautomat.domain.notifications import Contact
from keyautomat.domain.times import parse_time
from keyautomat.entrypoints.api.schemas import (
    ApiModel,
    ContactInput,
    ContractContact,
    InputNumber,
    Number,
    absent,
    read_only,
)

# --- requests -----------------------------------------------------------------------------


def _string_list(value: Any, name: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise InvalidInput(name, "must be a non-empty array of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidInput(f"{name}.{index}", "must be a non-empty string")
    return list(value)


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(name, "must be a non-empty string")
    return value


def unwrap(body: Any) -> Mapping[str, Any]:
    """The contract fields: under ``input`` as documented, or at the top level (C1)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("input", "must be an object")
    inner = body.get("input")
    if isinstance(inner, Mapping):
        return inner
    if inner is None and "contractType" in body:
        return body
    raise InvalidInput("input", 'is required: wrap the contract in {"input": {...}}')


def parse_contact_input(value: Any) -> tuple[Contact | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        raise InvalidInput("contact", "must be an object")
    person = value.get("iloqPersonId")
    if person is not None and (not isinstance(person, str) or not person):
        raise InvalidInput("contact.iloqPersonId", "must be a non-empty string")
    return parse_contact(value), person


def parse_new_contract(body: Any, now: datetime) -> NewIloqContract:  # noqa: PLR0912, PLR0915
    # One rule after another, in the order of endpoints.md §3.3; splitting it would scatter them.
    data = unwrap(body)
    raw_type = data.get("contractType")
    if isinstance(raw_type, bool) or raw_type not in (1, 2, 3):
        raise InvalidInput("contractType", "must be 1 (default), 2 (fetch) or 3 (return)")
    ctype = ContractType(raw_type)
    returning = ctype is ContractType.RETURN

    access_right_ids = None
    if not returning:  # return contracts carry none (C3)
        if data.get("accessRightIds") is None:
            raise InvalidInput("accessRightIds", "is required")
        access_right_ids = _string_list(data["accessRightIds"], "accessRightIds")

    if data.get("start") is None:
        if not returning:
            raise InvalidInput("start", "is required")
        start = now  # return contracts start now unless told otherwise
    else:
        start = parse_time(data["start"], "start")

    end = None
    if ctype is ContractType.DEFAULT:
        if data.get("end") is None:
            raise InvalidInput("end", "is required for default contracts")
        end = parse_time(data["end"], "end")
    elif returning and data.get("end") is not None:  # optional deadline (C2); fetch: ignored (C3)
        end = parse_time(data["end"], "end")
    check_new_period(start, end, now)

    key_ids = None
    if data.get("keyIds") is not None:
        key_ids = _string_list(data["keyIds"], "keyIds")
        if len(key_ids) > MAX_KEYS_PER_CONTRACT:
            raise InvalidInput("keyIds", f"must hold at most {MAX_KEYS_PER_CONTRACT} key ids")
        for index, key_id in enumerate(key_ids):
            check_key_id(key_id, f"keyIds.{index}")
            if key_id in key_ids[:index]:
                raise InvalidInput(f"keyIds.{index}", "repeats a key id given earlier")
    elif returning:
        raise InvalidInput("keyIds", "is required for return contracts")
    key_automat_id = _optional_str(data, "keyAutomatId")
    group_id = _optional_str(data, "groupId")

    number_of_keys = None
    if not returning:
        raw_number = data.get("numberOfKeys")
        if raw_number is not None:
            if (
                isinstance(raw_number, bool)
                or not isinstance(raw_number, int)
                or not 1 <= raw_number <= MAX_KEYS_PER_CONTRACT
            ):
                raise InvalidInput(
                    "numberOfKeys", f"must be an integer from 1 to {MAX_KEYS_PER_CONTRACT}"
                )
            number_of_keys = raw_number
        if key_ids is not None:
            if number_of_keys is not None and number_of_keys != len(key_ids):
                raise InvalidInput("numberOfKeys", "must equal the number of keyIds")
        elif key_automat_id is not None or group_id is not None:
            if number_of_keys is None:
                raise InvalidInput("numberOfKeys", "is required with keyAutomatId or groupId")
        else:
            raise InvalidInput("keyAutomatId", "one of keyIds, keyAutomatId or groupId is required")
    elif key_automat_id is None and group_id is None:
        raise InvalidInput("keyAutomatId", "a return contract needs keyAutomatId or groupId")

    count = len(key_ids) if key_ids is not None else (number_of_keys or 0)
    pincodes = None
    if data.get("pincodes") is not None:
        pincodes = _string_list(data["pincodes"], "pincodes", allow_empty=True)
        if len(pincodes) != count:
            raise InvalidInput("pincodes", f"must hold one pincode per key ({count})")
        for index, code in enumerate(pincodes):
            reason = check_pincode(code)
            if reason is not None:
                raise InvalidInput(f"pincodes.{index}", reason)

    contact, person = parse_contact_input(data.get("contact"))
    return NewIloqContract(
        contract_type=ctype,
        start=start,
        end=end,
        access_right_ids=access_right_ids,
        number_of_keys=number_of_keys,
        key_ids=key_ids,
        key_automat_id=key_automat_id,
        group_id=group_id,
        pincodes=pincodes,
        contact=contact,
        iloq_person_id=person,
    )


def parse_change(raw: Any) -> ContractChange:
    body, start, end = change_body(raw)
    if "contact" not in body:
        return ContractChange(start=start, end=end)
    contact, person = parse_contact_input(body["contact"])
    return ContractChange(start=start, end=end, contact=contact, iloq_person_id=person)


# --- the bodies in the OpenAPI document ---------------------------------------------------
# In the vendor's types (docs/api.md, "The OpenAPI documents"): `input` is the one
# HandoverIloqKeyBaseDto, and the three per-type schemas are listed beside it. What the
# parser above accepts beyond them (no `end` on a return contract, the fields unwrapped,
# null for an absent field) and refuses (a rule between fields) is in docs/api.md.

ContractTypeNumber = Annotated[InputNumber, Field(description="1 default, 2 fetch, 3 return")]
AccessRightIds = Annotated[
    list[str], Field(description="iLOQ access rights programmed into the key at the fetch")
]
StartTime = Annotated[datetime, Field(description="Start of validity")]
EndTime = Annotated[datetime, Field(description="End of validity, or the return deadline")]


class _Common(ApiModel):
    contract_type: ContractTypeNumber
    contact: ContactInput | None = absent()
    pincodes: list[str] | None = absent(
        f"One per key, in key order, {MIN_PINCODE_LENGTH} to {MAX_PINCODE_LENGTH} ASCII "
        "digits; random codes when absent"
    )
    group_id: str | None = absent("A group: the most suitable automat in it is chosen")
    key_automat_id: str | None = absent("The automat to use (pick-up or drop-off place)")


class _Handover(_Common):
    access_right_ids: AccessRightIds
    number_of_keys: Number | None = absent(
        f"How many keys (1-{MAX_KEYS_PER_CONTRACT}); required with keyAutomatId or groupId"
    )
    key_ids: list[str] | None = absent(
        "iLOQ key ids: the keys to hand over (the location method for key-management systems)"
    )
    start: StartTime


class DefaultKeyContractDto(_Handover):
    """A key handed over for a period (contractType 1)."""

    end: EndTime


class FetchKeyContractDto(_Handover):
    """A key handed over for good (contractType 2): no end, the locker is freed at the fetch."""


class ReturnKeyContractDto(_Common):
    """Keys brought back to an automat (contractType 3); unknown key ids are registered."""

    end: EndTime
    key_ids: Annotated[list[str], Field(description="The keys to return")]
    start: StartTime | None = absent("Default: now")


class HandoverIloqKeyBaseDto(_Handover):
    """The contract under `input`, whatever its type (the vendor's union of the three)."""

    end: EndTime


class CreateIloqKeyContractDto(ApiModel):
    """`{"input": {...}}`; the contract's fields are also accepted unwrapped."""

    input: HandoverIloqKeyBaseDto


class UpdateIloqContractDto(ApiModel):
    """Only the period and the contact change after creation; a null end removes the end
    where the contract type allows."""

    contact: ContactInput | None = absent()
    start: StartTime | None = absent()
    end: EndTime | None = absent()


# The request schemas the document lists (the per-type ones are referenced by no operation).
DOCUMENTED = (
    CreateIloqKeyContractDto,
    UpdateIloqContractDto,
    DefaultKeyContractDto,
    FetchKeyContractDto,
    ReturnKeyContractDto,
)


# --- responses ----------------------------------------------------------------------------


class IloqContractKeyStorageInfo(ApiModel):
    device_id: str
    pincode: str | None = Field(description="Null once the key is no longer usable for it")


class IloqContractKey(ApiModel):
    id: str
    status: str | None
    storage_info: IloqContractKeyStorageInfo
    in_history: bool | None = absent()


class IloqKeyContract(ApiModel):
    id: str
    access_right_ids: list[str] | None = read_only()
    start: datetime
    end: datetime | None
    contact: ContractContact | None
    keys: list[IloqContractKey] = read_only()
    number_of_keys: Number | None
    key_ids: list[str] | None = read_only()
    key_automat_id: str | None
    group_id: str | None
    contract_type: Number


def to_wire(contract: Contract, contact: dict[str, Any] | None) -> dict[str, Any]:
    """``IloqKeyContract`` (endpoints.md §3.1); ``contact`` as ``contact_response`` wrote it."""
    request = contract.request
    if contact is not None:
        contact["iloqPersonId"] = contract.iloq_person_id
    returning = contract.contract_type is ContractType.RETURN
    return {
        "id": contract.id,
        "accessRightIds": None if returning else request.get("accessRightIds"),
        "start": wh.format_time(contract.start),
        "end": wh.format_time(contract.end) if contract.end else None,
        "contact": contact,
        "keys": [
            {
                "id": key.key_id,
                "status": key.status,
                "storageInfo": {"deviceId": key.automat_id, "pincode": key.pincode},
                "inHistory": key.in_history,
            }
            for key in contract.keys
        ],
        "numberOfKeys": None if returning else request.get("numberOfKeys"),
        "keyIds": request.get("keyIds"),
        "keyAutomatId": request.get("keyAutomatId"),
        "groupId": request.get("groupId"),
        "contractType": int(contract.contract_type),
    }
