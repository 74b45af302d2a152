"""Request state every API process shares, in the database (PostgreSQL deployments).

- the signatures accepted within the replay window (``request_signatures``): a
  signature accepted by any process, before or after any restart, is a replay to
  every process until it expires;
- each service account's token bucket (``rate_buckets``), spent by whichever
  process the request reaches.

PostgreSQL only: SQLite installations run one API process, which keeps both in
memory (a restart does not reopen the replay window there either: a process
refuses requests signed before it started). Each check is one short transaction
on the database thread pool (:class:`SharedLedger`). Rows are keyed
by a SHA-256, so no signature is stored, and expired ones are pruned as requests
go (:data:`PRUNE_EVERY`).
"""

from __future__ import annotations

import hashlib
import math
from itertools import count
from typing import NamedTuple

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from keyautomat.adapters.db import Database
from keyautomat.adapters.orm import rate_buckets, request_signatures
from keyautomat.service_layer.accounts import ACCOUNTS_VERSION

# Expired signatures are deleted on one request in this many.
PRUNE_EVERY = 500

_PRUNE = delete(request_signatures).where(request_signatures.c.expires_ms < bindparam("now_ms"))
_LOCK_BUCKET = (
    select(rate_buckets.c.tokens, rate_buckets.c.stamp)
    .where(rate_buckets.c.account_id == bindparam("account_id"))
    .with_for_update()
)
_SPEND = (
    update(rate_buckets)
    .where(rate_buckets.c.account_id == bindparam("b_account_id"))
    .values(tokens=bindparam("b_tokens"), stamp=bindparam("b_stamp"))
)


# PostgreSQL's INSERT ... ON CONFLICT DO NOTHING; RETURNING says whether a row was written,
# and brings the counter of service account changes along (entrypoints/api/account_cache.py):
# no round trip of its own.
_REMEMBER = (
    pg_insert(request_signatures)
    .on_conflict_do_nothing()
    .returning(request_signatures.c.digest, ACCOUNTS_VERSION.scalar_subquery())
)
_OPEN_BUCKET = pg_insert(rate_buckets).on_conflict_do_nothing()


class Acceptance(NamedTuple):
    """What a request ledger (entrypoints/api/auth.py, ``RequestLedger``) answers for a
    request whose signature holds."""

    first: bool
    """False: the signature was seen before (a replay)."""
    wait: int | None
    """Seconds to wait when the account is over its rate budget, else None."""
    accounts_version: int | None = None
    """The counter of service account changes, when the ledger read it in the same
    transaction; None when it did not."""


class SharedLedger:
    """``RequestLedger`` (entrypoints/api/auth.py) in the database: the signature is
    remembered and a token spent in one short transaction."""

    def __init__(self, db: Database, *, ttl_ms: int, rate: float, burst: int) -> None:
        self.db = db
        self.ttl_ms = ttl_ms
        self.rate = rate  # a second; 0: no rate limit
        self.burst = burst
        self._calls = count()

    def covers(self, timestamp_ms: int) -> bool:
        """The table outlives every process: it vouches for any time in the window."""
        return True

    async def over_budget(self, account_id: str, now: float) -> int | None:
        # Looking before the signature is checked would cost a round trip on every
        # request to spare a signature check on the few sent over budget: the bucket
        # is read and spent once, in :meth:`accept`.
        return None

    async def accept(self, account_id: str, signature: str, now_ms: int) -> Acceptance:
        digest = hashlib.sha256(f"{account_id}\n{signature}".encode()).hexdigest()
        prune = next(self._calls) % PRUNE_EVERY == 0

        def work(session: Session) -> Acceptance:
            if prune:
                session.execute(_PRUNE, {"now_ms": now_ms})
            row = {"digest": digest, "expires_ms": now_ms + self.ttl_ms}
            remembered = session.execute(_REMEMBER, row).first()
            if remembered is None:
                return Acceptance(False, None)
            wait = self._spend(session, account_id, now_ms / 1000)
            return Acceptance(True, wait, int(remembered[1]))

        return await self.db.run(work)

    def _spend(self, session: Session, account_id: str, now: float) -> int | None:
        """The token bucket of spec/gaps.md B7 (``rate`` a second, ``burst`` at most), one
        row per account; None when a token was spent, else seconds to wait."""
        if self.rate <= 0:
            return None
        # The row exists and is locked before it is read: two processes spending at
        # once queue on it instead of both taking the last token.
        start = {"account_id": account_id, "tokens": float(self.burst), "stamp": now}
        session.execute(_OPEN_BUCKET, start)
        bucket = session.execute(_LOCK_BUCKET, {"account_id": account_id}).one()
        tokens = min(float(self.burst), bucket.tokens + max(0.0, now - bucket.stamp) * self.rate)
        wait = None if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate))
        left = tokens - 1 if wait is None else tokens
        session.execute(_SPEND, {"b_account_id": account_id, "b_tokens": left, "b_stamp": now})
        return wait
