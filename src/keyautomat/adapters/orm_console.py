"""Tables of the web console: its users and their sessions (docs/console.md).

Core statements only (``service_layer/console_users.py``), like the device link:
the session row is read on every console request.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text

from keyautomat.adapters.orm import UtcDateTime, metadata

# ``email_key`` is the lower-cased email (domain/console.py): unique, so that two
# spellings of one address are one login. ``password_hash`` is an Argon2id hash in
# its own text format (parameters and salt included). ``failed_logins``,
# ``last_failed_login_at`` and ``blocked_until`` are the per-account login throttle,
# kept on the row so that every API process and every restart sees the same books.
console_users = Table(
    "console_users",
    metadata,
    Column("id", String(24), primary_key=True),
    Column(
        "organization_unit_id",
        String(24),
        ForeignKey("organization_units.id"),
        nullable=False,
        index=True,
    ),
    Column("email", Text, nullable=False),
    Column("email_key", String(254), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("password_changed_at", UtcDateTime, nullable=False),
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("last_failed_login_at", UtcDateTime),
    Column("blocked_until", UtcDateTime),
    Column("last_login_at", UtcDateTime),
)

# One row per signed-in browser. ``id`` is the SHA-256 (hex) of the token in the
# session cookie, so the table alone signs nobody in; ``csrf_token`` is the token
# every state-changing form of the session must carry.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "user_id",
        String(24),
        ForeignKey("console_users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Index("ix_console_sessions_user_id", "user_id"),
    Index("ix_console_sessions_last_seen_at", "last_seen_at"),
)


# What console users did at simulated automats (the virtual keypad): one row per key
# pressed, with who pressed it; ``detail`` is the keys with every digit masked, since a
# typed code may be someone's pincode (docs/console.md, "The virtual automat").
console_audit = Table(
    "console_audit",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("user_id", String(24), nullable=False),
    Column("user_email", Text, nullable=False),
    Column("organization_unit_id", String(24), nullable=False),
    Column("automat_id", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_console_audit_automat_id_at", "automat_id", "at"),
)


def map_tables() -> None:
    """Nothing to map: the console's tables are written with Core statements."""
