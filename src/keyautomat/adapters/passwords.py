"""Console passwords, hashed with Argon2id (argon2-cffi), and checked in constant work.

The default parameters are argon2-cffi's (RFC 9106's low-memory profile: 64 MiB,
3 passes, 4 lanes), about 0.15 s of CPU per hash on a small server: callers run
``hash`` and ``verify`` off the event loop and off the database thread.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    @functools.cached_property
    def _stand_in(self) -> str:
        # Checked when no user has the email given, so that an unknown email takes as
        # long to refuse as a wrong password and the time tells nobody which emails exist.
        return self.hasher.hash("no user has this password")

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches the hash ``stored``; with ``stored`` None (no such
        user) the same work is done and the answer is False."""
        try:
            return self.hasher.verify(stored or self._stand_in, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """The hash was made with other parameters than today's: store a new one at login."""
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True


def fast_passwords() -> Passwords:
    """Cheap parameters for tests only: the rules are the same, the work is not."""
    return Passwords(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
