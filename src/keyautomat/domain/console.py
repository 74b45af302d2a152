"""Rules of the web console's people: roles, emails, passwords, sessions (docs/console.md).

Console users are people, not service accounts: each belongs to an organization
unit, sees that unit's subtree like a service account of it would, and has one of
three roles. Nothing here does I/O; ``now`` is an argument.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.text import text_problem


class ConsoleRole(enum.StrEnum):
    """What a console user may do within its unit's subtree."""

    ADMIN = "admin"  # everything, including console users and service accounts
    OPERATOR = "operator"  # contracts, keys, the keypad, alarms
    VIEWER = "viewer"  # reads only

    @property
    def writes(self) -> bool:
        """Whether the role changes anything besides its own password and session."""
        return self is not ConsoleRole.VIEWER


def console_role(value: str, field: str = "role") -> ConsoleRole:
    try:
        return ConsoleRole(value)
    except ValueError:
        raise InvalidInput(field, "must be one of admin, operator, viewer") from None


# RFC 5321 bounds a forward path to 256 octets, brackets included.
MAX_EMAIL_LENGTH = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def email_key(value: str, field: str = "email") -> str:
    """The form of an email that is unique among console users: trimmed and lower-cased,
    so ``Anna@Example.com`` and ``anna@example.com`` are one login."""
    email = value.strip()
    problem = text_problem(email)
    if problem is not None:
        raise InvalidInput(field, problem)
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email):
        raise InvalidInput(field, "must be an email address such as anna@example.com")
    return email.lower()


MIN_PASSWORD_LENGTH = 12
# Argon2 hashes any length, but a megabyte of password is work for nothing.
MAX_PASSWORD_LENGTH = 256


def check_new_password(value: str, field: str = "password") -> str:
    """A password a user may choose: long enough to resist guessing, bounded, storable."""
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput(field, problem)
    if len(value) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(field, f"must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(field, f"must be at most {MAX_PASSWORD_LENGTH} characters long")
    return value


def generate_password() -> str:
    """A password for a new user or a reset: 120 random bits, 20 URL-safe characters."""
    return secrets.token_urlsafe(15)


def generate_token() -> str:
    """A session or CSRF token: 256 random bits."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a console session lasts: ``idle`` since its last request, ``absolute``
    since login, whichever ends first; ``touch_every`` is how stale the stored last
    request may get before a request writes it again (one write a minute, not one a
    request)."""

    idle: timedelta
    absolute: timedelta
    touch_every: timedelta = timedelta(minutes=1)

    def expired(self, created_at: datetime, last_seen_at: datetime, now: datetime) -> bool:
        return now - last_seen_at >= self.idle or now - created_at >= self.absolute

    def needs_touch(self, last_seen_at: datetime, now: datetime) -> bool:
        return now - last_seen_at >= self.touch_every

    def stale_before(self, now: datetime) -> datetime:
        """Sessions last seen before this are over whatever their age (to prune them)."""
        return now - self.idle
