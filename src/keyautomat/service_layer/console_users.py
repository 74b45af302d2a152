"""Console users and their sessions: create, sign in, identify a request, sign out, change
and reset passwords (docs/console.md).

Passwords arrive here already hashed: Argon2 costs a tenth of a second of CPU,
which must not be spent on the database thread (adapters/passwords.py). Core
statements only (docs/persistence.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.orm_console import console_sessions, console_users
from keyautomat.domain.attempts import AttemptLimiter
from keyautomat.domain.console import ConsoleRole, SessionPolicy, email_key, generate_token
from keyautomat.domain.errors import Conflict, NotFound
from keyautomat.domain.ids import new_object_id
from keyautomat.service_layer.principal import Principal

users, sessions, units = console_users, console_sessions, orm.organization_units


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    id: str
    organization_unit_id: str
    email: str
    role: ConsoleRole


def create_user(
    session: Session,
    principal: Principal | None,
    *,
    email: str,
    organization_unit_id: str,
    role: ConsoleRole,
    password_hash: str,
    now: datetime,
) -> ConsoleUser:
    """A console user of a unit in the caller's subtree (admins only). ``principal`` is None
    for the command line, which acts for the operator of the installation."""
    key = email_key(email)
    if principal is not None:
        principal.require_admin()
        unit_id = principal.scoped_unit(session, organization_unit_id, "organizationUnitId").id
    else:
        found = session.scalar(select(units.c.id).where(units.c.id == organization_unit_id))
        if found is None:
            raise NotFound("Organization unit")
        unit_id = found
    user = ConsoleUser(new_object_id(now.timestamp()), unit_id, email.strip(), role)
    try:
        # The unique email_key is the guard: two creations of one email at once end
        # with one user and one Conflict, whatever their order.
        with session.begin_nested():
            session.execute(
                insert(users).values(
                    id=user.id,
                    organization_unit_id=unit_id,
                    email=user.email,
                    email_key=key,
                    password_hash=password_hash,
                    role=str(role),
                    created_at=now,
                    password_changed_at=now,
                )
            )
    except IntegrityError:
        raise Conflict("A console user with this email exists") from None
    return user


def get_user_by_email(session: Session, email: str) -> ConsoleUser:
    row = session.execute(
        select(users.c.id, users.c.organization_unit_id, users.c.email, users.c.role).where(
            users.c.email_key == email_key(email)
        )
    ).first()
    if row is None:
        raise NotFound("Console user")
    return ConsoleUser(row.id, row.organization_unit_id, row.email, ConsoleRole(row.role))


def set_password(
    session: Session, user_id: str, password_hash: str, now: datetime, *, keep: str | None = None
) -> None:
    """Store a new password hash, forget the login throttle, and end every session of the
    user but the one whose token is ``keep`` (a change keeps the browser that made it)."""
    session.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(
            password_hash=password_hash,
            password_changed_at=now,
            failed_logins=0,
            last_failed_login_at=None,
            blocked_until=None,
        )
    )
    ended = delete(sessions).where(sessions.c.user_id == user_id)
    if keep is not None:
        ended = ended.where(sessions.c.id != token_digest(keep))
    session.execute(ended)


def reset_password(session: Session, email: str, password_hash: str, now: datetime) -> ConsoleUser:
    """A new password for the user with ``email`` (the command line): every session ends."""
    user = get_user_by_email(session, email)
    set_password(session, user.id, password_hash, now)
    return user


# --- signing in -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginCandidate:
    """The user an email names, as a login needs it; ``blocked_until`` is its throttle."""

    user_id: str
    password_hash: str
    blocked_until: datetime | None


def login_candidate(session: Session, key: str) -> LoginCandidate | None:
    """The user whose email key is ``key`` (see ``domain.console.email_key``), or None."""
    row = session.execute(
        select(users.c.id, users.c.password_hash, users.c.blocked_until).where(
            users.c.email_key == key
        )
    ).first()
    return None if row is None else LoginCandidate(row.id, row.password_hash, row.blocked_until)


def password_hash_of(session: Session, user_id: str) -> LoginCandidate:
    row = session.execute(
        select(users.c.id, users.c.password_hash, users.c.blocked_until).where(
            users.c.id == user_id
        )
    ).first()
    if row is None:
        raise NotFound("Console user")
    return LoginCandidate(row.id, row.password_hash, row.blocked_until)


def record_failed_login(
    session: Session, user_id: str, now: datetime, rule: AttemptLimiter
) -> None:
    """Count a wrong password against the user's row and block it by ``rule`` (the same
    doubling back-off as the device pincodes, domain/attempts.py).

    The count is incremented in the statement itself, so failures sent at once through
    several processes all count.
    """
    fresh = users.c.last_failed_login_at.is_(None) | (
        users.c.last_failed_login_at <= now - rule.forget_after
    )
    failures = session.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(
            failed_logins=case((fresh, 1), else_=users.c.failed_logins + 1),
            last_failed_login_at=now,
        )
        .returning(users.c.failed_logins)
    ).scalar()
    block = rule.block_after(failures or 0)
    if block is not None:
        session.execute(
            update(users).where(users.c.id == user_id).values(blocked_until=now + block)
        )


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str  # for the cookie only: the table keeps its digest
    csrf_token: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    session: Session,
    user_id: str,
    now: datetime,
    policy: SessionPolicy,
    *,
    new_hash: str | None = None,
) -> NewSession:
    """A session for the user who just proved its password: the throttle is forgotten, a
    hash made with outdated parameters replaced by ``new_hash``, and sessions that ran
    out (anyone's) deleted."""
    values: dict[str, object] = {
        "failed_logins": 0,
        "last_failed_login_at": None,
        "blocked_until": None,
        "last_login_at": now,
    }
    if new_hash is not None:
        values["password_hash"] = new_hash
    session.execute(update(users).where(users.c.id == user_id).values(values))
    session.execute(delete(sessions).where(sessions.c.last_seen_at < policy.stale_before(now)))
    created = NewSession(generate_token(), generate_token())
    session.execute(
        insert(sessions).values(
            id=token_digest(created.token),
            user_id=user_id,
            csrf_token=created.csrf_token,
            created_at=now,
            last_seen_at=now,
        )
    )
    return created


def end_session(session: Session, token: str) -> None:
    session.execute(delete(sessions).where(sessions.c.id == token_digest(token)))


# --- who is asking ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsoleIdentity:
    """The signed-in user behind a console request."""

    user_id: str
    email: str
    role: ConsoleRole
    csrf_token: str
    unit_name: str
    # Scopes every read and command exactly as a service account of the same unit:
    # its id is the user's (recorded as who acknowledged an alarm, for one).
    principal: Principal


_IDENTIFY = (
    select(
        sessions.c.csrf_token,
        sessions.c.created_at,
        sessions.c.last_seen_at,
        users.c.id.label("user_id"),
        users.c.email,
        users.c.role,
        users.c.organization_unit_id,
        units.c.path,
        units.c.type,
        units.c.name.label("unit_name"),
    )
    .join(users, users.c.id == sessions.c.user_id)
    .join(units, units.c.id == users.c.organization_unit_id)
)


def identify(
    session: Session, token: str, now: datetime, policy: SessionPolicy
) -> ConsoleIdentity | None:
    """The user a session cookie's token signs in, or None (unknown, ended or run out)."""
    digest = token_digest(token)
    row = session.execute(_IDENTIFY.where(sessions.c.id == digest)).first()
    if row is None:
        return None
    if policy.expired(row.created_at, row.last_seen_at, now):
        session.execute(delete(sessions).where(sessions.c.id == digest))
        return None
    if policy.needs_touch(row.last_seen_at, now):
        session.execute(update(sessions).where(sessions.c.id == digest).values(last_seen_at=now))
    return _identity(row)


def _identity(row: Any) -> ConsoleIdentity:
    role = ConsoleRole(row.role)
    principal = Principal(row.user_id, row.organization_unit_id, row.path, row.type, str(role))
    return ConsoleIdentity(row.user_id, row.email, role, row.csrf_token, row.unit_name, principal)
