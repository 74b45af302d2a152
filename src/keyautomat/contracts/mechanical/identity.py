"""Strong authentication of mechanical contracts: userVerification "2" (gaps.md F3).

A unit's admins configure an OpenID Connect provider; a "2" contract's codes stay
off the automats until its contact has followed the link of
``contractSignatureRequested``, logged in at that provider, and the identity in
the ID token matches the contract's contact. Then the contract is verified, the
codes go to the automats, ``contract-update`` is published and a record says
who was verified, how and when. Anything else changes nothing.

The steps, each in its own short transaction, with the provider's answers
awaited between them (never inside a transaction):

1. ``start`` (``GET /identify/{token}``): the link is checked (known, for "2",
   not used, not expired, contract not over), a login row is stored under the
   hash of a fresh state, and the browser is sent to the provider with the
   state, a nonce and a PKCE challenge (both derived from the state with a
   server key, so the database alone holds neither).
2. ``finish`` (``GET /identify/callback``): the state must be the one this
   browser started (a cookie) and an unused, unexpired login; it is used up
   before the provider is asked. The code is exchanged, the ID token checked
   (``adapters/oidc.py``), the identity matched (``domain/identity.py``), and
   the contract verified if its link is still the one the login started from.

docs/strong-authentication.md describes the whole of it.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.oidc import (
    LoginRefused,
    OidcProviders,
    ProviderError,
    ProviderUnreachable,
    TokenRejected,
    authorization_url,
    login_secrets,
    subject_hash,
)
from keyautomat.adapters.orm_contracts import contracts
from keyautomat.adapters.orm_identity import (
    strong_auth_logins,
    strong_auth_providers,
    strong_auth_verifications,
)
from keyautomat.adapters.orm_mechanical import strong_auth_units
from keyautomat.adapters.outbound import UnsafeTarget
from keyautomat.contracts import service
from keyautomat.contracts.mechanical.kind import MechanicalKind, token_hash
from keyautomat.contracts.mechanical.signature import contract_for_token, release_codes
from keyautomat.contracts.model import Contract
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.identity import (
    LinkRefusal,
    MatchRule,
    ProviderSettings,
    check_provider,
    link_refusal,
    match_identity,
)
from keyautomat.domain.notifications import ContractView, NotificationType
from keyautomat.service_layer import devices, notifications
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.principal import Principal

if TYPE_CHECKING:
    from keyautomat.bootstrap import Container

log = logging.getLogger(__name__)

# A login must come back from the provider within this time.
LOGIN_LIFETIME = timedelta(minutes=10)
# Logins of one contract that may be under way at once: a leaked link cannot fill the table.
OPEN_LOGINS_PER_CONTRACT = 10
# Finished and expired logins are kept this long (to tell a replay from a stranger), then
# the worker deletes them.
LOGIN_RETENTION = timedelta(days=1)
PRUNE_EVERY = timedelta(hours=1)
PRUNE_BATCH = 500
# What the server key is derived for (adapters/crypto.py): the nonce and PKCE verifier of
# a login, and the keyed hash of who logged in.
LOGIN_KEY = "strong authentication login"
SUBJECT_KEY = "strong authentication subject"
# Where the provider sends the browser back, under the public base.
CALLBACK_PATH = "/identify/callback"


# --- a unit's settings (admin API) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredProvider:
    settings: ProviderSettings
    client_secret: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UnitStrongAuth:
    """What ``GET /admin/organizationunits/{id}/strong-authentication`` answers."""

    enabled: bool
    provider: StoredProvider | None


_PROVIDER = select(strong_auth_providers).where(
    strong_auth_providers.c.organization_unit_id == bindparam("unit_id")
)
_ENABLED = select(strong_auth_units.c.organization_unit_id).where(
    strong_auth_units.c.organization_unit_id == bindparam("unit_id")
)


def load_provider(session: Session, unit_id: str, box: SecretBox) -> StoredProvider | None:
    row = session.execute(_PROVIDER, {"unit_id": unit_id}).first()
    if row is None:
        return None
    rules = tuple(MatchRule(r["claim"], r["contact"]) for r in json.loads(row.match_rules))
    return StoredProvider(
        settings=ProviderSettings(
            issuer=row.issuer,
            client_id=row.client_id,
            scopes=tuple(json.loads(row.scopes)),
            match=rules,
            acr_values=tuple(json.loads(row.acr_values)),
        ),
        client_secret=box.decrypt(row.client_secret_encrypted),
        updated_at=row.updated_at,
    )


def read_settings(
    session: Session, principal: Principal, unit_id: str, box: SecretBox
) -> UnitStrongAuth:
    """The unit's strong authentication; admins of its subtree only (else 403/404)."""
    check_scope(session, principal, unit_id)
    enabled = session.scalar(_ENABLED, {"unit_id": unit_id}) is not None
    return UnitStrongAuth(enabled, load_provider(session, unit_id, box))


