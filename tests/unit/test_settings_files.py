"""Settings that hold a password can come from a file (a container secret mount)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyautomat.config import FILE_SETTINGS, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_settings copies a file's value into the environment: setting each variable
    # first makes monkeypatch restore the original (usually absent) value afterwards.
    for name in FILE_SETTINGS:
        for variable in (f"KEYAUTOMAT_{name}", f"KEYAUTOMAT_{name}_FILE"):
            monkeypatch.setenv(variable, "")
            monkeypatch.delenv(variable)


def test_the_broker_url_of_a_gateway_is_read_from_the_file_its_setting_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "mqtt_url"
    secret.write_text("mqtt://keyautomat-gateway:s3cret@mosquitto:1883\n")
    monkeypatch.setenv("KEYAUTOMAT_MQTT_URL_FILE", str(secret))

    assert load_settings().mqtt_url == "mqtt://keyautomat-gateway:s3cret@mosquitto:1883"


def test_the_database_url_is_read_from_a_file_without_its_trailing_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "database_url"
    secret.write_text("postgresql+psycopg://keyautomat:pw@postgres:5432/keyautomat\n")
    monkeypatch.setenv("KEYAUTOMAT_DATABASE_URL_FILE", str(secret))

    assert load_settings().database_url == (
        "postgresql+psycopg://keyautomat:pw@postgres:5432/keyautomat"
    )


def test_a_value_given_directly_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "mqtt_url"
    secret.write_text("mqtt://from-file:pw@mosquitto:1883")
    monkeypatch.setenv("KEYAUTOMAT_MQTT_URL_FILE", str(secret))
    monkeypatch.setenv("KEYAUTOMAT_MQTT_URL", "mqtt://direct:pw@127.0.0.1:1883")

    assert load_settings().mqtt_url == "mqtt://direct:pw@127.0.0.1:1883"
