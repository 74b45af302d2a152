"""Rules of strong authentication (``userVerification`` "2", docs/strong-authentication.md).

No I/O: which identity provider settings are acceptable, how the claims of a
verified ID token are matched to a contract's contact, and when a verification
link may still be used. The OpenID Connect exchange itself is
``adapters/oidc.py``; the flow is ``contracts/mechanical/identity.py``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from keyautomat.domain.contact import normalise_email, normalise_phone
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.notifications import Contact

# The contact fields a claim can be matched to, by their wire names.
CONTACT_FIELDS = ("name", "email", "phoneNumber")
# The standard claims that OpenID Connect pairs with a "verified" flag: a value the
# provider has not verified (a self-typed email) must not identify anybody.
VERIFIED_FLAGS = {"email": "email_verified", "phone_number": "phone_number_verified"}
# A claim name: what providers use, from "email" to "https://claims.oidc.se/1.0/personalNumber".
_CLAIM_NAME = re.compile(r"^[\x21-\x7e]{1,128}$")
# A scope token (RFC 6749 §3.3) without the characters that would break the list.
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")
# The longest claim value compared: past it no email, phone number or name is real.
MAX_CLAIM_TEXT = 320
MAX_RULES = 4
MAX_SCOPES = 10
MAX_ACR_VALUES = 5
DEFAULT_SCOPES = ("openid", "profile", "email", "phone")


@dataclass(frozen=True, slots=True)
class MatchRule:
    """One condition of a match: the ID token's ``claim`` equals the contact's ``contact``
    field, both normalised as that field's kind of value."""

    claim: str
    contact: str  # one of CONTACT_FIELDS


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """A unit's identity provider, without its client secret."""

    issuer: str
    client_id: str
    scopes: tuple[str, ...]
    match: tuple[MatchRule, ...]
    acr_values: tuple[str, ...] = ()


def check_provider(settings: ProviderSettings, field: str = "provider") -> None:
    """The rules a provider's settings must meet beyond their shape (400 naming the field)."""
    if not settings.client_id or len(settings.client_id) > 256:
        raise InvalidInput(f"{field}.clientId", "must be 1 to 256 characters")
    if not settings.client_id.isprintable():
        raise InvalidInput(f"{field}.clientId", "must be printable text")
    _check_scopes(settings.scopes, f"{field}.scopes")
    _check_rules(settings.match, f"{field}.match")
    if len(settings.acr_values) > MAX_ACR_VALUES:
        raise InvalidInput(f"{field}.acrValues", f"must list at most {MAX_ACR_VALUES} values")
    for index, value in enumerate(settings.acr_values):
        if not _CLAIM_NAME.fullmatch(value):
            raise InvalidInput(
                f"{field}.acrValues.{index}", "must be 1 to 128 printable ASCII characters"
            )


def _check_scopes(scopes: Sequence[str], field: str) -> None:
    if len(scopes) > MAX_SCOPES:
        raise InvalidInput(field, f"must list at most {MAX_SCOPES} scopes")
    for index, scope in enumerate(scopes):
        if not _SCOPE.fullmatch(scope):
            raise InvalidInput(f"{field}.{index}", "is not a scope token")
    if "openid" not in scopes:
        raise InvalidInput(field, 'must include "openid"')


def _check_rules(rules: Sequence[MatchRule], field: str) -> None:
    if not 1 <= len(rules) <= MAX_RULES:
        raise InvalidInput(field, f"must list 1 to {MAX_RULES} rules")
    seen: set[tuple[str, str]] = set()
    for index, rule in enumerate(rules):
        if not _CLAIM_NAME.fullmatch(rule.claim):
            raise InvalidInput(
                f"{field}.{index}.claim", "must be 1 to 128 printable ASCII characters"
            )
        if rule.contact not in CONTACT_FIELDS:
            raise InvalidInput(
                f"{field}.{index}.contact", f"must be one of {', '.join(CONTACT_FIELDS)}"
            )
        if (rule.claim, rule.contact) in seen:
            raise InvalidInput(f"{field}.{index}", "is listed twice")
        seen.add((rule.claim, rule.contact))


