"""Strong authentication (``userVerification`` "2", gaps.md F3,
docs/strong-authentication.md), signed like V2 outside ``/v2``, admin role only:

* ``/admin/organizationunits/{id}/strong-authentication``: whether a unit allows
  "2" and its OpenID Connect provider. Scoped to the caller's subtree (an unknown
  or out-of-scope unit is a 404); per unit, a child is not enabled by its parent.
  The client secret is write-only: answers show its last four characters.
* ``/admin/mechanical/keycontracts/{id}/verification-link``: a new link for a
  contract still awaiting its verification (the old one stops working).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import Field

from keyautomat.contracts.mechanical import identity
from keyautomat.contracts.mechanical.identity import (
    SettingsChange,
    StrongAuthentication,
    UnitStrongAuth,
)
from keyautomat.domain.identity import DEFAULT_SCOPES, MatchRule, ProviderSettings
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, StrictBool, StrictStr, UtcDatetime

router = APIRouter(tags=["admin: strong authentication"])

PATH = "/organizationunits/{id}/strong-authentication"

Token = Annotated[StrictStr, Field(min_length=1, max_length=128)]


class MatchRuleDto(ApiModel):
    """The ID token's ``claim`` must equal the contact's ``contact`` field (name, email or
    phoneNumber), both normalised as that field's kind of value."""

    claim: Token
    contact: Token


class ProviderInput(ApiModel):
    issuer: Annotated[StrictStr, Field(min_length=1, max_length=512)]
    client_id: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    # Required for a new issuer or client id; absent keeps the stored one.
    client_secret: Annotated[StrictStr, Field(min_length=1, max_length=1024)] | None = None
    scopes: list[Token] = Field(default_factory=lambda: list(DEFAULT_SCOPES), max_length=10)
    match: list[MatchRuleDto] = Field(min_length=1, max_length=4)
    acr_values: list[Token] = Field(default_factory=list, max_length=5)

    def settings(self) -> ProviderSettings:
        return ProviderSettings(
            issuer=self.issuer,
            client_id=self.client_id,
            scopes=tuple(self.scopes),
            match=tuple(MatchRule(r.claim, r.contact) for r in self.match),
            acr_values=tuple(self.acr_values),
        )


class StrongAuthenticationInput(ApiModel):
    """``provider`` absent keeps the stored provider, null removes it; enabling needs one."""

    enabled: StrictBool
    provider: ProviderInput | None = None


class ProviderOut(ApiModel):
    issuer: str
    client_id: str
    client_secret_last4: str
    scopes: list[str]
    match: list[MatchRuleDto]
    acr_values: list[str]
    # What to register at the provider as this client's redirect URI.
    redirect_uri: str | None
    updated_at: UtcDatetime


class StrongAuthenticationOut(ApiModel):
    enabled: bool
    provider: ProviderOut | None


class VerificationLink(ApiModel):
    id: str
    user_verification: str
    # Null for a signature link ("1"), which does not expire.
    link_expires_at: UtcDatetime | None


def _out(found: UnitStrongAuth, service: StrongAuthentication) -> StrongAuthenticationOut:
    stored = found.provider
    if stored is None:
        return StrongAuthenticationOut(enabled=found.enabled, provider=None)
    settings = stored.settings
    return StrongAuthenticationOut(
        enabled=found.enabled,
        provider=ProviderOut(
            issuer=settings.issuer,
            client_id=settings.client_id,
            client_secret_last4=stored.client_secret[-4:],
            scopes=list(settings.scopes),
            match=[MatchRuleDto(claim=r.claim, contact=r.contact) for r in settings.match],
            acr_values=list(settings.acr_values),
            redirect_uri=service.redirect_uri or None,
            updated_at=stored.updated_at,
        ),
    )


@router.get(PATH, operation_id="AdminStrongAuthentication_get")
async def get_strong_authentication(
    id: str,  # noqa: A002
    caller: Caller,
    services: Services,
) -> StrongAuthenticationOut:
    service = StrongAuthentication.of(services)
    found = await services.db.run(lambda s: identity.read_settings(s, caller, id, services.secrets))
    return _out(found, service)


@router.put(PATH, operation_id="AdminStrongAuthentication_put")
async def put_strong_authentication(
    id: str,  # noqa: A002
    body: StrongAuthenticationInput,
    caller: Caller,
    services: Services,
) -> StrongAuthenticationOut:
    service = StrongAuthentication.of(services)
    provider = body.provider
    change = SettingsChange(
        enabled=body.enabled,
        provider=provider.settings() if provider is not None else None,
        keep_provider="provider" not in body.model_fields_set,
        client_secret=provider.client_secret if provider is not None else None,
    )
    found = await service.configure(caller, id, change)
    return _out(found, service)


@router.post(
    "/mechanical/keycontracts/{id}/verification-link",
    operation_id="AdminStrongAuthentication_sendLink",
)
async def send_verification_link(
    id: str,  # noqa: A002
    caller: Caller,
    services: Services,
) -> VerificationLink:
    """Send the contact a new verification link (``contractSignatureRequested``)."""
    contract = await StrongAuthentication.of(services).send_new_link(caller, id)
    return VerificationLink(
        id=contract.public_id,
        user_verification=contract.user_verification,
        link_expires_at=contract.link_expires_at,
    )
