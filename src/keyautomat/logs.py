"""The logging of every keyautomat process, set up here and nowhere else (docs/operations.md).

``configure_logging`` gives the root logger one handler on standard error: readable
lines, or one JSON object per line (``KEYAUTOMAT_LOG_FORMAT=json``). Every record is
stamped, where it is created, with the request it belongs to: the API's edge sets
:data:`REQUEST_ID` for each request and the signing middleware
:data:`SERVICE_ACCOUNT_ID` once the caller is known. Both are context variables, so
they follow the request into the database thread (``Database.run`` copies the
context), into tasks it starts, and into the device gateway's work for it.

What must never reach a log (pincodes, tokens, signatures, names, email addresses,
phone numbers) is kept out at each call site; here two libraries that would print
such values are held at WARNING whatever the level: SQLAlchemy's engine logs
statements and result rows at INFO and DEBUG, and httpx logs each URL it requests
(a webhook or SMS gateway URL may carry a token in its query).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from keyautomat.domain.times import format_utc

REQUEST_ID: ContextVar[str | None] = ContextVar("keyautomat_request_id", default=None)
"""The id of the HTTP request being handled, or None outside a request."""

SERVICE_ACCOUNT_ID: ContextVar[str | None] = ContextVar(
    "keyautomat_service_account_id", default=None
)
"""The service account whose signature the request being handled carries."""

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID = 128

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Whatever the level, these stay at WARNING (see the module's docstring).
HELD_AT_WARNING = ("sqlalchemy", "httpx", "httpcore")


def new_request_id() -> str:
    """32 random hex digits (``os.urandom``: a third of what ``uuid4().hex`` costs)."""
    return os.urandom(16).hex()


def accepted_request_id(value: bytes | None) -> str:
    """The client's ``X-Request-Id`` when it is 1-128 visible ASCII characters, else a new id.

    Visible ASCII only (no space, no control character): the id is echoed in a
    response header and written into every log line of the request, where a line
    break or an escape sequence must not get in.
    """
    if value and len(value) <= MAX_REQUEST_ID and all(0x21 <= byte <= 0x7E for byte in value):
        return value.decode("ascii")
    return new_request_id()


def install_record_factory() -> None:
    """Stamp every log record with the request and service account of its context.

    Done when the record is made, on the thread that logs, so that every handler
    sees the stamp, whichever thread it later runs on. Installing twice is harmless.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "keyautomat", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        record.service_account_id = SERVICE_ACCOUNT_ID.get()
        return record

    factory.keyautomat = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def request_id_of(record: logging.LogRecord) -> str | None:
    """The request a record was made in (stamped by :func:`install_record_factory`)."""
    value = getattr(record, "request_id", None)
    return value if isinstance(value, str) else None


def service_account_of(record: logging.LogRecord) -> str | None:
    """The service account whose request a record was made in."""
    value = getattr(record, "service_account_id", None)
    return value if isinstance(value, str) else None


def _when(record: logging.LogRecord) -> str:
    return format_utc(datetime.fromtimestamp(record.created, UTC))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and when known requestId,
    serviceAccountId, process, exception."""

    def __init__(self, role: str | None = None) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _when(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_of(record)
        if request_id is not None:
            line["requestId"] = request_id
        account_id = service_account_of(record)
        if account_id is not None:
            line["serviceAccountId"] = account_id
        if self.role is not None:
            line["process"] = self.role
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> [request=<id> account=<id>] <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        context = []
        request_id = request_id_of(record)
        if request_id is not None:
            context.append(f"request={request_id}")
        account_id = service_account_of(record)
        if account_id is not None:
            context.append(f"account={account_id}")
        where = f" [{' '.join(context)}]" if context else ""
        line = f"{_when(record)} {record.levelname} {record.name}{where} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure_logging`` installs (and replaces when called again).

    Without a stream of its own it writes to whatever ``sys.stderr`` is when a record
    comes: a test runner swaps standard error per test and closes the old one, and a
    thread logging later must not write to a closed file."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._follows_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follows_stderr:
            self.stream = sys.stderr
        super().emit(record)


def configure_logging(
    *,
    log_format: str = "text",
    level: str = "info",
    role: str | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record at ``level`` and above to ``stream`` (standard error) in
    ``log_format`` ("text" or "json"); ``role`` names the process in JSON lines.

    Called once at the start of each command. Handlers that others added to the
    root logger (a test runner's) are left alone; one this function added before
    is replaced. uvicorn's loggers have no handlers of their own here (``serve``
    passes ``log_config=None``), so their records come through this one too.
    """
    install_record_factory()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream)
    handler.setFormatter(JsonFormatter(role) if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    for name in HELD_AT_WARNING:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def configure_from_settings(role: str, *, level: str | None = None) -> None:
    """:func:`configure_logging` as ``KEYAUTOMAT_LOG_FORMAT`` and ``KEYAUTOMAT_LOG_LEVEL``
    say (``level`` overrides the latter): what every command calls first."""
    from keyautomat.config import load_settings

    settings = load_settings()
    configure_logging(log_format=settings.log_format, level=level or settings.log_level, role=role)