def check_scope(session: Session, principal: Principal, unit_id: str) -> None:
    """Admins of the unit's subtree only: 403 for another role, 404 out of scope."""
    principal.require_admin()
    notifications.scoped_unit(session, principal, unit_id)


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """A ``PUT``: ``keep_provider`` when the body had no ``provider``, else ``provider``
    (None removes it); ``client_secret`` None keeps the stored one for the same client."""

    enabled: bool
    provider: ProviderSettings | None
    keep_provider: bool
    client_secret: str | None


def write_settings(
    session: Session,
    principal: Principal,
    unit_id: str,
    change: SettingsChange,
    *,
    box: SecretBox,
    now: datetime,
) -> UnitStrongAuth:
    """Store a ``PUT``. Enabling needs a provider. Disabling does not touch contracts that
    already ask for "2"; it only refuses new ones."""
    check_scope(session, principal, unit_id)
    stored = load_provider(session, unit_id, box)
    p = strong_auth_providers.c
    provider, enabled = change.provider, change.enabled
    if not change.keep_provider and provider is None:
        session.execute(delete(strong_auth_providers).where(p.organization_unit_id == unit_id))
        stored = None
    elif provider is not None:
        secret = change.client_secret
        if secret is None:
            same_client = stored is not None and (
                stored.settings.issuer,
                stored.settings.client_id,
            ) == (provider.issuer, provider.client_id)
            if stored is None or not same_client:
                raise InvalidInput("provider.clientSecret", "is required for a new client")
            secret = stored.client_secret
        values = {
            "issuer": provider.issuer,
            "client_id": provider.client_id,
            "client_secret_encrypted": box.encrypt(secret),
            "scopes": json.dumps(list(provider.scopes)),
            "match_rules": json.dumps(
                [{"claim": r.claim, "contact": r.contact} for r in provider.match]
            ),
            "acr_values": json.dumps(list(provider.acr_values)),
            "updated_at": now,
        }
        # Insert, or update the row that exists (or that a concurrent PUT just inserted).
        if stored is not None or not devices.insert_ignoring_duplicates(
            session, strong_auth_providers, {"organization_unit_id": unit_id, **values}
        ):
            session.execute(
                update(strong_auth_providers)
                .where(p.organization_unit_id == unit_id)
                .values(values)
            )
        stored = StoredProvider(provider, secret, now)
    if enabled and stored is None:
        raise InvalidInput("provider", "is required to enable strong authentication")
    if enabled:
        devices.insert_ignoring_duplicates(
            session, strong_auth_units, {"organization_unit_id": unit_id}
        )
    else:
        session.execute(
            delete(strong_auth_units).where(strong_auth_units.c.organization_unit_id == unit_id)
        )
    return UnitStrongAuth(enabled, stored)


# --- what the guest's pages say -----------------------------------------------------------


