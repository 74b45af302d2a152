"""Offset pagination as spec/gaps.md A2 decides: ``after`` is an offset, ``limit`` ≤ 100."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from keyautomat.domain.errors import InvalidInput

T = TypeVar("T")
# Offsets stay far below the 64-bit limit of both engines' LIMIT/OFFSET.
_ASCII_DIGITS = re.compile(r"[0-9]{1,15}")
_SIGNED_INT = re.compile(r"[+-]?[0-9]{1,15}")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class PageRequest:
    offset: int = 0
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(cls, after: str | None, limit: str | None) -> PageRequest:
        offset = 0
        if after not in (None, ""):
            if not _ASCII_DIGITS.fullmatch(after):
                raise InvalidInput("after", "must be a non-negative integer (items to skip)")
            offset = int(after)
        size = DEFAULT_LIMIT
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
