"""The verifier trusts a kept account only for the counter of account changes it was read
under, whatever other requests did to the cache meanwhile (entrypoints/api/account_cache.py).

The database is a dict here: ``Accounts`` holds what a committed transaction would show,
and the ledger reports the counter as PostgreSQL's shared ledger does, after the
signature was checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.types import Scope

from keyautomat.adapters.crypto import (
    generate_service_account_key,
    request_hash,
    sign,
    string_to_sign,
)
from keyautomat.adapters.request_state import Acceptance
from keyautomat.entrypoints.api.account_cache import AccountCache
from keyautomat.entrypoints.api.auth import Admitted, Rejection, SignatureVerifier
from keyautomat.service_layer.accounts import AccountKey
from keyautomat.service_layer.principal import Principal

NOW = 1_800_000_000_000
BASE = "https://keys.example.com/v2"
OLD_KEY = generate_service_account_key()
NEW_KEY = generate_service_account_key()
ADMIN = Principal("sa-1", "ou-1", "/ou-1/", 1, "admin")


@dataclass
class Accounts:
    """The committed state: each account and the counter of account changes."""

    version: int = 1
    rows: dict[str, AccountKey] = field(
        default_factory=lambda: {"sa-1": AccountKey(OLD_KEY.public_pem, ADMIN)}
    )
    loads: int = 0

    async def load(self, account_id: str) -> tuple[AccountKey | None, int]:
        self.loads += 1
        return self.rows.get(account_id), self.version

    def change(self, account: AccountKey | None) -> None:
        if account is None:
            del self.rows["sa-1"]
        else:
            self.rows["sa-1"] = account
        self.version += 1


class Ledger:
    """Remembers nothing; reads the counter as of the moment it is asked."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def covers(self, timestamp_ms: int) -> bool:
        return True

    async def over_budget(self, account_id: str, now: float) -> int | None:
        return None

    async def accept(self, account_id: str, signature: str, now_ms: int) -> Acceptance:
        return Acceptance(True, None, self.accounts.version)


def _verifier(accounts: Accounts) -> tuple[SignatureVerifier, AccountCache]:
    cache = AccountCache(accounts.load)
    verifier = SignatureVerifier(
        lookup=cache,
        window_ms=300_000,
        public_bases=(BASE,),
        clock_ms=lambda: NOW,
        ledger=Ledger(accounts),
    )
    return verifier, cache


def _request(private_pem: str, path: str = "/") -> tuple[Scope, dict[bytes, bytes]]:
    message = string_to_sign("sa-1", str(NOW), request_hash("GET", BASE + path, b""))
    headers = {
        b"x-service-account-id": b"sa-1",
        b"x-timestamp": str(NOW).encode(),
        b"x-signature": sign(private_pem, message).encode(),
    }
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": "/v2" + path,
        "raw_path": ("/v2" + path).encode(),
        "query_string": b"",
        "headers": list(headers.items()),
    }
    return scope, headers


async def _admit(verifier: SignatureVerifier, private_pem: str, path: str) -> Admitted:
    scope, headers = _request(private_pem, path)
    admitted = await verifier.admit(scope, headers)
    assert isinstance(admitted, Admitted)
    return admitted


async def _check(
    verifier: SignatureVerifier, admitted: Admitted, private_pem: str, path: str
) -> Principal | Rejection:
    scope, headers = _request(private_pem, path)
    return await verifier.check_signature(scope, headers, b"", admitted)


def test_requests_admitted_before_a_deletion_are_all_refused_whichever_notices_first() -> None:
    accounts = Accounts()
    verifier, _ = _verifier(accounts)

    async def scenario() -> list[Principal | Rejection]:
        await _check(
            verifier, await _admit(verifier, OLD_KEY.private_pem, "/"), OLD_KEY.private_pem, "/"
        )
        first = await _admit(verifier, OLD_KEY.private_pem, "/?a")
        second = await _admit(verifier, OLD_KEY.private_pem, "/?b")
        accounts.change(None)
        return [
            await _check(verifier, first, OLD_KEY.private_pem, "/?a"),
            await _check(verifier, second, OLD_KEY.private_pem, "/?b"),
        ]

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, Rejection) and o.status == 401 for o in outcomes), outcomes


def test_requests_admitted_before_a_role_change_both_act_in_the_new_role() -> None:
    accounts = Accounts()
    verifier, _ = _verifier(accounts)
    lowered = AccountKey(OLD_KEY.public_pem, Principal("sa-1", "ou-1", "/ou-1/", 1, "integration"))

    async def scenario() -> list[Principal | Rejection]:
        first = await _admit(verifier, OLD_KEY.private_pem, "/?a")
        second = await _admit(verifier, OLD_KEY.private_pem, "/?b")
        accounts.change(lowered)
        return [
            await _check(verifier, first, OLD_KEY.private_pem, "/?a"),
            await _check(verifier, second, OLD_KEY.private_pem, "/?b"),
        ]

    assert asyncio.run(scenario()) == [lowered.principal, lowered.principal]


def test_a_new_key_is_good_on_the_very_first_request_after_another_process_re_keyed() -> None:
    accounts = Accounts()
    verifier, _ = _verifier(accounts)

    async def scenario() -> Principal | Rejection:
        await _check(
            verifier, await _admit(verifier, OLD_KEY.private_pem, "/"), OLD_KEY.private_pem, "/"
        )
        accounts.change(AccountKey(NEW_KEY.public_pem, ADMIN))
        return await _check(
            verifier,
            await _admit(verifier, NEW_KEY.private_pem, "/?new"),
            NEW_KEY.private_pem,
            "/?new",
        )

    assert asyncio.run(scenario()) == ADMIN


def test_a_bad_signature_reads_the_account_once_more_and_is_still_refused() -> None:
    accounts = Accounts()
    verifier, _ = _verifier(accounts)
    forged = generate_service_account_key()

    async def scenario() -> Principal | Rejection:
        await _check(
            verifier, await _admit(verifier, OLD_KEY.private_pem, "/"), OLD_KEY.private_pem, "/"
        )
        return await _check(
            verifier, await _admit(verifier, forged.private_pem, "/?x"), forged.private_pem, "/?x"
        )

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, Rejection)
    assert outcome.message == "Invalid signature"
    assert accounts.loads == 2


def test_an_account_read_under_an_older_counter_is_not_kept_once_a_newer_one_was_seen() -> None:
    accounts = Accounts()
    cache = AccountCache(accounts.load)
    cache.observe(5)
    kept = asyncio.run(cache.get("sa-1"))
    assert kept.account is not None
    assert (kept.version, kept.cached) == (1, False)
    assert len(cache) == 0
    assert cache.version == 5


def test_the_counter_kept_never_goes_back() -> None:
    cache = AccountCache(Accounts().load)
    assert cache.observe(3) is True
    assert cache.observe(2) is False
    assert cache.observe(3) is False
    assert cache.version == 3