# --- matching -----------------------------------------------------------------------------


def normalised_name(value: str) -> str:
    """Compatibility-normalised, case-folded, whitespace collapsed: "JOHN  Doe" = "john doe".
    Letters are kept as they are: "Märta" is not "Marta"."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def normalised(kind: str, value: str) -> str | None:
    """``value`` as compared for a contact field of ``kind``; None when it is not a valid
    value of that kind (it then matches nothing)."""
    try:
        if kind == "email":
            # The whole address case-insensitively: providers and people disagree on the
            # case of the local part, never on whose mailbox it is.
            return normalise_email(value).casefold()
        if kind == "phoneNumber":
            return normalise_phone(value)
    except InvalidInput:
        return None
    name = normalised_name(value)
    return name or None


def _contact_value(contact: Contact, kind: str) -> str | None:
    if kind == "email":
        return contact.email
    if kind == "phoneNumber":
        return contact.phone_number
    return contact.name


@dataclass(frozen=True, slots=True)
class IdentityMatch:
    """The outcome of matching: ``matched`` names the claims that matched, ``problems`` say
    (without any value) why the others did not. Verified only when nothing failed."""

    matched: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def verified(self) -> bool:
        return bool(self.matched) and not self.problems


def match_identity(
    claims: Mapping[str, Any], contact: Contact | None, rules: Sequence[MatchRule]
) -> IdentityMatch:
    """Every rule must hold (docs/strong-authentication.md, "Matching"). A claim that is
    missing, not text, unverified by its standard flag, or not a valid value of the
    contact field's kind fails its rule; so does a contact field the contract lacks."""
    matched: list[str] = []
    problems: list[str] = []
    for rule in rules:
        problem = _rule_problem(claims, contact, rule)
        if problem is None:
            matched.append(rule.claim)
        else:
            problems.append(f"{rule.claim}: {problem}")
    if not rules:
        problems.append("no matching rule is configured")
    return IdentityMatch(tuple(matched), tuple(problems))


def _rule_problem(
    claims: Mapping[str, Any], contact: Contact | None, rule: MatchRule
) -> str | None:
    ours = _contact_value(contact, rule.contact) if contact is not None else None
    if not ours:
        return f"the contract's contact has no {rule.contact}"
    value = claims.get(rule.claim)
    if value is None:
        return "not given by the identity provider"
    if not isinstance(value, str) or len(value) > MAX_CLAIM_TEXT:
        return "not a text the identity provider may give"
    flag = VERIFIED_FLAGS.get(rule.claim)
    if flag is not None and claims.get(flag) is not True:
        return "not verified by the identity provider"
    theirs = normalised(rule.contact, value)
    if theirs is None:
        return f"not a valid {rule.contact}"
    expected = normalised(rule.contact, ours)
    if expected is None or theirs != expected:
        return f"does not match the contract's {rule.contact}"
    return None


# --- the verification link ----------------------------------------------------------------


def link_expiry(
    issued_at: datetime, contract_end: datetime | None, validity: timedelta
) -> datetime:
    """A link is valid for ``validity`` from when it was sent, never past the contract's end."""
    expires = issued_at + validity
    return min(expires, contract_end) if contract_end is not None else expires


class LinkRefusal(StrEnum):
    USED = "used"  # the identity was verified with it: single use
    EXPIRED = "expired"
    ENDED = "ended"  # the contract is over


def link_refusal(
    *,
    verified_at: datetime | None,
    expires_at: datetime | None,
    end: datetime | None,
    now: datetime,
) -> LinkRefusal | None:
    """Why a verification link of a "2" contract can no longer be used, or None."""
    if verified_at is not None:
        return LinkRefusal.USED
    if end is not None and end <= now:
        return LinkRefusal.ENDED
    if expires_at is not None and expires_at <= now:
        return LinkRefusal.EXPIRED
    return None
