"""Backups of the SQLite database taken while the server runs, and their restore.

``keyautomat backup`` and ``keyautomat restore`` (docs/operations.md, "Backups").

**Backup.** SQLite's online backup API copies the database in one step, inside one
read transaction: in WAL mode the server goes on writing meanwhile, and the copy is
the database as of one commit, with every transaction committed before the step
began and none after. The copy goes to a temporary file next to the target (mode
600: it holds pincodes), is switched to a rollback journal so that it is one
self-contained file, passes ``PRAGMA integrity_check``, and only then takes the
target's name: a hard link, which cannot replace a file that appeared meanwhile,
or with ``force`` a rename over it. A failed backup leaves no file behind.

**Restore.** The backup is copied next to the database first, and every check runs
on that copy, never on the live database: the file is a SQLite database, passes
``integrity_check``, holds an Alembic version this code knows, and is migrated to
the newest schema (and, by the caller's ``prepare``, opened with the configured
secret key). Only then is the live database locked: an exclusive lock that no
other connection may hold, so a running server (which keeps its connections open)
makes the restore refuse. Under that lock the old database's write-ahead log is
folded into its file, the file is kept as ``<database>.bak-<UTC time>`` (a hard
link: the old file itself), and the checked copy is renamed over the database.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from keyautomat.adapters.migrate import known_revisions, upgrade

SQLITE_MAGIC = b"SQLite format 3\x00"


class BackupRefused(Exception):
    """A backup or restore that was not done; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    size: int
    tables: int
    contracts: int
    took_seconds: float


@dataclass(frozen=True, slots=True)
class RestoreReport:
    database: Path
    source: Path
    kept_as: Path | None
    revision: str
    contracts: int
    took_seconds: float


