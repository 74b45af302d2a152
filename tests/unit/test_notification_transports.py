"""Transport settings: SMTP URLs and the settings that choose the transports."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyautomat.adapters.notify.transports import (
    HttpSmsGateway,
    SinkTransport,
    SmtpConfig,
    SmtpTransport,
)
from keyautomat.bootstrap import bootstrap
from keyautomat.config import Settings, SettingsError, load_settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpConfig("mail.example.com", 25, None, None, False, None)),
        (
            "smtp://bob:s%40cret@mail.example.com:587?starttls=true",
            SmtpConfig("mail.example.com", 587, "bob", "s@cret", False, True),
        ),
        (
            "smtp://127.0.0.1:1025?starttls=false",
            SmtpConfig("127.0.0.1", 1025, None, None, False, False),
        ),
        ("smtps://mail.example.com", SmtpConfig("mail.example.com", 465, None, None, True, False)),
    ],
)
def test_smtp_urls_are_understood(url: str, expected: SmtpConfig) -> None:
    assert SmtpConfig.from_url(url) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [("smtp_url", "http://mail.example.com"), ("sms_gateway_url", "ftp://sms.example.com")],
)
def test_bad_transport_urls_stop_the_process_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"KEYAUTOMAT_{name.upper()}"):
        load_settings(**{name: value})


def test_unconfigured_transports_fall_back_to_the_sink(tmp_path: Path) -> None:
    def handler_of(**kw: object) -> object:
        settings = Settings(
            database_url=f"sqlite:///{tmp_path}/x.db",
            secret_key_file=tmp_path / "k",
            notify_sink_dir=tmp_path / "sink",
            **kw,  # type: ignore[arg-type]
        )
        container = bootstrap(settings)
        container.close()
        return container.dispatcher.routes["notification"].handler

    plain = handler_of()
    assert isinstance(plain.email, SinkTransport)  # type: ignore[attr-defined]
    assert isinstance(plain.sms, SinkTransport)  # type: ignore[attr-defined]
    real = handler_of(smtp_url="smtp://127.0.0.1:25", sms_gateway_url="https://sms.example.com/x")
    assert isinstance(real.email, SmtpTransport)  # type: ignore[attr-defined]
    assert isinstance(real.sms, HttpSmsGateway)  # type: ignore[attr-defined]


def test_the_sink_writes_one_json_line_per_message(tmp_path: Path) -> None:
    import asyncio
    import json

    from keyautomat.service_layer.notify_sender import Email, Sms

    sink = SinkTransport(tmp_path / "sink")
    asyncio.run(sink.send_sms(Sms("+358401234567", "PIN 123456", None, "notification-1")))
    asyncio.run(
        sink.send_email(Email("a@example.com", "Hi", "text", "<p>html</p>", None, None, "<m>"))
    )
    lines = (tmp_path / "sink" / "notifications.jsonl").read_text().splitlines()
    assert [json.loads(line)["channel"] for line in lines] == ["sms", "email"]
    assert json.loads(lines[0])["text"] == "PIN 123456"
