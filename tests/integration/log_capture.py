"""Logging as a keyautomat process sets it up, captured for a test."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from keyautomat.logs import HELD_AT_WARNING, configure_logging


class Records(logging.Handler):
    """Every record the server makes, kept as it was made: those of the test's own thread
    (the test client's) are left out; the app runs on the client's portal thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()
        self._test_thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._test_thread:
            return
        with self._lock:
            self.records.append(record)

    def taken(self) -> list[logging.LogRecord]:
        """The records so far, and a clean slate."""
        with self._lock:
            taken, self.records = self.records, []
        return taken


@dataclass
class Captured:
    records: Records
    output: io.StringIO = field(default_factory=io.StringIO)

    def text(self) -> str:
        """Everything the process's own handler wrote (JSON lines)."""
        return self.output.getvalue()


@contextmanager
def captured_logs(level: str = "debug") -> Iterator[Captured]:
    """``configure_logging`` at ``level`` in JSON into a buffer, plus every record; the
    logging set-up as it was afterwards."""
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    held = {name: logging.getLogger(name).level for name in (*HELD_AT_WARNING, "sqlalchemy.engine")}
    captured = Captured(Records())
    configure_logging(log_format="json", level=level, stream=captured.output)
    root.addHandler(captured.records)
    try:
        yield captured
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, held_level in held.items():
            logging.getLogger(name).setLevel(held_level)
