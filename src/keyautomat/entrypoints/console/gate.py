"""Signing in: passwords checked off the event loop, and the login throttle (docs/console.md).

Two books: one per account, on the user's row (every process, every restart sees
it; ``service_layer/console_users.record_failed_login``), and one per client
address, in this process. Both follow the doubling back-off of the device
pincodes (``domain/attempts.py``). A blocked account is refused without looking
at the password, so guessing on while blocked learns nothing; an email no user
has is throttled like one that exists (in memory), and answered with the same
words and the same Argon2 work, so neither the answer nor its time tells which
emails exist.

Argon2 costs a tenth of a second of CPU: at most two checks run at once (the
machine's cores), and past a short queue a login is refused at once (503) rather
than left to wait (DESIGN.md, "Overload").
"""

from __future__ import annotations

import asyncio
import enum
from datetime import datetime, timedelta

from keyautomat.adapters.db import Database
from keyautomat.adapters.passwords import Passwords
from keyautomat.config import Settings
from keyautomat.domain.attempts import AttemptLimiter
from keyautomat.domain.console import MAX_PASSWORD_LENGTH, SessionPolicy, email_key
from keyautomat.domain.errors import InvalidInput
from keyautomat.service_layer import console_users
from keyautomat.service_layer.console_users import NewSession

HASHING_AT_ONCE = 2
MAX_WAITING = 16


class Refusal(enum.Enum):
    WRONG = "login.wrong"
    THROTTLED = "login.throttled"
    BUSY = "login.busy"


class Busy(Exception):
    """Too many password checks are waiting already."""


class LoginGate:
    def __init__(self, settings: Settings, passwords: Passwords) -> None:
        cap = timedelta(seconds=settings.console_login_backoff_max_seconds)
        self.passwords = passwords
        self.account_rule = AttemptLimiter(
            free=settings.console_login_failures_per_account, cap=cap
        )
        # Emails no user has: throttled as if they had a row.
        self.unknown = AttemptLimiter(free=settings.console_login_failures_per_account, cap=cap)
        self.addresses = AttemptLimiter(free=settings.console_login_failures_per_address, cap=cap)
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0

    async def _hashing(self, work: str, *args: str | None) -> object:
        if self._waiting >= MAX_WAITING:
            raise Busy
        if self._slots is None:
            self._slots = asyncio.Semaphore(HASHING_AT_ONCE)
        self._waiting += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(getattr(self.passwords, work), *args)
        finally:
            self._waiting -= 1

    async def verify(self, stored: str | None, password: str) -> bool:
        if len(password) > MAX_PASSWORD_LENGTH:
            return False  # no password is that long: no work for it
        return bool(await self._hashing("verify", stored, password))

    async def hash(self, password: str) -> str:
        return str(await self._hashing("hash", password))

    async def login(
        self,
        db: Database,
        email: str,
        password: str,
        address: str,
        now: datetime,
        policy: SessionPolicy,
    ) -> NewSession | Refusal:
        if self.addresses.blocked(address, now):
            return Refusal.THROTTLED
        try:
            key: str | None = email_key(email)
        except InvalidInput:
            key = None
        candidate = None
        if key is not None:
            candidate = await db.run(lambda s: console_users.login_candidate(s, key))
        if candidate is not None and candidate.blocked_until and candidate.blocked_until > now:
            return Refusal.THROTTLED
        if candidate is None and key is not None and self.unknown.blocked(key, now):
            return Refusal.THROTTLED
        try:
            right = await self.verify(candidate.password_hash if candidate else None, password)
        except Busy:
            return Refusal.BUSY
        if candidate is None or not right:
            self.addresses.failed(address, now)
            if candidate is not None:
                user_id = candidate.user_id
                await db.run(
                    lambda s: console_users.record_failed_login(s, user_id, now, self.account_rule)
                )
            elif key is not None:
                self.unknown.failed(key, now)
            return Refusal.WRONG
        new_hash = None
        if self.passwords.needs_rehash(candidate.password_hash):
            new_hash = await self.hash(password)
        user_id = candidate.user_id
        return await db.run(
            lambda s: console_users.start_session(s, user_id, now, policy, new_hash=new_hash)
        )

    async def check_own_password(
        self, db: Database, user_id: str, password: str, now: datetime
    ) -> bool | Refusal:
        """The signed-in user's current password, before it may set a new one: a wrong one
        counts against the account like a failed login (a stolen session cannot guess)."""
        candidate = await db.run(lambda s: console_users.password_hash_of(s, user_id))
        if candidate.blocked_until and candidate.blocked_until > now:
            return Refusal.THROTTLED
        try:
            right = await self.verify(candidate.password_hash, password)
        except Busy:
            return Refusal.BUSY
        if not right:
            await db.run(
                lambda s: console_users.record_failed_login(s, user_id, now, self.account_rule)
            )
        return right
