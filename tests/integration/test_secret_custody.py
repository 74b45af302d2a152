"""Secret-key custody: the database knows its key and refuses a process that brings another."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from keyautomat.adapters.orm import server_metadata
from keyautomat.bootstrap import bootstrap
from keyautomat.config import Settings, SettingsError
from keyautomat.domain.model import IloqApiUser
from tests.iloq_helpers import make_unit


def start(settings: Settings, **changes: object) -> None:
    """Start (and stop) a process's container with ``changes`` to the settings."""
    bootstrap(settings.model_copy(update=changes)).close()


def test_starting_with_a_different_key_against_a_database_with_a_check_value_fails(
    settings: Settings,
) -> None:
    start(settings)  # the first start records the check value
    start(settings)  # the same key starts again
    with pytest.raises(SettingsError, match=r"^KEYAUTOMAT_SECRET_KEY: not the key this database"):
        start(settings, secret_key=Fernet.generate_key().decode())


def test_a_missing_key_file_is_not_replaced_once_the_database_has_a_key(
    settings: Settings, tmp_path: Path
) -> None:
    key_file = tmp_path / "elsewhere" / "keyautomat-secret.key"
    start(settings)
    with pytest.raises(SettingsError, match=r"^KEYAUTOMAT_SECRET_KEY_FILE: .* does not exist"):
        start(settings, secret_key=None, secret_key_file=key_file)
    assert not key_file.exists()


def test_a_key_file_with_another_key_is_refused_naming_the_setting_and_the_file(
    settings: Settings, tmp_path: Path
) -> None:
    start(settings)
    key_file = tmp_path / "other.key"
    key_file.write_bytes(Fernet.generate_key())
    with pytest.raises(SettingsError, match=r"^KEYAUTOMAT_SECRET_KEY_FILE \(.*other.key\): not"):
        start(settings, secret_key=None, secret_key_file=key_file)


def test_a_database_from_before_the_check_refuses_a_key_that_cannot_read_its_secrets(
    settings: Settings,
) -> None:
    container = bootstrap(settings)
    make_unit(container, iloq=IloqApiUser("u", "password", "c", "emulator:"))
    # As before this change: no check value, secrets stored under the original key.
    container.db.transaction(lambda s: s.execute(server_metadata.delete()))
    container.close()
    with pytest.raises(SettingsError, match=r"^KEYAUTOMAT_SECRET_KEY: not the key"):
        start(settings, secret_key=Fernet.generate_key().decode())
    start(settings)  # the original key reads them and records the check


def test_a_malformed_key_is_refused_naming_the_setting(settings: Settings) -> None:
    with pytest.raises(SettingsError, match=r"^KEYAUTOMAT_SECRET_KEY: not a Fernet key"):
        start(settings, secret_key="not-a-key")


def test_the_default_key_file_of_a_sqlite_database_is_next_to_it_and_private(
    tmp_path: Path,
) -> None:
    database = tmp_path / "data" / "x.db"
    database.parent.mkdir()
    settings = Settings(database_url=f"sqlite:///{database}")
    assert settings.secret_key_path == tmp_path / "data" / "keyautomat-secret.key"
    bootstrap(settings).close()
    assert stat.S_IMODE(settings.secret_key_path.stat().st_mode) == 0o600
    relative = Settings(database_url="sqlite:///var/db/x.db")
    assert relative.secret_key_path == Path("var/db/keyautomat-secret.key")
    postgres = Settings(database_url="postgresql+psycopg://u@h/db")
    assert postgres.secret_key_path == Path("keyautomat-secret.key")


def test_the_check_value_does_not_reveal_the_key(settings: Settings) -> None:
    container = bootstrap(settings)
    try:
        stored = container.db.transaction(
            lambda s: s.execute(
                text("SELECT value FROM server_metadata WHERE name = 'secret-key-check'")
            ).scalar_one()
        )
    finally:
        container.close()
    assert settings.secret_key is not None
    assert settings.secret_key not in stored


def test_a_server_started_from_another_folder_keeps_its_key_and_a_wrong_key_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from keyautomat.entrypoints.cli import main

    database = tmp_path / "data" / "keys.db"
    database.parent.mkdir()
    monkeypatch.setenv("KEYAUTOMAT_DATABASE_URL", f"sqlite:///{database}")
    for env in ("KEYAUTOMAT_SECRET_KEY", "KEYAUTOMAT_SECRET_KEY_FILE"):
        monkeypatch.delenv(env, raising=False)
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        assert main(["init", "--org-name", folder, "--key-out", "admin.pem"]) == 0
        assert not Path("keyautomat-secret.key").exists()
    assert (database.parent / "keyautomat-secret.key").exists()
    monkeypatch.setenv("KEYAUTOMAT_SECRET_KEY", Fernet.generate_key().decode())
    capsys.readouterr()
    assert main(["init", "--org-name", "third", "--key-out", "third.pem"]) == 2
    assert "KEYAUTOMAT_SECRET_KEY: not the key this database" in capsys.readouterr().err


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_sqlite_database_and_its_wal_are_readable_by_their_owner_only(
    tmp_path: Path,
) -> None:
    from keyautomat.adapters.db import Database
    from keyautomat.adapters.migrate import upgrade

    database = tmp_path / "private.db"
    old_umask = os.umask(0o022)  # a usual umask: new files world-readable
    try:
        upgrade(f"sqlite:///{database}")
        db = Database(f"sqlite:///{database}")
        try:
            db.transaction(lambda s: s.execute(text("UPDATE id_counters SET value = value")))
            files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
            assert all(f.exists() for f in files)
            assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        finally:
            db.close()
    finally:
        os.umask(old_umask)


def test_a_world_readable_sqlite_file_of_an_older_install_is_made_private(
    tmp_path: Path,
) -> None:
    from keyautomat.adapters.db import Database

    database = tmp_path / "old.db"
    database.touch()
    database.chmod(0o644)
    Database(f"sqlite:///{database}").close()
    assert _mode(database) == 0o600