class Outcome(StrEnum):
    """How a visit of the link or a return from the provider ended."""

    UNKNOWN_LINK = "unknown-link"
    USED = "used"
    EXPIRED = "expired"
    ENDED = "ended"
    UNAVAILABLE = "unavailable"  # no provider, no public URL, provider unreachable
    TOO_MANY = "too-many"
    FOREIGN = "foreign"  # the login was not started in this browser
    UNKNOWN_LOGIN = "unknown-login"  # no such login, or already answered
    LOGIN_EXPIRED = "login-expired"
    REFUSED = "refused"  # the provider did not confirm the login
    UNREACHABLE = "unreachable"
    INVALID_TOKEN = "invalid-token"  # noqa: S105 - an outcome, not a secret
    MISMATCH = "mismatch"
    LINK_CHANGED = "link-changed"  # a new link was sent, or the contract changed meanwhile
    REDIRECT = "redirect"  # off to the provider
    VERIFIED = "verified"


_LINK_OUTCOMES = {
    LinkRefusal.USED: Outcome.USED,
    LinkRefusal.EXPIRED: Outcome.EXPIRED,
    LinkRefusal.ENDED: Outcome.ENDED,
}


@dataclass(frozen=True, slots=True)
class Result:
    """What the page shows: the outcome, a reason safe to show (no secret, no provider
    text verbatim), and on success what the guest needs at the automat."""

    outcome: Outcome
    reason: str | None = None
    redirect_to: str | None = None
    state: str | None = None
    view: ContractView | None = None


# --- the flow -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claimed:
    contract_id: str
    link_hash: str
    unit_id: str
    provider: StoredProvider


_OPEN_LOGINS = select(func.count()).where(
    strong_auth_logins.c.contract_id == bindparam("contract_id"),
    strong_auth_logins.c.expires_at > bindparam("now"),
    strong_auth_logins.c.finished_at.is_(None),
)
_LOCK_CONTRACT = (
    select(contracts.c.id).where(contracts.c.id == bindparam("contract_id")).with_for_update()
)
_LOGIN = select(strong_auth_logins).where(
    strong_auth_logins.c.state_hash == bindparam("state_hash")
)
_USE_LOGIN = (
    update(strong_auth_logins)
    .where(
        strong_auth_logins.c.state_hash == bindparam("b_state_hash"),
        strong_auth_logins.c.finished_at.is_(None),
    )
    .values(finished_at=bindparam("b_now"), outcome=bindparam("b_outcome"))
)
_SET_OUTCOME = (
    update(strong_auth_logins)
    .where(strong_auth_logins.c.state_hash == bindparam("b_state_hash"))
    .values(outcome=bindparam("b_outcome"))
)


