"""Which key encrypts the stored secrets, and proof that it is the right one.

Webhook secrets, iLOQ passwords and identity provider client secrets are stored
encrypted (``SecretBox``) under a key that lives outside the database
(``KEYAUTOMAT_SECRET_KEY`` or the file ``KEYAUTOMAT_SECRET_KEY_FILE``). A process
that starts with another key (from another folder, with a fresh file created by
mistake) would read none of them back. So the database keeps a check value, the
key's encryption of a fixed text, written on the first start; every later start
decrypts it and refuses to go on, naming the setting, when the key does not match. A
missing key file is only created while the database holds no check value. Databases
from before the check get theirs on the next start, after the key has proved that it
reads the secrets already stored.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.orm import organization_units, server_metadata
from keyautomat.adapters.orm_identity import strong_auth_providers
from keyautomat.adapters.orm_webhooks import webhook_subscriptions
from keyautomat.config import Settings, SettingsError

KEY_CHECK = "secret-key-check"
CHECK_TEXT = "keyautomat secret key check v1"


def open_secret_box(settings: Settings, db: Database) -> SecretBox:
    """The box of the configured key, verified against the database's check value.

    Raises SettingsError naming the setting when the key is malformed, missing
    while the database holds secrets, or not the key of this database. Skips
    the check on a database without the table (not migrated yet).
    """
    has_table = db.transaction(lambda s: inspect(s.connection()).has_table(server_metadata.name))
    stored = db.transaction(_stored_check) if has_table else None
    if settings.secret_key:
        setting = "KEYAUTOMAT_SECRET_KEY"
        box = _box(settings.secret_key, setting)
    else:
        path = settings.secret_key_path
        if stored is not None and not path.exists():
            raise SettingsError(
                f"KEYAUTOMAT_SECRET_KEY_FILE: {path.resolve()} does not exist, but this "
                "database's secrets are encrypted under a key: point KEYAUTOMAT_SECRET_KEY_FILE "
                "at that key file (or set KEYAUTOMAT_SECRET_KEY); a new key would make them "
                "unreadable"
            )
        setting = f"KEYAUTOMAT_SECRET_KEY_FILE ({path.resolve()})"
        box = _box(_read_or_create(path), setting)
    if not has_table:
        return box
    mismatch = SettingsError(
        f"{setting}: not the key this database's stored secrets (webhook secrets, iLOQ "
        "passwords, identity provider client secrets) are encrypted with; start with the "
        "original key"
    )
    if stored is None:
        if not db.transaction(lambda s: _reads_stored_secrets(s, box)):
            raise mismatch
        stored = _record_check(db, box)
    if not _matches(box, stored):
        raise mismatch
    return box


def _box(key: str | bytes, setting: str) -> SecretBox:
    try:
        return SecretBox(key)
    except ValueError as exc:
        raise SettingsError(
            f"{setting}: not a Fernet key (urlsafe base64 of 32 bytes): {exc}"
        ) from exc


def _read_or_create(path: Path) -> bytes:
    if not path.exists():
        SecretBox.create_key_file(path)
    return path.read_bytes().strip()


def _stored_check(session: Session) -> str | None:
    return session.scalar(
        select(server_metadata.c.value).where(server_metadata.c.name == KEY_CHECK)
    )


def _matches(box: SecretBox, check: str) -> bool:
    try:
        return box.decrypt(check) == CHECK_TEXT
    except ValueError:
        return False


def _reads_stored_secrets(session: Session, box: SecretBox) -> bool:
    """True when one stored secret of each kind (if any) decrypts under ``box``."""
    # A database migrated only part of the way may lack the newer tables.
    tables = set(inspect(session.connection()).get_table_names())
    for column in (
        organization_units.c.iloq_password_encrypted,
        webhook_subscriptions.c.secret_encrypted,
        strong_auth_providers.c.client_secret_encrypted,
    ):
        if column.table.name not in tables:
            continue
        sample = session.scalar(select(column).where(column.is_not(None)).limit(1))
        if sample is not None and not _decrypts(box, sample):
            return False
    return True


def _decrypts(box: SecretBox, token: str) -> bool:
    try:
        box.decrypt(token)
    except ValueError:
        return False
    return True


def _record_check(db: Database, box: SecretBox) -> str:
    """Store the check value; if another process stored one first, return theirs."""
    check = box.encrypt(CHECK_TEXT)
    try:
        db.transaction(
            lambda s: s.execute(server_metadata.insert().values(name=KEY_CHECK, value=check))
        )
    except IntegrityError:
        stored = db.transaction(_stored_check)
        assert stored is not None
        return stored
    return check
