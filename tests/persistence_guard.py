"""Watch which tables each transaction writes, and how (docs/persistence.md).

A write is **ORM** when a flush inserts, changes or deletes a mapped object,
and **Core** when ``session.execute`` runs an INSERT, UPDATE or DELETE
statement, or a hot one runs on the driver's cursor (adapters/db.py,
``Statements``). :class:`WriteGuard` records both per session transaction and notes
a violation when a transaction writes a table both ways, or a table is written
in a style other than the one ``docs/persistence.md`` declares for it.

The declared style binds the application, not the tests: a test may seed rows
with whatever statement is shortest. Its writes still count when the same
transaction also writes the table the other way.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy
from sqlalchemy import Engine, event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction

from keyautomat.adapters.db import PlainContext

Style = Literal["ORM", "Core"]

TESTS = Path(__file__).resolve().parent
DOC = TESTS.parent / "docs" / "persistence.md"
_LIBRARY = str(Path(sqlalchemy.__file__).resolve().parent)
_ROW = re.compile(r"^\| `(?P<table>\w+)` \| (?P<style>ORM|Core) \|", re.MULTILINE)


def declared_styles(doc: Path = DOC) -> dict[str, Style]:
    """The style of each table, as the table in docs/persistence.md declares it."""
    styles: dict[str, Style] = {}
    for match in _ROW.finditer(doc.read_text(encoding="utf-8")):
        table, style = match["table"], match["style"]
        assert table not in styles, f"docs/persistence.md lists {table} twice"
        styles[table] = "ORM" if style == "ORM" else "Core"
    return styles


def _issuer() -> str:
    """The file of the code that asked SQLAlchemy for the write."""
    frame = sys._getframe(1)
    while frame.f_back is not None and (
        frame.f_code.co_filename == __file__ or frame.f_code.co_filename.startswith(_LIBRARY)
    ):
        frame = frame.f_back
    return frame.f_code.co_filename


@dataclass
class _Transaction:
    written: dict[str, set[Style]] = field(default_factory=dict)


@dataclass
class WriteGuard:
    """Collects violations of the persistence rule while :meth:`watching`."""

    styles: Mapping[str, Style]
    # (table, style) -> why this exception is tolerated for now.
    tolerated: Mapping[tuple[str, Style], str] = field(default_factory=dict)
    # Writes issued by code under this folder are not held to the declared style.
    exempt: Path | None = TESTS
    violations: list[str] = field(default_factory=list)
    _open: dict[int, _Transaction] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def _wrote(self, session: Session, table: str, style: Style) -> None:
        with self._lock:
            written = self._open.setdefault(id(session), _Transaction()).written
            seen = written.setdefault(table, set())
            if style not in seen and seen:
                self._note(f"{table} written through the ORM and with Core at once")
            seen.add(style)
        declared = self.styles.get(table)
        if declared is None:
            self._note(f"{table} has no style in docs/persistence.md")
        elif style != declared and not self._excused(table, style):
            self._note(f"{table} written with {style}; its style is {declared}")

    def _note(self, violation: str) -> None:
        with self._lock:
            if violation not in self.violations:
                self.violations.append(violation)

    def _excused(self, table: str, style: Style) -> bool:
        if (table, style) in self.tolerated:
            return True
        return self.exempt is not None and Path(_issuer()).is_relative_to(self.exempt)

    def _on_execute(self, state: ORMExecuteState) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            table = state.statement.table  # type: ignore[attr-defined]
            self._wrote(state.session, str(table.name), "Core")

    def _on_plain(self, *args: Any) -> None:
        # before_cursor_execute: (connection, cursor, sql, parameters, context, many)
        context = args[4]
        if isinstance(context, PlainContext) and context.statement.is_dml:
            self._wrote(context.session, str(context.statement.table.name), "Core")

    def _on_flush(self, session: Session, _flush: UOWTransaction) -> None:
        # after_flush still shows what the flush wrote in new / dirty / deleted.
        changed = [*session.new, *session.deleted]
        changed += [obj for obj in session.dirty if session.is_modified(obj)]
        for obj in changed:
            self._wrote(session, str(inspect(obj).mapper.local_table.name), "ORM")

    def _on_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:  # the outermost transaction: a new one starts afresh
            with self._lock:
                self._open.pop(id(session), None)

    @contextmanager
    def watching(self) -> Iterator[WriteGuard]:
        listeners: list[tuple[str, Any]] = [
            ("do_orm_execute", self._on_execute),
            ("after_flush", self._on_flush),
            ("after_transaction_end", self._on_end),
        ]
        for name, listener in listeners:
            event.listen(Session, name, listener)
        # Hot statements run on the driver's cursor (adapters/db.py, Statements), not
        # through session.execute: their writes are heard here.
        event.listen(Engine, "before_cursor_execute", self._on_plain)
        try:
            yield self
        finally:
            for name, listener in listeners:
                event.remove(Session, name, listener)
            event.remove(Engine, "before_cursor_execute", self._on_plain)
