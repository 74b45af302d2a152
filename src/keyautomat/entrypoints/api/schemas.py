"""Pieces shared by every API schema: camelCase names, strict types, UTC timestamps."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
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
    "InputDatetime",
    "NonEmptyStr",
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


# --- contacts of contracts (endpoints.md §2) ------------------------------------------------
# Contract bodies are parsed by hand (contracts/*/wire.py); these models describe them in
# the OpenAPI document, with the rules a JSON schema can state.


class NotificationChannelDto(ApiModel):
    """One event's channels; a channel omitted or null counts as false."""

    sms: StrictBool | None = None
    email: StrictBool | None = None


class ContactNotificationsDto(ApiModel):
    """The contact's own matrix: when present, events not listed send nothing, and
    `sendSms`/`sendEmail` are ignored. Unknown event names are ignored."""

    contract_key_fetched: NotificationChannelDto | None = None
    contract_key_returned: NotificationChannelDto | None = None
    contract_created: NotificationChannelDto | None = None
    contract_start_reminder: NotificationChannelDto | None = None
    contract_end_reminder: NotificationChannelDto | None = None
    contract_keys_not_returned: NotificationChannelDto | None = None
    contract_updated: NotificationChannelDto | None = None
    contract_signature_requested: NotificationChannelDto | None = None


class ContractContactInput(ApiModel):
    """The recipient of a contract's notifications (mechanical contracts)."""

    name: NonEmptyStr
    email: StrictStr | None = None
    phone_number: StrictStr | None = Field(
        default=None, description="International format, e.g. +358401234567"
    )
    send_sms: StrictBool | None = None
    send_email: StrictBool | None = None
    language: Language | None = Field(default=None, description="Default: en")
    notifications: ContactNotificationsDto | None = None


class ContactInput(ContractContactInput):
    """The recipient of a contract's notifications (iLOQ contracts)."""

    iloq_person_id: NonEmptyStr | None = Field(
        default=None, description="The person's id in the iLOQ system"
    )


class NotificationChannel(ApiModel):
    sms: bool
    email: bool


class ContactNotifications(ApiModel):
    """The effective matrix: every event, both channels."""

    contract_key_fetched: NotificationChannel
    contract_key_returned: NotificationChannel
    contract_created: NotificationChannel
    contract_start_reminder: NotificationChannel
    contract_end_reminder: NotificationChannel
    contract_keys_not_returned: NotificationChannel
    contract_updated: NotificationChannel
    contract_signature_requested: NotificationChannel


class CommonContractContact(ApiModel):
    """A contract's contact as answered (mechanical contracts)."""

    name: str
    email: str | None
    phone_number: str | None
    send_sms: bool
    send_email: bool
    language: Language | None
    notifications: ContactNotifications


class ContractContact(CommonContractContact):
    """A contract's contact as answered (iLOQ contracts)."""

    iloq_person_id: str | None
