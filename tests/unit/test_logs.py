"""The log format of every process, and which request ids are taken from clients."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from keyautomat.logs import (
    REQUEST_ID,
    SERVICE_ACCOUNT_ID,
    accepted_request_id,
    configure_logging,
    install_record_factory,
    request_id_of,
    service_account_of,
)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The root logger's handlers and level, and the held loggers' levels, as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    held = {name: logging.getLogger(name).level for name in ("sqlalchemy", "httpx", "httpcore")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, held_level in held.items():
        logging.getLogger(name).setLevel(held_level)


@pytest.mark.parametrize(
    "given",
    [b"abc-123", b"x", b"A" * 128, b"req:1/2;3=4", b"~!@#$%^&*()_+{}|<>?"],
)
def test_a_client_request_id_of_1_to_128_visible_ascii_characters_is_kept(given: bytes) -> None:
    assert accepted_request_id(given) == given.decode()


@pytest.mark.parametrize(
    "given",
    [
        None,
        b"",
        b"A" * 129,
        b"two words",
        b"tab\there",
        b"line\nbreak",
        b"\x1b[31mred",
        b"\xc3\xa4",
    ],
)
def test_any_other_request_id_is_replaced_by_a_new_one(given: bytes | None) -> None:
    replaced = accepted_request_id(given)
    assert replaced != (given or b"").decode("latin-1")
    assert len(replaced) == 32
    assert replaced.isalnum()
    assert accepted_request_id(given) != replaced  # new each time


def _emit(stream: io.StringIO, *, log_format: str, exc: bool = False) -> str:
    configure_logging(log_format=log_format, level="info", role="serve", stream=stream)
    request = REQUEST_ID.set("req-7")
    account = SERVICE_ACCOUNT_ID.set("6b0db4ec9e737f6539817fa1")
    try:
        log = logging.getLogger("keyautomat.test")
        if exc:
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("it failed for %s", "automat 000001")
        else:
            log.info("hello %s", "world")
    finally:
        SERVICE_ACCOUNT_ID.reset(account)
        REQUEST_ID.reset(request)
    return stream.getvalue()


@pytest.mark.usefixtures("restored_logging")
def test_json_lines_carry_the_request_and_the_service_account() -> None:
    line = json.loads(_emit(io.StringIO(), log_format="json"))
    assert line.pop("time").endswith("Z")
    assert line == {
        "level": "INFO",
        "logger": "keyautomat.test",
        "message": "hello world",
        "requestId": "req-7",
        "serviceAccountId": "6b0db4ec9e737f6539817fa1",
        "process": "serve",
    }


@pytest.mark.usefixtures("restored_logging")
def test_a_json_line_keeps_the_traceback_of_an_exception_on_the_same_line() -> None:
    output = _emit(io.StringIO(), log_format="json", exc=True)
    assert output.count("\n") == 1
    line = json.loads(output)
    assert line["message"] == "it failed for automat 000001"
    assert "ValueError: boom" in line["exception"]


@pytest.mark.usefixtures("restored_logging")
def test_text_lines_are_readable_and_name_the_request() -> None:
    line = _emit(io.StringIO(), log_format="text").rstrip("\n")
    _time, rest = line.split(" ", 1)
    assert rest == (
        "INFO keyautomat.test [request=req-7 account=6b0db4ec9e737f6539817fa1] hello world"
    )


@pytest.mark.usefixtures("restored_logging")
def test_outside_a_request_a_line_has_no_request_fields() -> None:
    stream = io.StringIO()
    configure_logging(log_format="json", level="info", stream=stream)
    logging.getLogger("keyautomat.test").warning("idle")
    line = json.loads(stream.getvalue())
    assert "requestId" not in line
    assert "serviceAccountId" not in line
    assert "process" not in line


@pytest.mark.usefixtures("restored_logging")
def test_configuring_again_replaces_its_own_handler_and_leaves_the_others() -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    logging.getLogger("keyautomat.test").warning("once")
    assert first.getvalue() == ""
    assert "once" in second.getvalue()
    assert other in root.handlers


@pytest.mark.usefixtures("restored_logging")
def test_at_debug_the_database_and_http_client_loggers_stay_at_warning() -> None:
    """SQLAlchemy logs result rows (pincodes, contacts) and httpx the URLs it calls."""
    stream = io.StringIO()
    configure_logging(level="debug", stream=stream)
    for name in ("sqlalchemy.engine.Engine", "httpx", "httpcore.connection"):
        logging.getLogger(name).info("secret row")
    logging.getLogger("keyautomat.test").debug("ours")
    assert "secret row" not in stream.getvalue()
    assert "ours" in stream.getvalue()


def test_records_are_stamped_where_they_are_made_whatever_handler_gets_them() -> None:
    install_record_factory()
    install_record_factory()  # twice is once
    token = REQUEST_ID.set("req-9")
    try:
        record = logging.getLogRecordFactory()("x", logging.INFO, __file__, 1, "m", (), None)
    finally:
        REQUEST_ID.reset(token)
    assert request_id_of(record) == "req-9"
    assert service_account_of(record) is None
