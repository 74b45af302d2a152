"""The service accounts that sign requests, kept in process memory while nothing changed.

Every signed request needs its account's public key and principal. Reading them
from the database on every request cost a hop to the database thread each time;
here they are kept, and trusted only while the counter of account changes (the
``service_accounts`` row of ``id_counters``, bumped by triggers in the same
transaction as any change to a service account or to its unit's path or type,
migration 0027) still reads what it read when they were loaded. The moment it
moved, every kept account is dropped and the request's account is read again: a
deleted, re-keyed or moved account is refused, or seen anew, on its very next
request, whichever process changed it (docs/security.md).

Where the counter is read on each request:

* SQLite: on a connection of its own, on the event loop (``Database.loop_reader``),
  a few microseconds, before the account is used (:meth:`AccountCache.get`);
* PostgreSQL: in the shared ledger's one transaction of the request
  (adapters/request_state.py), after the signature was checked with the kept
  key; when it moved, the verifier reads the account again and checks once more
  (``SignatureVerifier.check_signature``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from keyautomat.service_layer.accounts import AccountKey

# Kept accounts at most: names of accounts that exist, so only as many as there are,
# but bounded all the same.
MAX_ACCOUNTS = 10_000


class AccountCache:
    def __init__(
        self,
        load: Callable[[str], Awaitable[tuple[AccountKey | None, int]]],
        current_version: Callable[[], Awaitable[int]] | None = None,
        *,
        max_accounts: int = MAX_ACCOUNTS,
    ) -> None:
        """``load`` reads an account and the counter (counter first, one transaction);
        ``current_version`` reads the counter alone, on every :meth:`get`; without it the
        caller reports the counter through :meth:`observe` on each request."""
        self._load = load
        self._current_version = current_version
        self.max_accounts = max_accounts
        self.version: int | None = None
        self._accounts: dict[str, AccountKey] = {}

    def observe(self, version: int) -> bool:
        """Takes note of the counter as just read; True when it moved since the kept
        accounts were read (they are then all dropped)."""
        if version == self.version:
            return False
        self._accounts.clear()
        self.version = version
        return True

    async def get(self, account_id: str) -> AccountKey | None:
        """The account, kept or read; None when there is no such account."""
        if self._current_version is not None:
            self.observe(await self._current_version())
        account = self._accounts.get(account_id)
        if account is not None:
            return account
        account, version = await self._load(account_id)
        self.observe(version)
        if account is not None and len(self._accounts) < self.max_accounts:
            # Unknown names are not kept: anyone can send those.
            self._accounts[account_id] = account
        return account

    def __len__(self) -> int:
        return len(self._accounts)