def backup_sqlite(database: Path, target: Path, *, force: bool = False) -> BackupReport:
    """Copy the live ``database`` to ``target`` (see the module's docstring)."""
    started = time.perf_counter()
    if not database.is_file():
        raise BackupRefused(f"there is no database at {database}")
    if target.resolve() == database.resolve():
        raise BackupRefused("the backup file must not be the database itself")
    if target.exists() and not force:
        raise BackupRefused(f"{target} exists; give --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_next_to(target, "backup") as copy:
        source = _connect(database, "rw")
        try:
            destination = _connect(copy, "rw")
            try:
                source.backup(destination)
                destination.execute("PRAGMA journal_mode=DELETE")
                problems = integrity_problems(destination)
                if problems:
                    raise BackupRefused(
                        "the copy fails its integrity check, so the database itself may be "
                        f"damaged: {problems}"
                    )
                tables, contracts = _counts(destination)
            finally:
                destination.close()
        finally:
            source.close()
        _sync(copy)
        _publish(copy, target, replace=force)
    return BackupReport(target.resolve(), target.stat().st_size, tables, contracts, _since(started))


def restore_sqlite(
    source: Path,
    database: Path,
    *,
    now: datetime,
    prepare: Callable[[Path], None] | None = None,
) -> RestoreReport:
    """Replace ``database`` with the backup ``source`` (see the module's docstring).

    ``prepare`` gets the checked, migrated copy before it replaces the database (the
    CLI opens it with the configured secret key); raising BackupRefused stops the
    restore with the database untouched.
    """
    started = time.perf_counter()
    if not source.is_file():
        raise BackupRefused(f"there is no file at {source}")
    if database.exists() and source.resolve() == database.resolve():
        raise BackupRefused("restore from a backup file, not from the database itself")
    if not is_sqlite_file(source):
        raise BackupRefused(f"{source} is not a SQLite database")
    database.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_next_to(database, "restore") as copy:
        _copy_checked(source, copy)
        upgrade(f"sqlite:///{copy}")
        if prepare is not None:
            prepare(copy)
        checked = _connect(copy, "rw")
        try:
            checked.execute("PRAGMA journal_mode=DELETE")
            revision = _revision(checked) or "?"
            _, contracts = _counts(checked)
        finally:
            checked.close()
        _sync(copy)
        kept_as = _swap_in(copy, database, now)
    return RestoreReport(
        database.resolve(), source.resolve(), kept_as, revision, contracts, _since(started)
    )


def is_sqlite_file(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def integrity_problems(connection: sqlite3.Connection, limit: int = 5) -> str | None:
    """None when ``PRAGMA integrity_check`` says "ok", else its first findings."""
    rows = [str(row[0]) for row in connection.execute(f"PRAGMA integrity_check({limit})")]
    return None if rows == ["ok"] else "; ".join(rows)


def _copy_checked(source: Path, copy: Path) -> None:
    """The backup into ``copy``, refused unless it is an intact database of a schema
    revision this code knows."""
    # A file without a write-ahead log beside it is read as immutable: no lock taken, no
    # shared-memory file created next to it, even when the file says it is in WAL mode.
    has_log = source.with_name(source.name + "-wal").exists()
    try:
        reader = _connect(source, "ro" if has_log else "ro&immutable=1")
        try:
            writer = _connect(copy, "rw")
            try:
                reader.backup(writer)
            finally:
                writer.close()
        finally:
            reader.close()
        checked = _connect(copy, "rw")
        try:
            problems = integrity_problems(checked)
            revision = _revision(checked)
        finally:
            checked.close()
    except sqlite3.DatabaseError as exc:
        raise BackupRefused(f"{source} is damaged, or not a database: {exc}") from exc
    if problems:
        raise BackupRefused(f"{source} fails its integrity check: {problems}")
    if revision is None:
        raise BackupRefused(f"{source} is not a keyautomat database (no schema version in it)")
    if revision not in known_revisions():
        raise BackupRefused(
            f"{source} is at schema revision {revision!r}, which this version of keyautomat "
            "does not know (a newer release made it?): restore it with that release"
        )


def _swap_in(copy: Path, database: Path, now: datetime) -> Path | None:
    """Rename ``copy`` over ``database`` under an exclusive lock, keeping the old file."""
    if not database.exists():
        os.replace(copy, database)
        _sync(database.parent)
        return None
    kept_as = database.with_name(f"{database.name}.bak-{now.strftime('%Y%m%dT%H%M%SZ')}")
    if kept_as.exists():
        raise BackupRefused(f"{kept_as} exists; try again in a second")
    live = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        try:
            # Held until the connection closes: no other connection may open the database
            # meanwhile, and none may have it open now (a server keeps its connections).
            live.execute("PRAGMA locking_mode=EXCLUSIVE")
            live.execute("BEGIN EXCLUSIVE")
            live.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise BackupRefused(
                    f"{database} is in use ({exc}): stop the server (every keyautomat "
                    "process on this database) and restore again"
                ) from exc
            # Unreadable, so whether a process has it open cannot be told either.
            raise BackupRefused(
                f"the database {database} cannot be opened ({exc}): with every keyautomat "
                "process stopped, move it (and its -wal and -shm files) aside, and restore again"
            ) from exc
        # The old database's last commits may be in its write-ahead log: fold them into
        # the file, so that the file kept aside is the whole old database.
        live.execute("PRAGMA journal_mode=DELETE")
        _link_or_copy(database, kept_as)
        os.replace(copy, database)
        for leftover in ("-wal", "-shm", "-journal"):
            database.with_name(database.name + leftover).unlink(missing_ok=True)
        _sync(database.parent)
    finally:
        live.close()
    return kept_as


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def _publish(copy: Path, target: Path, *, replace: bool) -> None:
    """Give ``copy`` the name ``target``: over an existing file only with ``replace``."""
    if replace:
        os.replace(copy, target)
    else:
        try:
            os.link(copy, target)
        except FileExistsError as exc:
            raise BackupRefused(f"{target} exists; give --force to replace it") from exc
        except OSError:  # a file system without hard links
            if target.exists():
                raise BackupRefused(f"{target} exists; give --force to replace it") from None
            os.replace(copy, target)
    _sync(target.parent)


@contextlib.contextmanager
def _temporary_next_to(path: Path, purpose: str) -> Iterator[Path]:
    """A new empty file (mode 600) in ``path``'s folder, gone on exit unless renamed."""
    temporary = path.with_name(f".{path.name}.{purpose}-{uuid.uuid4().hex[:12]}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield temporary
    finally:
        for leftover in ("", "-wal", "-shm", "-journal"):
            temporary.with_name(temporary.name + leftover).unlink(missing_ok=True)


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    """A connection that never creates the file, and trusts nothing the file's schema
    says (a restored file is input: its views and triggers may not call functions)."""
    connection = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=30, isolation_level=None
    )
    connection.execute("PRAGMA trusted_schema=OFF")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


def _revision(connection: sqlite3.Connection) -> str | None:
    has_table = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
    ).fetchone()
    if has_table is None:
        return None
    rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return str(rows[0][0]) if len(rows) == 1 else None


def _counts(connection: sqlite3.Connection) -> tuple[int, int]:
    """(tables, contracts) of a database."""
    names = {
        str(row[0])
        for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    contracts = 0
    if "contracts" in names:
        contracts = int(connection.execute("SELECT count(*) FROM contracts").fetchone()[0])
    return len(names), contracts


def _sync(path: Path) -> None:
    """fsync a file or a folder, so that a rename survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
