"""The console's people: one login per email whatever its case, passwords long enough and
bounded, sessions that end when idle or old, and viewers that change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyautomat.adapters.passwords import fast_passwords
from keyautomat.domain.attempts import AttemptLimiter
from keyautomat.domain.console import (
    MAX_PASSWORD_LENGTH,
    ConsoleRole,
    SessionPolicy,
    check_new_password,
    console_role,
    email_key,
    generate_password,
)
from keyautomat.domain.errors import Forbidden, InvalidInput
from keyautomat.service_layer.principal import Principal

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_two_spellings_of_one_email_are_one_login() -> None:
    assert email_key("  Anna@Example.COM ") == email_key("anna@example.com") == "anna@example.com"


@pytest.mark.parametrize(
    "email", ["", "anna", "anna@", "@example.com", "anna@example", "a b@example.com", "a\x00@x.fi"]
)
def test_what_is_not_an_email_is_refused_naming_the_field(email: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        email_key(email)
    assert refused.value.field == "email"


def test_an_email_longer_than_a_mail_path_allows_is_refused() -> None:
    with pytest.raises(InvalidInput):
        email_key("a" * 250 + "@example.com")


def test_a_new_password_must_be_long_enough_bounded_and_storable() -> None:
    assert check_new_password("twelve chars") == "twelve chars"
    for bad in ("short", "x" * (MAX_PASSWORD_LENGTH + 1), "twelve chars\x00"):
        with pytest.raises(InvalidInput):
            check_new_password(bad)


def test_generated_passwords_meet_the_rule_and_differ() -> None:
    first, second = generate_password(), generate_password()
    assert check_new_password(first)
    assert first != second


def test_roles_are_the_three_named_and_only_viewers_change_nothing() -> None:
    assert [r.writes for r in ConsoleRole] == [True, True, False]
    with pytest.raises(InvalidInput):
        console_role("integration")


def test_a_session_ends_when_idle_or_old_whichever_comes_first() -> None:
    policy = SessionPolicy(idle=timedelta(hours=1), absolute=timedelta(hours=8))
    assert not policy.expired(T0, T0, T0 + timedelta(minutes=59))
    assert policy.expired(T0, T0, T0 + timedelta(hours=1))
    assert not policy.expired(T0, T0 + timedelta(hours=7), T0 + timedelta(hours=7, minutes=30))
    assert policy.expired(T0, T0 + timedelta(hours=7, minutes=59), T0 + timedelta(hours=8))


def test_a_session_is_written_again_at_most_once_a_minute() -> None:
    policy = SessionPolicy(idle=timedelta(hours=1), absolute=timedelta(hours=8))
    assert not policy.needs_touch(T0, T0 + timedelta(seconds=59))
    assert policy.needs_touch(T0, T0 + timedelta(seconds=60))


def test_the_back_off_rule_kept_elsewhere_matches_the_limiters_own_books() -> None:
    rule = AttemptLimiter(free=2, cap=timedelta(minutes=15))
    assert [rule.block_after(n) for n in (1, 2)] == [None, None]
    assert rule.block_after(3) == timedelta(seconds=1)
    assert rule.block_after(5) == timedelta(seconds=4)
    assert rule.block_after(500) == timedelta(minutes=15)
    assert rule.forgets(T0, T0 + timedelta(hours=24))
    assert not rule.forgets(T0, T0 + timedelta(hours=23))


def test_only_admins_and_operators_run_the_sites() -> None:
    def principal(role: str) -> Principal:
        return Principal("u", "unit", "/unit/", 0, role)

    principal("admin").require_operator()
    principal("operator").require_operator()
    for role in ("viewer", "integration"):
        with pytest.raises(Forbidden):
            principal(role).require_operator()


def test_a_password_matches_its_hash_only_and_an_unknown_user_matches_nothing() -> None:
    passwords = fast_passwords()
    stored = passwords.hash("correct horse battery")
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "Correct horse battery")
    assert not passwords.verify(None, "correct horse battery")
    assert not passwords.verify("not a hash", "correct horse battery")
    assert not passwords.needs_rehash(stored)
