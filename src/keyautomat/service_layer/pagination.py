"""Offset pagination as spec/gaps.md A2 decides: ``after`` is an offset, ``limit`` ≤ 100."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.text import is_ascii_digits

T = TypeVar("T")
# Offsets stay far below the 64-bit limit of both engines' LIMIT/OFFSET.
MAX_URL_DIGITS = 15
_SIGNED_INT = re.compile(r"[+-]?[0-9]{1,15}")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def small_natural(value: str) -> int | None:
    """``value`` as a non-negative integer of at most 15 ASCII digits, else None.

    The one parser of numbers that arrive as URL text (offsets, ids of the last row
    seen, numeric path ids): ``str.isdigit`` would also pass ``²`` and numbers that
    overflow the database's integers.
    """
    return int(value) if len(value) <= MAX_URL_DIGITS and is_ascii_digits(value) else None


@dataclass(frozen=True, slots=True)
class PageRequest:
    """``offset`` is the number of items to skip, or for keyset lists the id of the last
    item seen; either way the same bounded number."""

    offset: int = 0
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(
        cls, after: str | None, limit: str | None, *, default_limit: int = DEFAULT_LIMIT
    ) -> PageRequest:
        offset = 0
        if after not in (None, ""):
            number = small_natural(after)
            if number is None:
                raise InvalidInput("after", "must be a non-negative integer (items to skip)")
            offset = number
        size = default_limit
        if limit not in (None, ""):
            if not _SIGNED_INT.fullmatch(limit):
                raise InvalidInput("limit", "must be an integer")
            size = int(limit)
            if size < 1:
                raise InvalidInput("limit", "must be at least 1")
            size = min(size, MAX_LIMIT)
        return cls(offset, size)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_offset: int
    limit: int
    has_next: bool


def fetch_page(session: Session, stmt: Select[Any], page: PageRequest) -> Page[Any]:
    """Run ``stmt`` (already ordered) for one page, looking one row ahead for ``hasNext``."""
    rows = session.scalars(stmt.offset(page.offset).limit(page.limit + 1)).all()
    has_next = len(rows) > page.limit
    items = rows[: page.limit]
    return Page(items, page.offset + len(items), page.limit, has_next)
