"""Rules of strong authentication without a database: matching an identity to a contact,
the provider settings an admin may give, and when a link may be used
(domain/identity.py, docs/strong-authentication.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.identity import (
    LinkRefusal,
    MatchRule,
    ProviderSettings,
    check_provider,
    link_expiry,
    link_refusal,
    match_identity,
)
from keyautomat.domain.notifications import Contact

EMAIL = (MatchRule("email", "email"),)
PHONE = (MatchRule("phone_number", "phoneNumber"),)
NAME = (MatchRule("name", "name"),)
CONTACT = Contact(name="Märta Virtanen", email="Marta.V@Example.FI", phone_number="+358401234567")


def _claims(**claims: Any) -> dict[str, Any]:
    return {"sub": "s-1", "email_verified": True, "phone_number_verified": True, **claims}


def test_an_email_matches_whatever_the_case_of_either_part() -> None:
    found = match_identity(_claims(email="marta.v@EXAMPLE.fi"), CONTACT, EMAIL)
    assert found.verified
    assert found.matched == ("email",)


def test_a_phone_number_matches_in_any_international_spelling() -> None:
    for spelling in ("+358 40 123 4567", "00358401234567", "+358-40-1234567"):
        assert match_identity(_claims(phone_number=spelling), CONTACT, PHONE).verified


def test_a_number_without_a_country_code_matches_nothing_on_either_side() -> None:
    national = match_identity(_claims(phone_number="040 123 4567"), CONTACT, PHONE)
    assert not national.verified
    assert national.problems == ("phone_number: not a valid phoneNumber",)
    kept_as_given = Contact(name="X", phone_number="040 123 4567")
    found = match_identity(_claims(phone_number="+358401234567"), kept_as_given, PHONE)
    assert found.problems == ("phone_number: does not match the contract's phoneNumber",)


def test_a_name_matches_across_case_and_spaces_but_not_other_letters() -> None:
    assert match_identity(_claims(name="  MÄRTA   virtanen "), CONTACT, NAME).verified
    assert not match_identity(_claims(name="Marta Virtanen"), CONTACT, NAME).verified


def test_an_unverified_standard_claim_identifies_nobody() -> None:
    unverified = match_identity(
        _claims(email="marta.v@example.fi", email_verified=False), CONTACT, EMAIL
    )
    assert unverified.problems == ("email: not verified by the identity provider",)
    flag_missing = {"sub": "s-1", "email": "marta.v@example.fi"}
    assert not match_identity(flag_missing, CONTACT, EMAIL).verified
    # A broker's own claim carries no flag: the provider vouches for it.
    broker = (MatchRule("https://broker.example/phone", "phoneNumber"),)
    own = {"sub": "s-1", "https://broker.example/phone": "+358401234567"}
    assert match_identity(own, CONTACT, broker).verified


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "not given by the identity provider"),
        (["marta.v@example.fi"], "not a text the identity provider may give"),
        ("x" * 400, "not a text the identity provider may give"),
        ("not-an-address", "not a valid email"),
        ("someone.else@example.fi", "does not match the contract's email"),
    ],
)
def test_a_claim_that_is_missing_odd_or_different_fails_its_rule(value: Any, problem: str) -> None:
    claims = _claims() if value is None else _claims(email=value)
    found = match_identity(claims, CONTACT, EMAIL)
    assert not found.verified
    assert found.problems == (f"email: {problem}",)


def test_every_rule_must_hold_and_the_problems_name_no_value() -> None:
    rules = EMAIL + PHONE
    one_wrong = match_identity(
        _claims(email="marta.v@example.fi", phone_number="+358409999999"), CONTACT, rules
    )
    assert not one_wrong.verified
    assert one_wrong.matched == ("email",)
    assert "+358" not in " ".join(one_wrong.problems)
    both = _claims(email="marta.v@example.fi", phone_number="+358401234567")
    assert match_identity(both, CONTACT, rules).matched == ("email", "phone_number")


def test_a_contract_without_the_field_or_without_a_contact_never_verifies() -> None:
    no_email = Contact(name="Märta Virtanen")
    found = match_identity(_claims(email="marta.v@example.fi"), no_email, EMAIL)
    assert found.problems == ("email: the contract's contact has no email",)
    assert not match_identity(_claims(email="marta.v@example.fi"), None, EMAIL).verified
    assert not match_identity(_claims(email="marta.v@example.fi"), CONTACT, ()).verified


# --- settings -----------------------------------------------------------------------------


def _settings(**changes: Any) -> ProviderSettings:
    values: dict[str, Any] = {
        "issuer": "https://idp.example",
        "client_id": "keyautomat",
        "scopes": ("openid", "email"),
        "match": EMAIL,
        "acr_values": (),
        **changes,
    }
    return ProviderSettings(**values)


def test_good_settings_pass() -> None:
    check_provider(_settings())
    check_provider(_settings(acr_values=("urn:grn:authn:fi:bankid",), match=EMAIL + PHONE))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"client_id": ""}, "provider.clientId"),
        ({"client_id": "a\nb"}, "provider.clientId"),
        ({"scopes": ("email",)}, "provider.scopes"),
        ({"scopes": ("openid", "a b")}, "provider.scopes.1"),
        ({"scopes": ("openid",) * 11}, "provider.scopes"),
        ({"match": ()}, "provider.match"),
        ({"match": EMAIL * 2}, "provider.match.1"),
        ({"match": (MatchRule("email", "address"),)}, "provider.match.0.contact"),
        ({"match": (MatchRule("", "email"),)}, "provider.match.0.claim"),
        ({"match": (MatchRule("é", "email"),)}, "provider.match.0.claim"),
        ({"match": EMAIL + PHONE + NAME + (MatchRule("x", "name"),) * 2}, "provider.match"),
        ({"acr_values": ("a b",)}, "provider.acrValues.0"),
    ],
)
def test_bad_settings_name_their_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_provider(_settings(**changes))
    assert refused.value.field == field


# --- the link -----------------------------------------------------------------------------

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
WEEK = timedelta(days=7)


def test_a_link_lasts_its_validity_but_never_past_the_contracts_end() -> None:
    assert link_expiry(NOW, None, WEEK) == NOW + WEEK
    assert link_expiry(NOW, NOW + timedelta(days=30), WEEK) == NOW + WEEK
    assert link_expiry(NOW, NOW + timedelta(days=2), WEEK) == NOW + timedelta(days=2)


def test_a_link_is_refused_once_used_expired_or_its_contract_over() -> None:
    def refusal(**when: Any) -> LinkRefusal | None:
        facts: dict[str, Any] = {
            "verified_at": None,
            "expires_at": NOW + WEEK,
            "end": NOW + 2 * WEEK,
            **when,
        }
        return link_refusal(now=NOW, **facts)

    assert refusal() is None
    assert refusal(verified_at=NOW - WEEK) is LinkRefusal.USED
    assert refusal(expires_at=NOW) is LinkRefusal.EXPIRED
    assert refusal(end=NOW, expires_at=NOW) is LinkRefusal.ENDED
    assert refusal(expires_at=None, end=None) is None
