"""``keyautomat backup`` and ``keyautomat restore`` on SQLite files: the round trip, and every
refusal, each of which leaves the database as it was (docs/operations.md, "Backups")."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from keyautomat.adapters.db import Database
from keyautomat.adapters.migrate import head_revision
from keyautomat.bootstrap import bootstrap
from keyautomat.config import Settings
from keyautomat.entrypoints.cli import main

KEY = Fernet.generate_key().decode()


@pytest.fixture
def live(tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated database that has met its secret key, and the environment naming both."""
    path = tmp_path / "live" / "keyautomat.db"
    path.parent.mkdir()
    shutil.copyfile(sqlite_template, path)
    bootstrap(Settings(database_url=f"sqlite:///{path}", secret_key=KEY)).close()
    for name in list(os.environ):
        if name.startswith("KEYAUTOMAT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEYAUTOMAT_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("KEYAUTOMAT_SECRET_KEY", KEY)
    return path


def note(path: Path, name: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO server_metadata (name, value) VALUES (?, 'x')", (name,))


def notes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM server_metadata")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_backup_is_an_intact_private_copy_that_a_restore_puts_back_keeping_the_replaced_file(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    note(live, "before the backup")
    target = tmp_path / "backups" / "monday.db"
    code, out, err = run(capsys, "backup", str(target))
    assert code == 0, err
    report = json.loads(out)
    assert report["path"] == str(target.resolve())
    assert report["size"] == target.stat().st_size
    assert report["tables"] > 30
    assert report["contracts"] == 0
    assert report["tookSeconds"] >= 0
    assert "secret key" in err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert leftovers(target.parent) == []

    note(live, "after the backup")
    code, out, err = run(capsys, "restore", str(target))
    assert code == 0, err
    report = json.loads(out)
    kept = Path(report["replacedKeptAs"])
    assert report["database"] == str(live.resolve())
    assert report["revision"] == head_revision()
    assert kept.name.startswith("keyautomat.db.bak-")
    assert "after the backup" in notes(kept)
    assert "before the backup" in notes(live)
    assert "after the backup" not in notes(live)
    assert leftovers(live.parent) == []


def test_a_backup_never_overwrites_a_file_unless_forced(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "monday.db"
    target.write_text("last week's backup")
    code, out, err = run(capsys, "backup", str(target))
    assert (code, out) == (1, "")
    assert "exists; give --force to replace it" in err
    assert target.read_text() == "last week's backup"
    code, _out, err = run(capsys, "backup", "--force", str(target))
    assert code == 0, err
    assert target.read_bytes().startswith(b"SQLite format 3\x00")
    assert leftovers(tmp_path) == []


def test_a_restore_into_a_folder_without_a_database_just_puts_it_there(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "backup", str(tmp_path / "b.db"))[0] == 0
    fresh = tmp_path / "new-host" / "keyautomat.db"
    monkeypatch.setenv("KEYAUTOMAT_DATABASE_URL", f"sqlite:///{fresh}")
    code, out, err = run(capsys, "restore", str(tmp_path / "b.db"))
    assert code == 0, err
    assert json.loads(out)["replacedKeptAs"] is None
    assert notes(fresh) == notes(live)


# -- refusals ---------------------------------------------------------------------------


@pytest.fixture
def backup(live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "backup.db"
    assert run(capsys, "backup", str(path))[0] == 0
    return path


@pytest.fixture
def unchanged(live: Path) -> Iterator[None]:
    """The live database is byte for byte what it was, and nothing was left beside it."""
    before = digest(live)
    yield
    assert digest(live) == before
    assert leftovers(live.parent) == []
    assert not [p for p in live.parent.iterdir() if ".bak-" in p.name]


def refusal(capsys: pytest.CaptureFixture[str], source: Path) -> str:
    code, out, err = run(capsys, "restore", str(source))
    assert (code, out) == (1, ""), err
    assert err.startswith("restore refused: ")
    assert "Traceback" not in err
    return err


@pytest.mark.usefixtures("unchanged")
def test_a_restore_refuses_a_file_that_is_not_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("not a database\n" * 100)
    assert "is not a SQLite database" in refusal(capsys, source)
    assert "there is no file" in refusal(capsys, tmp_path / "missing.db")


@pytest.mark.usefixtures("unchanged")
def test_a_restore_refuses_a_corrupt_database(
    backup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(backup.read_bytes())
    page = 4096
    data[3 * page : 5 * page] = b"\xa5" * (2 * page)  # two pages of garbage
    backup.write_bytes(bytes(data))
    err = refusal(capsys, backup)
    assert "integrity check" in err or "is damaged, or not a database" in err


@pytest.mark.usefixtures("unchanged")
def test_a_restore_refuses_a_schema_revision_this_release_does_not_know(
    backup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(backup) as db:
        db.execute("UPDATE alembic_version SET version_num = '0999'")
    assert "schema revision '0999', which this version" in refusal(capsys, backup)


@pytest.mark.usefixtures("unchanged")
def test_a_restore_refuses_a_sqlite_database_that_is_not_keyautomats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    assert "is not a keyautomat database" in refusal(capsys, other)


@pytest.mark.usefixtures("unchanged")
def test_a_restore_refuses_while_a_process_has_the_database_open(
    live: Path, backup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = Database(f"sqlite:///{live}")  # as a running server holds it: open, idle
    try:
        server.transaction(lambda s: s.connection().exec_driver_sql("SELECT 1"))
        assert "is in use" in refusal(capsys, backup)
    finally:
        server.close()


@pytest.mark.usefixtures("unchanged")
def test_a_restore_refuses_a_backup_the_configured_secret_key_does_not_open(
    backup: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYAUTOMAT_SECRET_KEY", Fernet.generate_key().decode())
    assert "the configured secret key does not open this backup" in refusal(capsys, backup)


def test_backup_and_restore_point_to_postgresqls_own_tools(
    live: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "KEYAUTOMAT_DATABASE_URL", "postgresql+psycopg://keys:hunter2@db.internal:5432/keys"
    )
    code, out, err = run(capsys, "backup", str(tmp_path / "b.db"))
    assert (code, out) == (2, "")
    assert "pg_dump --format=custom --file=FILE 'postgresql://keys@db.internal:5432/keys'" in err
    code, out, err = run(capsys, "restore", str(tmp_path / "b.db"))
    assert (code, out) == (2, "")
    assert "pg_restore" in err
    assert "hunter2" not in err
    assert not (tmp_path / "b.db").exists()


def test_a_restore_over_a_database_that_cannot_be_opened_says_to_move_it_aside(
    live: Path, backup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live.write_bytes(b"\x00" * 8192)
    err = refusal(capsys, backup)
    assert "cannot be opened" in err
    assert "move it (and its -wal and -shm files) aside" in err
    assert live.read_bytes() == b"\x00" * 8192
    live.unlink()
    assert run(capsys, "restore", str(backup))[0] == 0
