"""Pieces shared by every API schema: camelCase names, strict types, UTC timestamps."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from fastapi import Query
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError
from starlette.responses import JSONResponse, Response

from keyautomat.contracts.rules import MAX_PINCODE_LENGTH, MIN_PINCODE_LENGTH
from keyautomat.domain.text import printable
from keyautomat.domain.times import format_utc, time_problem
from keyautomat.service_layer.pagination import Page

T = TypeVar("T")


def _input_time(value: datetime) -> datetime:
    reason = time_problem(value)
    if reason is not None:
        raise PydanticCustomError("datetime_range", reason)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, PlainSerializer(format_utc, return_type=str)]
InputDatetime = Annotated[datetime, AfterValidator(_input_time)]
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
Pincode = Annotated[
    StrictStr, Field(pattern=f"^[0-9]{{{MIN_PINCODE_LENGTH},{MAX_PINCODE_LENGTH}}}$")
]
Language = Literal["en", "fi", "sv", "de", "no", "fr"]

__all__ = [
    "ApiModel",
    "CommonContractContact",
    "ContactInput",
    "ContractContact",
    "ContractContactInput",
    "ErrorResponse",
    "InputDatetime",
    "InputNumber",
    "NonEmptyStr",
    "Number",
    "PageAfter",
    "PageLimit",
    "Paginated",
    "Pincode",
    "StrictBool",
    "StrictInt",
    "StrictStr",
    "UtcDatetime",
]


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


def encode_json(payload: Any) -> bytes:
    """The JSON of a response; text that cannot be UTF-8 (a lone surrogate read back
    from a stored row) is written with U+FFFD instead of failing the response."""
    try:
        return orjson.dumps(payload)
    except TypeError:
        return orjson.dumps(_printable(payload))


class SafeJSONResponse(JSONResponse):
    """The response class of every route and error: renders through ``encode_json``."""

    def render(self, content: Any) -> bytes:
        return encode_json(content)


def json_response(payload: Any, status_code: int = 200) -> Response:
    """Serialise an already wire-shaped payload once, skipping response-model validation.

    Hot read paths build their JSON from plain rows; the route still declares its
    ``response_model`` so the OpenAPI document describes the shape.
    """
    return Response(
        content=encode_json(payload), status_code=status_code, media_type="application/json"
    )


def page_payload(page: Page[Any], data: list[Any]) -> dict[str, Any]:
    return {
        "after": str(page.next_offset),
        "limit": page.limit,
        "hasNext": page.has_next,
        "data": data,
    }


SCHEMA_REF = "#/components/schemas/{model}"


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that parses its raw JSON body itself: the document
    shows ``model`` as the body. The app adds the model to the components
    (:func:`component_schemas`)."""
    schema = {"$ref": SCHEMA_REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def component_schemas(models: Iterable[type[BaseModel]]) -> dict[str, Any]:
    """The request JSON schemas of ``models`` and of the models they nest, by name."""
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=SCHEMA_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


class ApiModel(BaseModel):
    """Base of request and response bodies: camelCase on the wire, unknown properties ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
    )


class Paginated(ApiModel, Generic[T]):
    """``{after, limit, hasNext, data}`` at the top level (spec endpoints §2.5, gaps A2)."""

    after: str
    limit: int
    has_next: bool
    data: list[T]

    @classmethod
    def of(cls, page: Page[Any], data: list[T]) -> Paginated[T]:
        return cls(after=str(page.next_offset), limit=page.limit, has_next=page.has_next, data=data)


# --- what the V2 document says where it is not what a model validates ---------------------
# The V2 document states the vendor's types (docs/api.md, "The OpenAPI documents"). Where a
# model validates otherwise (an integer where the vendor says number, null accepted for an
# absent field), the field says so with one of these, and docs/api.md gives the reason.

Number = Annotated[int, WithJsonSchema({"type": "number"})]
InputNumber = Annotated[StrictInt, WithJsonSchema({"type": "number"})]
# Read as text and parsed by ``PageRequest.parse``, so that a bad value is a 400 in the one
# error shape; documented as the vendor's number.
PageLimit = Annotated[
    str | None,
    Query(description="Items to return: 1 to 100 (more is taken as 100), default 20"),
    WithJsonSchema({"type": "number"}),
]
PageAfter = Annotated[
    str | None, Query(description="Items to skip: the `after` of the previous page")
]


def _without_null(schema: dict[str, Any]) -> None:
    options = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    elif options:
        schema["anyOf"] = options
    schema.pop("default", None)


def absent(description: str | None = None) -> Any:
    """An optional field the document shows without null: null is taken as absent."""
    return Field(default=None, description=description, json_schema_extra=_without_null)


def read_only(description: str | None = None) -> Any:
    """An array the vendor's document marks read-only (``readonly T[]`` in TypeScript)."""
    return Field(description=description, json_schema_extra={"readOnly": True})


class ErrorResponse(BaseModel):
    """The one error shape (spec gaps.md A1) of every 4xx and 5xx answer."""

    statusCode: Number  # noqa: N815 - the wire name
    message: str | list[str] = Field(
        description="One text, or one text per offending field (`<field path>: <reason>`)"
    )
    error: str = Field(description="The status's reason phrase, e.g. Bad Request")


# --- contacts of contracts (endpoints.md §2) ------------------------------------------------
# Contract bodies are parsed by hand (contracts/*/wire.py); these models describe them in
# the OpenAPI document, in the vendor's types; the parser's rules are in docs/api.md.


class NotificationChannelDto(ApiModel):
    """One event's channels; on input a channel omitted counts as false."""

    sms: bool
    email: bool


class ContactNotificationsDto(ApiModel):
    """In a request, the contact's own matrix: when present, events not listed send
    nothing, and `sendSms`/`sendEmail` are ignored. In a response, the effective matrix:
    every event, both channels."""

    contract_key_fetched: NotificationChannelDto | None = absent()
    contract_key_returned: NotificationChannelDto | None = absent()
    contract_created: NotificationChannelDto | None = absent()
    contract_start_reminder: NotificationChannelDto | None = absent()
    contract_end_reminder: NotificationChannelDto | None = absent()
    contract_keys_not_returned: NotificationChannelDto | None = absent()
    contract_updated: NotificationChannelDto | None = absent()
    contract_signature_requested: NotificationChannelDto | None = absent()


class ContractContactInput(ApiModel):
    """The recipient of a contract's notifications (mechanical contracts)."""

    name: str
    email: str | None = absent()
    phone_number: str | None = absent(
        "International format, e.g. +358401234567; any form when the contact asks for no SMS"
    )
    send_sms: bool | None = absent()
    send_email: bool | None = absent()
    language: Language = "en"
    notifications: ContactNotificationsDto | None = absent()


class ContactInput(ContractContactInput):
    """The recipient of a contract's notifications (iLOQ contracts)."""

    iloq_person_id: str | None = absent("The person's id in the iLOQ system")


class CommonContractContact(ApiModel):
    """A contract's contact as answered (mechanical contracts)."""

    name: str
    email: str | None
    phone_number: str | None
    send_sms: bool
    send_email: bool
    language: Language | None
    notifications: ContactNotificationsDto


class ContractContact(CommonContractContact):
    """A contract's contact as answered (iLOQ contracts)."""

    iloq_person_id: str | None
