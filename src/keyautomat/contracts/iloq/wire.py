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
from typing import Annotated, Any, Literal

from pydantic import Field

from keyautomat.contracts.iloq.kind import NewIloqContract
from keyautomat.contracts.model import Contract, ContractChange
from keyautomat.contracts.rules import (
    MAX_KEYS_PER_CONTRACT,
    ContractType,
    check_new_period,
    check_pincode,
)
from keyautomat.contracts.wire import change_body
from keyautomat.domain import webhooks as wh
from keyautomat.domain.contact import parse_contact
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.iloq import KEY_ID_PATTERN, check_key_id
from keyautomat.domain.notifications import Contact
from keyautomat.domain.times import parse_time
from keyautomat.entrypoints.api.schemas import (
    ApiModel,
    ContactInput,
    ContractContact,
    InputDatetime,
    NonEmptyStr,
    Pincode,
    StrictInt,
    StrictStr,
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


# --- the request bodies in the OpenAPI document --------------------------------------------
# The models state what a JSON schema can; the rules between fields (one location method,
# numberOfKeys with keyAutomatId or groupId, one pincode per key) are in the descriptions.

KeyId = Annotated[StrictStr, Field(pattern=KEY_ID_PATTERN)]
AccessRightIds = Annotated[list[NonEmptyStr], Field(min_length=1)]
KeyIds = Annotated[
    list[KeyId],
    Field(
        min_length=1,
        max_length=MAX_KEYS_PER_CONTRACT,
        json_schema_extra={"uniqueItems": True},
        description="iLOQ key ids: the keys to hand over (the location method for "
        "key-management systems), or the keys to return",
    ),
]
NumberOfKeys = Annotated[
    StrictInt,
    Field(
        ge=1,
        le=MAX_KEYS_PER_CONTRACT,
        description="How many keys; required with keyAutomatId or groupId, equal to the "
        "number of keyIds with keyIds",
    ),
]
Pincodes = Annotated[
    list[Pincode],
    Field(description="One per key, in key order; random codes when absent"),
]


class _Location(ApiModel):
    key_automat_id: NonEmptyStr | None = Field(
        default=None, description="The automat to use (pick-up or drop-off place)"
    )
    group_id: NonEmptyStr | None = Field(
        default=None, description="A group: the most suitable automat in it is chosen"
    )
    pincodes: Pincodes | None = None
    contact: ContactInput | None = None


class DefaultKeyContractDto(_Location):
    """A key handed over for a period (contractType 1); exactly one of keyIds,
    keyAutomatId and groupId says where."""

    contract_type: Literal[1]
    access_right_ids: AccessRightIds
    start: InputDatetime
    end: InputDatetime
    number_of_keys: NumberOfKeys | None = None
    key_ids: KeyIds | None = None


class FetchKeyContractDto(_Location):
    """A key handed over for good (contractType 2): no end, the locker is freed at the
    fetch; exactly one of keyIds, keyAutomatId and groupId says where."""

    contract_type: Literal[2]
    access_right_ids: AccessRightIds
    start: InputDatetime
    number_of_keys: NumberOfKeys | None = None
    key_ids: KeyIds | None = None


class ReturnKeyContractDto(_Location):
    """Keys brought back to an automat (contractType 3): keyIds plus keyAutomatId or
    groupId; unknown key ids are registered."""

    contract_type: Literal[3]
    key_ids: KeyIds
    start: InputDatetime | None = Field(default=None, description="Default: now")
    end: InputDatetime | None = Field(default=None, description="The return deadline, if any")


def _without_discriminator(schema: dict[str, Any]) -> None:
    # OpenAPI's discriminator maps string values and contractType is a number: clients
    # (and schemathesis) misread the mapping. Each branch's const says the same.
    del schema["discriminator"]


IloqKeyContractInput = Annotated[
    DefaultKeyContractDto | FetchKeyContractDto | ReturnKeyContractDto,
    Field(discriminator="contract_type", json_schema_extra=_without_discriminator),
]


class CreateIloqKeyContractDto(ApiModel):
    """`{"input": {...}}`; the contract's fields are also accepted unwrapped."""

    input: IloqKeyContractInput


class UpdateIloqContractDto(ApiModel):
    """Only the period and the contact change after creation; a null end removes the end
    where the contract type allows."""

    contact: ContactInput | None = None
    start: InputDatetime | None = None
    end: InputDatetime | None = None


# --- responses ----------------------------------------------------------------------------


class IloqContractKeyStorageInfo(ApiModel):
    device_id: str | None
    pincode: str | None


class IloqContractKey(ApiModel):
    id: str
    status: str | None
    storage_info: IloqContractKeyStorageInfo
    in_history: bool


class IloqKeyContract(ApiModel):
    id: str
    access_right_ids: list[str] | None
    start: str
    end: str | None
    contact: ContractContact | None
    keys: list[IloqContractKey]
    number_of_keys: int | None
    key_ids: list[str] | None
    key_automat_id: str | None
    group_id: str | None
    contract_type: int


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
