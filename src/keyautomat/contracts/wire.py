"""Wire helpers every contract kind's ``wire`` and ``routes`` modules share."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query

from keyautomat.contracts.model import UNSET, ListFilters
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.times import parse_time


def change_body(body: Any) -> tuple[Mapping[str, Any], datetime | None, Any]:
    """A PATCH body's object, its ``start`` (None: unchanged) and ``end`` (UNSET: unchanged,
    None: removed)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("body", "must be an object")
    start = parse_time(body["start"], "start") if body.get("start") is not None else None
    end: Any = UNSET
    if "end" in body:
        end = None if body["end"] is None else parse_time(body["end"], "end")
    return body, start, end


async def period_filters(
    ongoing: Annotated[bool | None, Query()] = None,
    ended: Annotated[bool | None, Query()] = None,
    future: Annotated[bool | None, Query()] = None,
) -> ListFilters:
    # async: a plain def dependency would cost a worker-thread round trip per request
    return ListFilters(ongoing=ongoing, ended=ended, future=future)


# The list filters of gaps.md C14, as query parameters.
PeriodFilters = Annotated[ListFilters, Depends(period_filters)]
