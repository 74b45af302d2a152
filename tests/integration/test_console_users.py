"""Console users and sessions in the database: one user per email, a throttle every process
shares, sessions that end, and password changes that end the other sessions."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyautomat.adapters.orm_console import console_sessions, console_users
from keyautomat.bootstrap import Container
from keyautomat.domain.attempts import AttemptLimiter
from keyautomat.domain.console import ConsoleRole, SessionPolicy
from keyautomat.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from keyautomat.domain.model import OrgUnitType
from keyautomat.service_layer import accounts
from keyautomat.service_layer import console_users as users
from keyautomat.service_layer.principal import Principal

POLICY = SessionPolicy(idle=timedelta(hours=1), absolute=timedelta(hours=8))
RULE = AttemptLimiter(free=2, cap=timedelta(minutes=15))


def _unit(container: Container, name: str, parent_id: str | None = None) -> str:
    now = container.clock.now()

    def work(session: Session) -> str:
        return accounts.create_organization_unit(
            session,
            None,
            name=name,
            customer_id=None,
            type=OrgUnitType.ORGANIZATION if parent_id is None else OrgUnitType.COMPANY,
            parent_id=parent_id,
            iloq_api_user=None,
            secrets=container.secrets,
            now=now,
        ).id

    return container.db.transaction(work)


def _user(
    container: Container, unit_id: str, email: str, role: ConsoleRole = ConsoleRole.ADMIN
) -> users.ConsoleUser:
    now = container.clock.now()
    return container.db.transaction(
        lambda s: users.create_user(
            s,
            None,
            email=email,
            organization_unit_id=unit_id,
            role=role,
            password_hash="hash-1",
            now=now,
        )
    )


def _fail(container: Container, user_id: str, at: datetime) -> None:
    container.db.transaction(lambda s: users.record_failed_login(s, user_id, at, RULE))


def test_a_second_user_with_the_same_email_in_another_case_is_a_conflict(
    container: Container,
) -> None:
    unit = _unit(container, "Acme")
    created = _user(container, unit, "Anna@Example.com")
    assert created.email == "Anna@Example.com"
    with pytest.raises(Conflict):
        _user(container, unit, "anna@example.COM")
    found = container.db.transaction(lambda s: users.get_user_by_email(s, "ANNA@example.com"))
    assert found.id == created.id


def test_an_admin_creates_users_in_its_subtree_only_and_others_create_none(
    container: Container,
) -> None:
    root = _unit(container, "Acme")
    child = _unit(container, "Acme East", root)
    other = _unit(container, "Other")
    now = container.clock.now()
    admin = Principal("a", child, f"/{root}/{child}/", 5, "admin")

    def create(principal: Principal, unit_id: str) -> users.ConsoleUser:
        return container.db.transaction(
            lambda s: users.create_user(
                s,
                principal,
                email=f"{principal.role}-{unit_id}@example.com",
                organization_unit_id=unit_id,
                role=ConsoleRole.VIEWER,
                password_hash="h",
                now=now,
            )
        )

    assert create(admin, child).organization_unit_id == child
    for unit_id in (root, other):
        with pytest.raises(InvalidInput):
            create(admin, unit_id)
    with pytest.raises(Forbidden):
        create(Principal("o", child, f"/{root}/{child}/", 5, "operator"), child)


def test_wrong_passwords_block_the_account_by_the_doubling_rule_and_a_login_forgets_them(
    container: Container,
) -> None:
    user = _user(container, _unit(container, "Acme"), "anna@example.com")
    now = container.clock.now()
    for n in range(3):
        _fail(container, user.id, now + timedelta(seconds=n))
    candidate = container.db.transaction(lambda s: users.login_candidate(s, "anna@example.com"))
    assert candidate is not None
    assert candidate.blocked_until == now + timedelta(seconds=2) + timedelta(seconds=1)
    container.db.transaction(lambda s: users.start_session(s, user.id, now, POLICY))
    row = container.db.transaction(
        lambda s: s.execute(select(console_users).where(console_users.c.id == user.id)).one()
    )
    assert (row.failed_logins, row.blocked_until, row.last_login_at) == (0, None, now)


def test_failures_a_day_apart_start_counting_again(container: Container) -> None:
    user = _user(container, _unit(container, "Acme"), "anna@example.com")
    now = container.clock.now()
    for at in (now, now + timedelta(hours=1), now + timedelta(hours=26)):
        _fail(container, user.id, at)
    row = container.db.transaction(
        lambda s: s.execute(select(console_users).where(console_users.c.id == user.id)).one()
    )
    assert row.failed_logins == 1


def test_a_session_signs_in_its_user_until_it_runs_out_and_then_is_gone(
    container: Container,
) -> None:
    unit = _unit(container, "Acme")
    user = _user(container, unit, "anna@example.com", ConsoleRole.OPERATOR)
    now = container.clock.now()
    started = container.db.transaction(lambda s: users.start_session(s, user.id, now, POLICY))
    later = now + timedelta(minutes=30)
    identity = container.db.transaction(lambda s: users.identify(s, started.token, later, POLICY))
    assert identity is not None
    assert (identity.user_id, identity.role, identity.csrf_token) == (
        user.id,
        ConsoleRole.OPERATOR,
        started.csrf_token,
    )
    assert identity.principal.organization_unit_id == unit
    assert identity.principal.role == "operator"
    assert not identity.principal.is_admin
    # Seen at +30 min, so still in at +89 min; idle an hour after that, it is over.
    assert container.db.transaction(
        lambda s: users.identify(s, started.token, now + timedelta(minutes=89), POLICY)
    )
    assert (
        container.db.transaction(
            lambda s: users.identify(s, started.token, now + timedelta(minutes=150), POLICY)
        )
        is None
    )
    assert container.db.transaction(lambda s: s.execute(select(console_sessions)).all() == [])


def test_the_table_keeps_no_token_that_signs_anyone_in(container: Container) -> None:
    user = _user(container, _unit(container, "Acme"), "anna@example.com")
    now = container.clock.now()
    started = container.db.transaction(lambda s: users.start_session(s, user.id, now, POLICY))
    stored = container.db.transaction(
        lambda s: s.execute(select(console_sessions.c.id)).scalar_one()
    )
    assert stored != started.token
    assert container.db.transaction(lambda s: users.identify(s, stored, now, POLICY)) is None


def test_a_password_change_ends_every_other_session_and_a_reset_ends_all(
    container: Container,
) -> None:
    user = _user(container, _unit(container, "Acme"), "anna@example.com")
    now = container.clock.now()
    here, there = (
        container.db.transaction(lambda s: users.start_session(s, user.id, now, POLICY))
        for _ in range(2)
    )
    container.db.transaction(
        lambda s: users.set_password(s, user.id, "hash-2", now, keep=here.token)
    )

    def signed_in(token: str) -> bool:
        return container.db.transaction(lambda s: users.identify(s, token, now, POLICY)) is not None

    assert signed_in(here.token)
    assert not signed_in(there.token)
    container.db.transaction(lambda s: users.reset_password(s, "ANNA@example.com", "hash-3", now))
    assert not signed_in(here.token)
    with pytest.raises(NotFound):
        container.db.transaction(lambda s: users.reset_password(s, "bob@example.com", "h", now))


def test_signing_out_ends_the_session(container: Container) -> None:
    user = _user(container, _unit(container, "Acme"), "anna@example.com")
    now = container.clock.now()
    started = container.db.transaction(lambda s: users.start_session(s, user.id, now, POLICY))
    container.db.transaction(lambda s: users.end_session(s, started.token))
    assert container.db.transaction(lambda s: users.identify(s, started.token, now, POLICY)) is None
