"""Pieces shared by every API schema: camelCase names, strict types, UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

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

__all__ = [
    "ApiModel",
    "InputDatetime",
    "NonEmptyStr",
    "Paginated",
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
