"""Idempotent writes: a retried POST or PATCH with the same ``Idempotency-Key`` has one effect.

docs/api.md, "Idempotent requests", says what a client sees. Per (service account,
key) one row of ``idempotency_keys`` lives for ``KEYAUTOMAT_IDEMPOTENCY_TTL_HOURS``:

1. **Claim.** Before the request is handled, a short transaction of its own inserts
   the row (the primary key is the guard, on both engines). A request that finds
   the row instead is judged by :func:`judge`: replayed, refused (another request,
   or still in progress), or allowed to take the row over when the claim is older
   than ``KEYAUTOMAT_IDEMPOTENCY_CLAIM_SECONDS`` (its process was killed mid-request)
   or the row has expired. A takeover is a compare-and-set on the claim's random
   token, so of two requests taking over one claim only one wins.
2. **Finish.** The response is stored in the row, guarded by the same token (a
   claim taken over meanwhile is no longer ours to finish), or, for a 5xx or 429,
   the row is deleted so that a retry runs the request again.

Stored headers and bodies are always encrypted with the secret key: several
responses carry secrets (a new service account's private key, an automat's
installation pincode, contract pincodes, a webhook subscription's secret), and
one rule for all costs microseconds, where a list of secret-bearing routes would
have to follow every new route.

The rules (key syntax, fingerprint, verdicts, what is stored) are pure functions
tested without a database (tests/unit/test_idempotency_rules.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.orm import Session

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.orm import idempotency_keys as t
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.devices import insert_ignoring_duplicates

HEADER = "Idempotency-Key"
HEADER_NAME = HEADER.lower().encode()
REPLAYED_HEADER = (b"idempotent-replayed", b"true")
COVERED_METHODS = frozenset({"POST", "PATCH"})
MAX_KEY_LENGTH = 255

BAD_KEY = f"{HEADER}: must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
REPEATED_KEY = f"{HEADER}: must be given once"
MISMATCH = (
    f"{HEADER}: this key was used for a different request (method, path or body); "
    "use a new key for a new request"
)
IN_PROGRESS = f"{HEADER}: a request with this key is in progress; retry later"

# Response headers replayed with the stored body; the others describe the transfer
# (Content-Length is recomputed) or nothing a route of ours sends.
KEPT_HEADERS = frozenset({b"content-type", b"location", b"allow"})

PRUNE_BATCH = 500
# How often a worker deletes the expired keys (a chore of every worker).
PRUNE_EVERY = timedelta(minutes=1)
"""Expired rows deleted per transaction, so that a prune never holds locks for long."""


def key_problem(values: Sequence[bytes]) -> str | None:
    """Why the ``Idempotency-Key`` header values of a request are refused, or None.

    1..255 printable ASCII characters (space to tilde), given once: the key is
    stored, compared and shown in logs, and nothing outside that range is needed to
    spell a UUID or any other sensible key.
    """
    if len(values) != 1:
        return REPEATED_KEY
    value = values[0]
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all(0x20 <= byte <= 0x7E for byte in value):
        return BAD_KEY
    return None


def fingerprint(method: str, target: bytes, body: bytes) -> str:
    """SHA-256 (hex) of what makes two requests the same: method, raw path and query, body.

    The body is the one the signature was verified over. Neither a method nor a
    request target can hold a line break, so the separators keep the parts apart.
    """
    digest = hashlib.sha256(method.upper().encode())
    digest.update(b"\n")
    digest.update(target)
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def is_stored(status: int) -> bool:
    """Whether a response is kept for replays. A 5xx (our fault, or the iLOQ system's)
    and a 429 say "try again": the key is released so that a retry runs the request.
    Everything else, refusals of the input included, is the answer to this request."""
    return status < 500 and status != 429


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    @classmethod
    def kept(
        cls, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> StoredResponse:
        """The response as it will be stored: only the :data:`KEPT_HEADERS`."""
        return cls(status, tuple((n, v) for n, v in headers if n.lower() in KEPT_HEADERS), body)

    def seal(self, box: SecretBox) -> str:
        """Headers and body, encrypted (the status is stored in the clear)."""
        plain = {
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
            "body": base64.b64encode(self.body).decode(),
        }
        return box.encrypt(json.dumps(plain, separators=(",", ":")))

    @classmethod
    def unseal(cls, box: SecretBox, status: int, sealed: str) -> StoredResponse:
        plain = json.loads(box.decrypt(sealed))
        headers = tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in plain["headers"])
        return cls(status, headers, base64.b64decode(plain["body"]))


class Verdict(Enum):
    TAKE_OVER = "take over"
    MISMATCH = "mismatch"
    REPLAY = "replay"
    IN_PROGRESS = "in progress"


@dataclass(frozen=True, slots=True)
class KeyRow:
    """What the claim reads of a key's row."""

    fingerprint: str
    token: str
    claimed_at: datetime
    expires_at: datetime
    status: int | None
    response: str | None


def judge(row: KeyRow, fingerprint: str, now: datetime, claim_bound: timedelta) -> Verdict:
    """What a request with ``fingerprint`` does about the row its key already has.

    An expired row counts as absent. A different request under a live key is refused
    even while the first is in progress: it is the client's mistake either way. A
    claim older than ``claim_bound`` was left by a process that died mid-request.
    """
    if row.expires_at <= now:
        return Verdict.TAKE_OVER
    if row.fingerprint != fingerprint:
        return Verdict.MISMATCH
    if row.status is not None:
        return Verdict.REPLAY
    if row.claimed_at + claim_bound > now:
        return Verdict.IN_PROGRESS
    return Verdict.TAKE_OVER


@dataclass(frozen=True, slots=True)
class Claimed:
    """The request holds the key: handle it, then :meth:`IdempotencyStore.finish`."""

    token: str


@dataclass(frozen=True, slots=True)
class Refused:
    verdict: Verdict  # MISMATCH or IN_PROGRESS


@dataclass(frozen=True, slots=True)
class Replay:
    response: StoredResponse


ClaimOutcome = Claimed | Refused | Replay

_WHERE_KEY = (t.c.account_id == bindparam("b_account_id")) & (t.c.key == bindparam("b_key"))
_READ = select(
    t.c.fingerprint, t.c.token, t.c.claimed_at, t.c.expires_at, t.c.status, t.c.response
).where(_WHERE_KEY)
_TAKE_OVER = (
    update(t)
    .where(_WHERE_KEY, t.c.token == bindparam("b_seen"))
    .values(
        fingerprint=bindparam("b_fingerprint"),
        token=bindparam("b_token"),
        claimed_at=bindparam("b_now", type_=t.c.claimed_at.type),
        expires_at=bindparam("b_expires", type_=t.c.expires_at.type),
        status=None,
        response=None,
    )
    .returning(t.c.token)
)
_FINISH = (
    update(t)
    .where(_WHERE_KEY, t.c.token == bindparam("b_token"))
    .values(status=bindparam("b_status"), response=bindparam("b_response"))
    .returning(t.c.token)
)
_RELEASE = delete(t).where(_WHERE_KEY, t.c.token == bindparam("b_token"), t.c.status.is_(None))
_EXPIRED = (
    select(t.c.account_id, t.c.key)
    .where(t.c.expires_at <= bindparam("now"))
    .limit(bindparam("limit"))
)
# The outer condition again: a row taken over since the inner SELECT read it stays.
_PRUNE = delete(t).where(
    tuple_(t.c.account_id, t.c.key).in_(_EXPIRED),
    t.c.expires_at <= bindparam("now"),
)

# A claim meets at most: an insert refused, a row gone before it was read (released
# or pruned), a takeover lost to another request. Past that it reports "in progress".
_CLAIM_ATTEMPTS = 3


def claim(
    session: Session,
    account_id: str,
    key: str,
    fingerprint: str,
    *,
    now: datetime,
    ttl: timedelta,
    claim_bound: timedelta,
    box: SecretBox,
) -> ClaimOutcome:
    """Claim ``key`` for the request, or say why not (run it in a transaction of its own,
    committed before the request is handled, so that other requests see the claim)."""
    token = uuid.uuid4().hex
    where = {"b_account_id": account_id, "b_key": key}
    for _ in range(_CLAIM_ATTEMPTS):
        row = {
            "account_id": account_id,
            "key": key,
            "fingerprint": fingerprint,
            "token": token,
            "claimed_at": now,
            "expires_at": now + ttl,
            "status": None,
            "response": None,
        }
        if insert_ignoring_duplicates(session, t, row):
            return Claimed(token)
        found = session.execute(_READ, where).first()
        if found is None:
            continue
        stored = KeyRow(*found)
        verdict = judge(stored, fingerprint, now, claim_bound)
        if verdict is Verdict.REPLAY:
            # A finished row has both (``finish`` writes them together).
            assert stored.status is not None
            assert stored.response is not None
            return Replay(StoredResponse.unseal(box, stored.status, stored.response))
        if verdict is not Verdict.TAKE_OVER:
            return Refused(verdict)
        taken = session.execute(
            _TAKE_OVER,
            {
                **where,
                "b_seen": stored.token,
                "b_fingerprint": fingerprint,
                "b_token": token,
                "b_now": now,
                "b_expires": now + ttl,
            },
        ).first()
        if taken is not None:
            return Claimed(token)
    return Refused(Verdict.IN_PROGRESS)


def finish(
    session: Session,
    account_id: str,
    key: str,
    token: str,
    response: StoredResponse,
    box: SecretBox,
) -> bool:
    """Store the response of the claim ``token``; False when the claim is no longer there
    (taken over after the claim bound, or expired and pruned)."""
    values = {
        "b_account_id": account_id,
        "b_key": key,
        "b_token": token,
        "b_status": response.status,
        "b_response": response.seal(box),
    }
    return session.execute(_FINISH, values).first() is not None


def release(session: Session, account_id: str, key: str, token: str) -> None:
    """Give the key up (the request failed with a 5xx): a retry runs the request again."""
    session.execute(_RELEASE, {"b_account_id": account_id, "b_key": key, "b_token": token})


def prune(session: Session, now: datetime, limit: int = PRUNE_BATCH) -> int:
    """Delete up to ``limit`` rows expired by ``now``; how many went."""
    result = session.execute(_PRUNE, {"now": now, "limit": limit})
    return int(result.rowcount)  # type: ignore[attr-defined]


async def prune_expired(db: Database, now: datetime, batch: int = PRUNE_BATCH) -> int:
    """Delete every row expired by ``now``, ``batch`` rows per short transaction; how many
    went."""
    total = 0
    while True:
        deleted = await db.run(lambda s: prune(s, now, batch))
        total += deleted
        if deleted < batch:
            return total


class IdempotencyStore:
    """The claims and responses of one process, each in a short transaction of its own."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        clock: Clock,
        *,
        ttl: timedelta,
        claim_bound: timedelta,
    ) -> None:
        self.db = db
        self.box = box
        self.clock = clock
        self.ttl = ttl
        self.claim_bound = claim_bound

    async def claim(self, account_id: str, key: str, fingerprint: str) -> ClaimOutcome:
        now = self.clock.now()
        return await self.db.run(
            lambda s: claim(
                s,
                account_id,
                key,
                fingerprint,
                now=now,
                ttl=self.ttl,
                claim_bound=self.claim_bound,
                box=self.box,
            )
        )

    async def finish(self, account_id: str, key: str, token: str, response: StoredResponse) -> bool:
        return await self.db.run(lambda s: finish(s, account_id, key, token, response, self.box))

    async def release(self, account_id: str, key: str, token: str) -> None:
        await self.db.run(lambda s: release(s, account_id, key, token))