class StrongAuthentication:
    """The flow's use cases for one request, over the container's long-lived parts."""

    def __init__(
        self,
        *,
        db: Database,
        box: SecretBox,
        oidc: OidcProviders,
        clock: Clock,
        kind: MechanicalKind,
    ) -> None:
        self.db = db
        self.box = box
        self.oidc = oidc
        self.clock = clock
        self.kind = kind
        # Under the public base of the links; "" when KEYAUTOMAT_PUBLIC_URL is not set:
        # the provider could then send nobody back.
        base = kind.signature_base_url
        self.redirect_uri = f"{base}{CALLBACK_PATH}" if base.startswith("http") else ""

    @classmethod
    def of(cls, container: Container) -> StrongAuthentication:
        kind = container.contract_kinds[MechanicalKind.name]
        assert isinstance(kind, MechanicalKind)
        return cls(
            db=container.db,
            box=container.secrets,
            oidc=container.oidc,
            clock=container.clock,
            kind=kind,
        )

    # --- admin ---------------------------------------------------------------------------

    async def configure(
        self, principal: Principal, unit_id: str, change: SettingsChange
    ) -> UnitStrongAuth:
        """``PUT``: a new provider is checked against its discovery document before it is
        stored, so a typo is a 400 now rather than a guest's failed login later."""
        await self.db.run(lambda s: check_scope(s, principal, unit_id))
        provider = change.provider
        if provider is not None:
            check_provider(provider)
            try:
                self.oidc.check_issuer(provider.issuer)
            except UnsafeTarget as exc:
                raise InvalidInput("provider.issuer", exc.reason) from exc
            try:
                await self.oidc.metadata(provider.issuer, fresh=True)
            except ProviderError as exc:
                raise InvalidInput("provider.issuer", exc.reason) from exc
        if change.enabled and not self.redirect_uri:
            raise InvalidInput(
                "enabled",
                "needs the server's public URL (KEYAUTOMAT_PUBLIC_URL): the identity provider "
                "sends the guest back to it",
            )
        now = self.clock.now()
        return await self.db.run(
            lambda s: write_settings(s, principal, unit_id, change, box=self.box, now=now)
        )

    async def send_new_link(self, principal: Principal, public_id: str) -> Contract:
        """A new verification link replaces the old one (which stops working, with every
        login started from it) and is sent with ``contractSignatureRequested``."""
        now = self.clock.now()
        kind = self.kind

        def work(session: Session) -> Contract:
            store = SqlContractStore(session)
            contract = service.get(store, kind, principal, public_id, for_update=True)
            if not contract.awaiting_verification:
                raise InvalidInput(
                    "userVerification", "the contract awaits no signature or identity check"
                )
            if contract.end is not None and contract.end <= now:
                raise InvalidInput("end", "the contract has ended")
            token, expires = kind.new_link(contract.user_verification, contract.end, now)
            assert token is not None
            store.update_terms(
                contract.id,
                {
                    "signature_token_hash": token_hash(token),
                    "verification_link_expires_at": expires,
                },
            )
            contract.signature_token, contract.link_expires_at = token, expires
            view = service.notification_view(store, kind, contract)
            store.notify(
                view, NotificationType.CONTRACT_SIGNATURE_REQUESTED, now=now, event=now.isoformat()
            )
            return contract

        return await self.db.run(work)

    # --- the guest -----------------------------------------------------------------------

    async def start(self, token: str) -> Result:
        """The link was opened: where to send the browser, or why not."""
        now = self.clock.now()

        def read(session: Session) -> Result | tuple[Contract, StoredProvider | None]:
            try:
                contract = contract_for_token(session, token, verification="2")
            except NotFound:
                return Result(Outcome.UNKNOWN_LINK)
            refusal = link_refusal(
                verified_at=contract.signed_at,
                expires_at=contract.link_expires_at,
                end=contract.end,
                now=now,
            )
            if refusal is not None:
                return Result(_LINK_OUTCOMES[refusal])
            return contract, load_provider(session, contract.organization_unit_id, self.box)

        found = await self.db.run(read)
        if isinstance(found, Result):
            return found
        contract, provider = found
        if provider is None or not self.redirect_uri:
            log.warning(
                "strong authentication of contract %s: no provider or public URL", contract.id
            )
            return Result(Outcome.UNAVAILABLE)
        try:
            metadata = await self.oidc.metadata(provider.settings.issuer)
        except ProviderError as exc:
            log.warning("strong authentication of contract %s: %s", contract.id, exc.reason)
            return Result(Outcome.UNAVAILABLE)
        state = secrets.token_urlsafe(32)
        link_hash = token_hash(token)

        def record(session: Session) -> bool:
            # Counted under the contract's row lock (PostgreSQL; SQLite has one writer):
            # a burst of opens cannot pass the bound together.
            session.execute(_LOCK_CONTRACT, {"contract_id": contract.id})
            open_logins = session.scalar(_OPEN_LOGINS, {"contract_id": contract.id, "now": now})
            if (open_logins or 0) >= OPEN_LOGINS_PER_CONTRACT:
                return False
            session.execute(
                insert(strong_auth_logins).values(
                    state_hash=token_hash(state),
                    contract_id=contract.id,
                    link_hash=link_hash,
                    created_at=now,
                    expires_at=now + LOGIN_LIFETIME,
                )
            )
            return True

        if not await self.db.run(record):
            return Result(Outcome.TOO_MANY)
        settings = provider.settings
        contact = contract.contact
        url = authorization_url(
            metadata,
            client_id=settings.client_id,
            redirect_uri=self.redirect_uri,
            scopes=settings.scopes,
            state=state,
            secrets=login_secrets(self.box.derive_key(LOGIN_KEY), state),
            acr_values=settings.acr_values,
            ui_locales=contact.effective_language if contact is not None else None,
        )
        return Result(Outcome.REDIRECT, redirect_to=url, state=state)

    async def finish(
        self, *, state: str, browser_state: str | None, code: str | None, error: str | None
    ) -> Result:
        """The provider sent the browser back: verify the contract, or say why not."""
        now = self.clock.now()
        if not browser_state or not secrets.compare_digest(browser_state, state):
            return Result(Outcome.FOREIGN)
        state_hash = token_hash(state)
        claimed = await self.db.run(lambda s: self._claim(s, state_hash, now))
        if isinstance(claimed, Result):
            return claimed
        outcome = await self._check(claimed, state, code, error, now)
        await self.db.run(
            lambda s: s.execute(
                _SET_OUTCOME, {"b_state_hash": state_hash, "b_outcome": outcome.outcome.value}
            )
        )
        if outcome.outcome is not Outcome.VERIFIED:
            log.info(
                "strong authentication of contract %s: %s (%s)",
                claimed.contract_id,
                outcome.outcome.value,
                outcome.reason or "-",
            )
        return outcome

    def _claim(self, session: Session, state_hash: str, now: datetime) -> Result | _Claimed:
        """Use the login up (single use, before the provider is asked), and read what the
        checks need. A login whose link was sent anew, used, or whose contract is gone
        ends here, its outcome recorded."""
        login = session.execute(_LOGIN, {"state_hash": state_hash}).first()
        if login is None or login.finished_at is not None:
            return Result(Outcome.UNKNOWN_LOGIN)
        expired = login.expires_at <= now
        outcome = Outcome.LOGIN_EXPIRED if expired else Outcome.REDIRECT
        used = session.execute(
            _USE_LOGIN, {"b_state_hash": state_hash, "b_now": now, "b_outcome": outcome.value}
        )
        if used.rowcount != 1:  # type: ignore[attr-defined]
            return Result(Outcome.UNKNOWN_LOGIN)  # answered by a request just before
        if expired:
            return Result(outcome)
        found = self._readable(session, login, now)
        if isinstance(found, Result):
            session.execute(
                _SET_OUTCOME, {"b_state_hash": state_hash, "b_outcome": found.outcome.value}
            )
        return found

    def _readable(self, session: Session, login: Any, now: datetime) -> Result | _Claimed:
        store = SqlContractStore(session)
        contract = _awaiting(store, login.contract_id, login.link_hash, now)
        if isinstance(contract, Result):
            return contract
        provider = load_provider(session, contract.organization_unit_id, self.box)
        if provider is None:
            return Result(Outcome.UNAVAILABLE)
        return _Claimed(login.contract_id, login.link_hash, contract.organization_unit_id, provider)

    async def _check(
        self, claimed: _Claimed, state: str, code: str | None, error: str | None, now: datetime
    ) -> Result:
        settings = claimed.provider.settings
        if error is not None or not code:
            shown = error if error and error.isidentifier() and len(error) <= 64 else "no code"
            return Result(Outcome.REFUSED, f"the identity provider answered {shown}")
        secrets_ = login_secrets(self.box.derive_key(LOGIN_KEY), state)
        try:
            metadata = await self.oidc.metadata(settings.issuer)
            tokens = await self.oidc.exchange(
                metadata,
                client_id=settings.client_id,
                client_secret=claimed.provider.client_secret,
                code=code,
                code_verifier=secrets_.code_verifier,
                redirect_uri=self.redirect_uri,
            )
            claims = await self.oidc.verify(
                metadata,
                tokens.id_token,
                client_id=settings.client_id,
                nonce=secrets_.nonce,
                now=now,
                access_token=tokens.access_token,
                acr_values=settings.acr_values,
            )
        except LoginRefused as exc:
            return Result(Outcome.REFUSED, exc.reason)
        except ProviderUnreachable as exc:
            return Result(Outcome.UNREACHABLE, exc.reason)
        except TokenRejected as exc:
            return Result(Outcome.INVALID_TOKEN, exc.reason)
        return await self.db.run(lambda s: self._verify(s, claimed, claims, now))

    def _verify(
        self, session: Session, claimed: _Claimed, claims: dict[str, Any], now: datetime
    ) -> Result:
        """Match the identity to the contact and mark the contract verified, if it still
        awaits this very link: all on the locked contract, so that two logins finishing
        at once verify it once and a contact changed meanwhile is the one matched."""
        store = SqlContractStore(session)
        contract = _awaiting(store, claimed.contract_id, claimed.link_hash, now, for_update=True)
        if isinstance(contract, Result):
            return contract
        settings = claimed.provider.settings
        match = match_identity(claims, contract.contact, settings.match)
        if not match.verified:
            return Result(Outcome.MISMATCH, "; ".join(match.problems))
        # The link's hash stays: opening it again is answered "already used".
        store.update_terms(contract.id, {"signed_at": now})
        contract.signed_at = now
        release_codes(store, self.kind, contract, now)
        subject = str(claims["sub"])
        session.execute(
            insert(strong_auth_verifications).values(
                contract_id=contract.id,
                organization_unit_id=contract.organization_unit_id,
                verified_at=now,
                issuer=settings.issuer,
                subject_hash=subject_hash(
                    self.box.derive_key(SUBJECT_KEY), settings.issuer, subject
                ),
                matched_claims=",".join(match.matched),
                acr=_short_text(claims.get("acr"), 128),
                amr=_short_text(claims.get("amr"), 256),
            )
        )
        return Result(Outcome.VERIFIED, view=service.notification_view(store, self.kind, contract))


