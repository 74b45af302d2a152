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
  key; when it differs from the counter the account was read under, the verifier
  reads the account again and checks once more (``SignatureVerifier.check_signature``).
  Each answer of :meth:`AccountCache.get` therefore carries the counter it is good
  for: requests verified at the same time each compare against their own, so one
  of them seeing the change first cannot make the others' stale accounts look fresh.

A signature that does not match a kept key is checked once more against the account
read anew (:meth:`AccountCache.reload`): a key changed by another process is then
usable on its first request, not only after some other request noticed the counter.
That read is what every request cost before the cache; only a bad signature pays it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keyautomat.service_layer.accounts import AccountKey

# Kept accounts at most: names of accounts that exist, so only as many as there are,
# but bounded all the same.
MAX_ACCOUNTS = 10_000


@dataclass(frozen=True, slots=True)
class Kept:
    """An answer of the cache: the account (None: there is none), the value of the counter
    it was read under or last checked against (None: nothing to compare later), and
    whether it came from memory rather than the database just now."""

    account: AccountKey | None
    version: int | None
    cached: bool


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
        caller compares each answer's ``version`` with the counter it reads later."""
        self._load = load
        self._current_version = current_version
        self.max_accounts = max_accounts
        self.version: int | None = None
        self._accounts: dict[str, AccountKey] = {}

    def observe(self, version: int) -> bool:
        """Takes note of the counter as just read; True when it moved on since the kept
        accounts were read (they are then all dropped). The counter only grows: a value
        below the one kept is an older read finishing late, and changes nothing."""
        if self.version is not None and version <= self.version:
            return False
        self._accounts.clear()
        self.version = version
        return True

    async def get(self, account_id: str) -> Kept:
        """The account, kept or read."""
        if self._current_version is not None:
            self.observe(await self._current_version())
        account = self._accounts.get(account_id)
        if account is not None:
            return Kept(account, self.version, cached=True)
        return await self._read(account_id)

    async def reload(self, account_id: str) -> Kept:
        """The account read anew from the database, whatever is kept."""
        self._accounts.pop(account_id, None)
        return await self._read(account_id)

    async def _read(self, account_id: str) -> Kept:
        account, version = await self._load(account_id)
        self.observe(version)
        # Unknown names are not kept (anyone can send those), nor an account read under a
        # counter that has moved on meanwhile.
        fresh = version == self.version and len(self._accounts) < self.max_accounts
        if account is not None and fresh:
            self._accounts[account_id] = account
        return Kept(account, version, cached=False)

    def __len__(self) -> int:
        return len(self._accounts)


class Uncached:
    """Accounts read from the database on every request (a plain lookup), for a verifier
    built without a cache."""

    def __init__(self, lookup: Callable[[str], Awaitable[AccountKey | None]]) -> None:
        self._lookup = lookup

    def observe(self, version: int) -> bool:
        return False

    async def get(self, account_id: str) -> Kept:
        return Kept(await self._lookup(account_id), None, cached=False)

    async def reload(self, account_id: str) -> Kept:
        return await self.get(account_id)
