"""``keyautomat backup FILE`` and ``keyautomat restore FILE`` (docs/operations.md, "Backups").

Exit status: 0 done, with one JSON line on standard output; 1 refused, with the
reason on standard error (the file exists, it is not an intact keyautomat database,
the database is in use, ...); 2 not possible here (PostgreSQL, whose own tools do
it: the command prints which).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from keyautomat.adapters.backup import BackupRefused, backup_sqlite, restore_sqlite
from keyautomat.config import Settings, SettingsError, load_settings, sqlite_database_path
from keyautomat.entrypoints.printing import print_json_line

DONE, REFUSED, NOT_HERE = 0, 1, 2


def add_backup_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``backup`` and ``restore`` subcommands of ``keyautomat``."""
    p = sub.add_parser(
        "backup",
        help="copy the SQLite database to FILE while the server runs",
        description="Copy the SQLite database to FILE with SQLite's online backup, consistent "
        "while the server writes; checks the copy and prints one JSON line "
        "(docs/operations.md). On PostgreSQL it prints the pg_dump command instead.",
    )
    p.add_argument("file", help="where to write the backup (a new file)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=main_backup)

    p = sub.add_parser(
        "restore",
        help="replace the SQLite database with a backup (stop the server first)",
        description="Check FILE (a SQLite database, intact, of a schema this release knows, "
        "opened by the configured secret key), migrate it, and put it in place of the "
        "database, which is kept as <database>.bak-<time>. Refuses while any process has "
        "the database open (docs/operations.md, restore drill).",
    )
    p.add_argument("file", help="a backup made by `keyautomat backup`")
    p.set_defaults(func=main_restore)


def main_backup(args: argparse.Namespace) -> int:
    settings = load_settings()
    database = _sqlite_file(settings, "backup")
    if database is None:
        return NOT_HERE
    try:
        report = backup_sqlite(database, Path(args.file), force=args.force)
    except BackupRefused as exc:
        print(f"backup refused: {exc}", file=sys.stderr)
        return REFUSED
    print_json_line(
        {
            "path": str(report.path),
            "size": report.size,
            "tables": report.tables,
            "contracts": report.contracts,
            "tookSeconds": report.took_seconds,
        }
    )
    print(
        f"Keep the secret key ({_key_location(settings)}) backed up too, apart from this "
        "file: the backup is unreadable without it, and it is not in the backup.",
        file=sys.stderr,
    )
    return DONE


def main_restore(args: argparse.Namespace) -> int:
    settings = load_settings()
    database = _sqlite_file(settings, "restore")
    if database is None:
        return NOT_HERE

    def opens_with_the_configured_key(copy: Path) -> None:
        from keyautomat.adapters.db import Database
        from keyautomat.adapters.secret_custody import open_secret_box

        db = Database(f"sqlite:///{copy}")
        try:
            open_secret_box(settings, db)
        except SettingsError as exc:
            refusal = f"the configured secret key does not open this backup: {exc}"
            raise BackupRefused(refusal) from exc
        finally:
            db.close()

    try:
        report = restore_sqlite(
            Path(args.file),
            database,
            now=datetime.now(UTC),
            prepare=opens_with_the_configured_key,
        )
    except BackupRefused as exc:
        print(f"restore refused: {exc}", file=sys.stderr)
        return REFUSED
    print_json_line(
        {
            "database": str(report.database),
            "restoredFrom": str(report.source),
            "replacedKeptAs": None if report.kept_as is None else str(report.kept_as),
            "revision": report.revision,
            "contracts": report.contracts,
            "tookSeconds": report.took_seconds,
        }
    )
    return DONE


def _sqlite_file(settings: Settings, command: str) -> Path | None:
    """The SQLite database file of the settings; None, with guidance printed, otherwise."""
    path = sqlite_database_path(settings.database_url)
    if path is not None:
        return path
    if settings.is_sqlite:
        print(f"{command} needs a SQLite database file, not an in-memory one", file=sys.stderr)
        return None
    # The URL without its password: libpq reads it from PGPASSWORD or ~/.pgpass.
    given = make_url(settings.database_url)
    url = URL.create(
        "postgresql",
        username=given.username,
        host=given.host,
        port=given.port,
        database=given.database,
        query=given.query,
    )
    target = url.render_as_string(hide_password=False)
    if command == "backup":
        how = f"  pg_dump --format=custom --file=FILE '{target}'"
    else:
        how = (
            f"  pg_restore --clean --if-exists --no-owner --dbname='{target}' FILE\n"
            "  keyautomat migrate"
        )
    print(
        f"keyautomat {command} works on SQLite only. On PostgreSQL, use its own tools "
        f"(docs/operations.md, Backups):\n{how}",
        file=sys.stderr,
    )
    return None


def _key_location(settings: Settings) -> str:
    if settings.secret_key:
        return "KEYAUTOMAT_SECRET_KEY"
    return str(settings.secret_key_path.resolve())