def _awaiting(
    store: SqlContractStore,
    contract_id: str,
    link_hash: str,
    now: datetime,
    *,
    for_update: bool = False,
) -> Contract | Result:
    """The contract of a login while it still awaits the identity through the link the
    login started from; else why not (a new link, verified, expired, over, deleted)."""
    contract = store.load(contract_id, for_update=for_update)
    current = store.contract_for_token_hash(link_hash) == contract_id
    if contract is None or not current or contract.user_verification != "2":
        return Result(Outcome.LINK_CHANGED)
    refusal = link_refusal(
        verified_at=contract.signed_at,
        expires_at=contract.link_expires_at,
        end=contract.end,
        now=now,
    )
    return Result(_LINK_OUTCOMES[refusal]) if refusal is not None else contract


def _short_text(value: object, limit: int) -> str | None:
    """An acr (text) or amr (list of texts) as stored, or None when absent or odd."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    if isinstance(value, str) and value.isprintable():
        return value[:limit]
    return None


# --- retention ----------------------------------------------------------------------------


def prune(session: Session, now: datetime, retention: timedelta, limit: int = PRUNE_BATCH) -> int:
    """Delete up to ``limit`` logins a day past their expiry and up to ``limit``
    verification records whose contract ended or was deleted ``retention`` ago."""
    login_cutoff = now - LOGIN_RETENTION
    old_logins = (
        select(strong_auth_logins.c.state_hash)
        .where(strong_auth_logins.c.expires_at < login_cutoff)
        .limit(limit)
    )
    gone = session.execute(
        delete(strong_auth_logins).where(strong_auth_logins.c.state_hash.in_(old_logins))
    ).rowcount  # type: ignore[attr-defined]
    cutoff = now - retention
    v = strong_auth_verifications.c
    c = contracts.c
    old_records = (
        select(v.contract_id)
        .join(contracts, c.id == v.contract_id)
        .where((c.deleted_at < cutoff) | (c.end < cutoff))
        .limit(limit)
    )
    gone += session.execute(
        delete(strong_auth_verifications).where(v.contract_id.in_(old_records))
    ).rowcount  # type: ignore[attr-defined]
    return int(gone)


async def prune_all(db: Database, now: datetime, retention: timedelta) -> int:
    """:func:`prune` in batches of short transactions until nothing is left; how many went."""
    total = 0
    while True:
        gone = await db.run(lambda s: prune(s, now, retention))
        total += gone
        if gone < PRUNE_BATCH:
            return total
