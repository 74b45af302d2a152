"""Strong authentication, userVerification "2" (docs/strong-authentication.md), against a real
OpenID Connect provider on loopback (tests/oidc_support.py): the admin settings, and the
guest's link, login and callback with every refusal. The whole handover at a simulated
automat is tests/integration/test_strong_authentication_handover.py."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Result, inspect, literal_column, select, table
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters.orm_contracts import contracts
from keyautomat.adapters.orm_devices import device_pincodes
from keyautomat.adapters.orm_identity import strong_auth_logins, strong_auth_verifications
from keyautomat.adapters.orm_mechanical import mechanical_contracts
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.contracts.mechanical import identity
from keyautomat.domain.model import Role
from keyautomat.service_layer.clock import ManualClock
from tests.conftest import Tenant, make_tenant
from tests.integration.test_mechanical_contracts import create, device_keys, status_of
from tests.oidc_support import (
    CONTACT,
    GUEST,
    PROVIDER_WARNINGS,
    STRANGER,
    Browser,
    Provider,
    sent_links,
    state_of,
)

pytestmark = PROVIDER_WARNINGS


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The public URL the provider sends the guest back to; the provider is on loopback.
    return Settings(
        **{
            **settings.model_dump(),
            "public_url": "http://testserver/v2",
            "strong_auth_allow_private": True,
        }
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def container(settings: Settings, clock: ManualClock) -> Iterator[Container]:
    c = bootstrap(settings, clock=clock)
    yield c
    c.close()


@pytest.fixture
def browser(http: TestClient) -> Iterator[Browser]:
    b = Browser(http)
    yield b
    b.close()


def _admin(tenant: Tenant, http: TestClient) -> Client:
    return Client("http://testserver", tenant.account_id, tenant.private_key, http=http)


def _path(unit_id: str) -> str:
    return f"/admin/organizationunits/{unit_id}/strong-authentication"


def _enable(tenant: Tenant, http: TestClient, provider: Provider, **changes: Any) -> Any:
    body = {"enabled": True, "provider": provider.settings(**changes)}
    return _admin(tenant, http).call("PUT", _path(tenant.unit_id), body)


def _strong_contract(container: Container, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    device_keys(container, tenant, "a")
    return create(tenant, keys=[{"id": "a"}], userVerification="2", contact=CONTACT, **fields)


def _codes(container: Container) -> int:
    return len(container.db.transaction(lambda s: s.execute(select(device_pincodes.c.id)).all()))


def _verified_at(container: Container) -> Any:
    return container.db.transaction(lambda s: s.scalar(select(mechanical_contracts.c.signed_at)))


def _records(container: Container) -> list[Any]:
    return container.db.transaction(
        lambda s: list(s.execute(select(strong_auth_verifications)).all())
    )


def _link(container: Container) -> str:
    links = sent_links(container)
    assert links
    assert "/identify/" in links[-1]
    return links[-1]


# --- the admin settings -------------------------------------------------------------------


def test_an_admin_sets_a_provider_checked_against_its_discovery_and_never_reads_the_secret(
    container: Container, acme: Tenant, http: TestClient, provider: Provider
) -> None:
    admin = _admin(acme, http)
    assert admin.get(_path(acme.unit_id)) == {"enabled": False, "provider": None}
    answer = _enable(acme, http, provider)
    assert answer["enabled"] is True
    shown = answer["provider"]
    assert shown["issuer"] == provider.issuer
    assert shown["clientSecretLast4"] == "ient"
    assert "clientSecret" not in shown
    assert shown["redirectUri"] == "http://testserver/identify/callback"
    assert shown["match"] == [{"claim": "email", "contact": "email"}]
    assert admin.get(_path(acme.unit_id)) == answer
    # The secret is kept when the same client is sent again without it, and encrypted.
    again = {**provider.settings(), "clientSecret": None}
    kept = admin.call("PUT", _path(acme.unit_id), {"enabled": True, "provider": again})
    assert kept["provider"]["clientSecretLast4"] == "ient"
    stored = container.db.transaction(
        lambda s: (
            s.execute(select(literal_column("*")).select_from(table("strong_auth_providers")))
            .mappings()
            .one()
        )
    )
    assert "s3cret-of-the-client" not in str(dict(stored))
    # Disabling keeps the provider; enabling again needs nothing more.
    assert admin.call("PUT", _path(acme.unit_id), {"enabled": False})["provider"] is not None
    assert admin.call("PUT", _path(acme.unit_id), {"enabled": True})["enabled"] is True
    # A "2" contract is accepted only while the unit is enabled.
    device_keys(container, acme, "a", "b")
    assert create(acme, keys=[{"id": "a"}], userVerification="2")["userVerification"] == "2"
    admin.call("PUT", _path(acme.unit_id), {"enabled": False, "provider": None})
    assert admin.get(_path(acme.unit_id)) == {"enabled": False, "provider": None}
    assert status_of(lambda: create(acme, keys=[{"id": "b"}], userVerification=2)) == 400


def _without(settings: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != name}


Body = Callable[[dict[str, Any]], dict[str, Any]]
BAD_SETTINGS: list[tuple[Body, str]] = [
    (lambda p: {"enabled": True}, "provider"),
    (lambda p: {"enabled": True, "provider": None}, "provider"),
    (lambda p: {"enabled": "yes"}, "enabled"),
    (lambda p: {}, "enabled"),
    (lambda p: {"enabled": True, "provider": _without(p, "clientId")}, "provider.clientId"),
    (lambda p: {"enabled": True, "provider": _without(p, "clientSecret")}, "provider.clientSecret"),
    (lambda p: {"enabled": True, "provider": {**p, "scopes": ["email"]}}, "provider.scopes"),
    (lambda p: {"enabled": True, "provider": {**p, "scopes": ['a"b']}}, "provider.scopes.0"),
    (lambda p: {"enabled": True, "provider": {**p, "match": []}}, "provider.match"),
    (
        lambda p: {"enabled": True, "provider": {**p, "match": [{"claim": "a", "contact": "x"}]}},
        "provider.match.0.contact",
    ),
    (
        lambda p: {
            "enabled": True,
            "provider": {**p, "match": [{"claim": "a b", "contact": "name"}]},
        },
        "provider.match.0.claim",
    ),
    (
        lambda p: {"enabled": True, "provider": {**p, "issuer": "http://127.0.0.1:9"}},
        "provider.issuer",
    ),
    (
        lambda p: {"enabled": True, "provider": {**p, "issuer": "ftp://idp.example"}},
        "provider.issuer",
    ),
    (lambda p: {"enabled": True, "provider": {**p, "issuer": "x" * 600}}, "provider.issuer"),
    (lambda p: {"enabled": True, "provider": {**p, "clientId": "a\u0007"}}, "provider.clientId"),
]


@pytest.mark.parametrize(("make", "field"), BAD_SETTINGS)
def test_a_bad_setting_is_a_400_naming_its_field_and_changes_nothing(
    container: Container,
    acme: Tenant,
    http: TestClient,
    provider: Provider,
    make: Body,
    field: str,
) -> None:
    answer = _admin(acme, http).request("PUT", _path(acme.unit_id), make(provider.settings()))
    assert answer.status_code == 400, answer.text
    assert any(m.startswith(f"{field}:") for m in _messages(answer)), answer.text
    assert _admin(acme, http).get(_path(acme.unit_id)) == {"enabled": False, "provider": None}


def _messages(answer: Any) -> list[str]:
    message = answer.json()["message"]
    return message if isinstance(message, list) else [message]


def test_strong_authentication_is_admin_only_and_scoped(
    container: Container, acme: Tenant, operator: Tenant, http: TestClient, provider: Provider
) -> None:
    integration = make_tenant(
        container, http, name="Integration", parent_id=acme.unit_id, role=Role.INTEGRATION
    )
    robot = _admin(integration, http)
    assert status_of(lambda: robot.get(_path(integration.unit_id))) == 403
    assert status_of(lambda: _enable(integration, http, provider)) == 403
    admin = _admin(acme, http)
    # another organization's unit, and an unknown one, do not exist for this caller
    assert status_of(lambda: admin.get(_path(operator.unit_id))) == 404
    assert status_of(lambda: admin.call("PUT", _path(operator.unit_id), {"enabled": True})) == 404
    assert status_of(lambda: admin.get(_path("0" * 24))) == 404
    # a unit of the caller's subtree is in scope, and the setting is per unit
    body = {"enabled": True, "provider": provider.settings()}
    assert admin.call("PUT", _path(integration.unit_id), body)["enabled"] is True
    assert admin.get(_path(acme.unit_id)) == {"enabled": False, "provider": None}


# --- the guest ----------------------------------------------------------------------------


def test_a_matching_login_verifies_the_contract_puts_the_code_on_and_records_no_more_than_needed(
    container: Container, acme: Tenant, http: TestClient, provider: Provider, browser: Browser
) -> None:
    _enable(acme, http, provider)
    contract = _strong_contract(container, acme)
    code = contract["keys"][0]["storageInfo"]["pincode"]
    assert _codes(container) == 0  # held back until the identity is proved
    link = _link(container)
    assert link.startswith("http://testserver/identify/")
    login = browser.open_link(link)
    assert login.url.host == "localhost"  # at the provider's login form
    done = browser.log_in(login, GUEST)
    assert done.status_code == 200, done.text
    assert "Identity confirmed" in done.text
    assert code in done.text  # the person who proved to be the contact gets the code
    assert done.headers["cache-control"] == "no-store"
    assert _codes(container) == 1
    assert _verified_at(container) is not None
    [record] = _records(container)
    assert record.matched_claims == "email"
    assert re.fullmatch("[0-9a-f]{64}", record.subject_hash)
    assert record.issuer == provider.issuer

    def cells(session: Session) -> list[str]:
        def rows_of(name: str) -> Result[Any]:
            return session.execute(select(literal_column("*")).select_from(table(name)))

        names = inspect(session.connection()).get_table_names()
        return [str(v) for n in names for row in rows_of(n) for v in row if v is not None]

    stored = " ".join(container.db.transaction(cells))
    assert GUEST not in stored  # the provider's subject is kept only as a keyed hash
    assert "+358 40 123 4567" not in stored
    # The link was for one verification: opened again it is refused.
    again = browser.open_link(link)
    assert again.status_code == 410
    assert "already been confirmed" in again.text


def test_a_login_as_somebody_else_changes_nothing_says_why_and_the_link_still_works(
    container: Container, acme: Tenant, http: TestClient, provider: Provider, browser: Browser
) -> None:
    _enable(acme, http, provider)
    _strong_contract(container, acme)
    link = _link(container)
    refused = browser.log_in(browser.open_link(link), STRANGER)
    assert refused.status_code == 403
    assert "does not match" in refused.text
    assert "email: does not match the contract" in refused.text
    assert "jane.roe" not in refused.text  # no claim value is shown
    assert "Nothing was changed" in refused.text
    assert (_codes(container), _verified_at(container), _records(container)) == (0, None, [])
    unverified = browser.log_in(browser.open_link(link), "unverified-1")
    assert unverified.status_code == 403
    assert "email: not verified by the identity provider" in unverified.text
    assert _codes(container) == 0
    assert browser.log_in(browser.open_link(link), GUEST).status_code == 200
    assert _codes(container) == 1


def test_a_login_cancelled_at_the_provider_changes_nothing(
    container: Container, acme: Tenant, http: TestClient, provider: Provider, browser: Browser
) -> None:
    _enable(acme, http, provider)
    _strong_contract(container, acme)
    denied = browser.deny(browser.open_link(_link(container)))
    assert denied.status_code == 403
    assert "access_denied" in denied.text
    assert (_codes(container), _verified_at(container)) == (0, None)


def test_every_name_of_the_contact_must_match_when_the_unit_asks_for_several(
    container: Container, acme: Tenant, http: TestClient, provider: Provider, browser: Browser
) -> None:
    rules = [
        {"claim": "email", "contact": "email"},
        {"claim": "phone_number", "contact": "phoneNumber"},
        {"claim": "name", "contact": "name"},
    ]
    _enable(acme, http, provider, match=rules)
    device_keys(container, acme, "a", "b")
    other_phone = {**CONTACT, "phoneNumber": "+358401111111"}
    create(acme, keys=[{"id": "a"}], userVerification="2", contact=other_phone)
    refused = browser.log_in(browser.open_link(_link(container)), GUEST)
    assert refused.status_code == 403
    assert "phone_number: does not match" in refused.text
    create(acme, keys=[{"id": "b"}], userVerification="2", contact=CONTACT)
    # "john  DOE" / "+358 40 123 4567" match "John Doe" / +358401234567 once normalised.
    assert browser.log_in(browser.open_link(_link(container)), GUEST).status_code == 200
    assert _records(container)[0].matched_claims == "email,phone_number,name"


def test_a_replayed_callback_and_one_from_another_browser_are_refused(
    container: Container, acme: Tenant, http: TestClient, provider: Provider, browser: Browser
) -> None:
    _enable(acme, http, provider)
    _strong_contract(container, acme)
    login = browser.open_link(_link(container))
    callback = browser.callback_of(login, GUEST)
    path = callback.removeprefix("http://testserver")
    # Another browser (no cookie of this login) gets nowhere, and spends nothing.
    mine = dict(http.cookies)
    http.cookies.clear()
    foreign = http.get(path)
    assert foreign.status_code == 400
    assert "not started in this browser" in foreign.text
    for name, value in mine.items():
        http.cookies.set(name, value, path="/identify/")
    assert browser.go("GET", callback).status_code == 200
    # The same answer again: the login is used up.
    http.cookies.set("keyautomat_identify", state_of(callback), path="/identify/")
    replayed = http.get(path)
    assert replayed.status_code == 400
    assert "already been answered" in replayed.text
    assert len(_records(container)) == 1


def test_an_expired_link_is_refused_and_an_admin_sends_a_new_one_that_replaces_it(
    container: Container,
    acme: Tenant,
    http: TestClient,
    provider: Provider,
    browser: Browser,
    clock: ManualClock,
) -> None:
    _enable(acme, http, provider)
    start = datetime.now(UTC)
    contract = _strong_contract(
        container,
        acme,
        start=start.isoformat().replace("+00:00", "Z"),
        end=(start + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
    )
    old = _link(container)
    clock.advance(timedelta(days=7, minutes=1))  # KEYAUTOMAT_STRONG_AUTH_LINK_HOURS: 168
    expired = browser.open_link(old)
    assert expired.status_code == 410
    assert "expired" in expired.text
    clock.set(start)
    sent = _admin(acme, http).post(
        f"/admin/mechanical/keycontracts/{contract['id']}/verification-link", None
    )
    assert sent["userVerification"] == "2"
    assert sent["linkExpiresAt"] is not None
    new = _link(container)
    assert new != old
    assert browser.open_link(old).status_code == 404  # replaced
    assert browser.log_in(browser.open_link(new), GUEST).status_code == 200
    # Nothing awaits verification any more: no new link.
    refused = _admin(acme, http).request(
        "POST", f"/admin/mechanical/keycontracts/{contract['id']}/verification-link", None
    )
    assert refused.status_code == 400
    assert _messages(refused)[0].startswith("userVerification:")


def test_a_login_under_way_when_a_new_link_is_sent_verifies_nothing(
    container: Container, acme: Tenant, http: TestClient, provider: Provider, browser: Browser
) -> None:
    _enable(acme, http, provider)
    contract = _strong_contract(container, acme)
    login = browser.open_link(_link(container))
    _admin(acme, http).post(
        f"/admin/mechanical/keycontracts/{contract['id']}/verification-link", None
    )
    late = browser.log_in(login, GUEST)
    assert late.status_code == 410
    assert "replaced" in late.text
    assert (_codes(container), _verified_at(container)) == (0, None)


def test_a_link_opened_too_often_at_once_is_refused_for_a_while(
    container: Container, acme: Tenant, http: TestClient, provider: Provider, clock: ManualClock
) -> None:
    _enable(acme, http, provider)
    _strong_contract(container, acme)
    path = _link(container).removeprefix("http://testserver")
    for _ in range(identity.OPEN_LOGINS_PER_CONTRACT):
        assert http.get(path, follow_redirects=False).status_code == 303
    assert http.get(path, follow_redirects=False).status_code == 429
    clock.advance(identity.LOGIN_LIFETIME)
    assert http.get(path, follow_redirects=False).status_code == 303


def test_unknown_links_and_the_other_verifications_links_are_not_valid_here(
    container: Container, acme: Tenant, http: TestClient, provider: Provider
) -> None:
    _enable(acme, http, provider)
    _strong_contract(container, acme)
    token = _link(container).rsplit("/", 1)[1]
    assert http.get(f"/sign/{token}").status_code == 404  # not a signature link
    assert http.get("/identify/nope").status_code == 404
    assert http.get("/identify/" + "x" * 500).status_code == 404
    assert http.get("/identify/callback").status_code == 400
    assert http.get("/identify/callback?state=" + "x" * 500).status_code == 400


def test_a_unit_without_a_provider_says_identification_is_not_available(
    container: Container, acme: Tenant, http: TestClient, provider: Provider
) -> None:
    _enable(acme, http, provider)
    _strong_contract(container, acme)
    _admin(acme, http).call("PUT", _path(acme.unit_id), {"enabled": False, "provider": None})
    answer = http.get(_link(container).removeprefix("http://testserver"))
    assert answer.status_code == 503
    assert "not available" in answer.text


def test_old_logins_and_records_of_long_ended_contracts_are_pruned(
    container: Container, acme: Tenant, http: TestClient, provider: Provider, browser: Browser
) -> None:
    _enable(acme, http, provider)
    _strong_contract(container, acme)
    link = _link(container)
    assert browser.log_in(browser.open_link(link), GUEST).status_code == 200
    retention = timedelta(days=container.settings.strong_auth_retention_days)
    now = datetime.now(UTC)

    def counts() -> tuple[int, int]:
        return container.db.transaction(
            lambda s: (
                len(s.execute(select(strong_auth_logins.c.state_hash)).all()),
                len(s.execute(select(strong_auth_verifications.c.contract_id)).all()),
            )
        )

    assert counts() == (1, 1)
    assert asyncio.run(identity.prune_all(container.db, now, retention)) == 0
    assert asyncio.run(identity.prune_all(container.db, now + timedelta(days=2), retention)) == 1
    assert counts() == (0, 1)  # the record stays while its contract is not long over
    later = now + retention + timedelta(days=3)  # the contract ended 48 h after its start
    assert asyncio.run(identity.prune_all(container.db, later, retention)) == 1
    assert counts() == (0, 0)


def test_contracts_that_asked_for_2_before_the_flow_existed_count_as_verified(
    container: Container, acme: Tenant, http: TestClient, database_url: str, provider: Provider
) -> None:
    from alembic import command

    from keyautomat.adapters.db import make_engine
    from keyautomat.adapters.migrate import alembic_config, upgrade

    _enable(acme, http, provider)
    _strong_contract(container, acme)
    assert _verified_at(container) is None
    config = alembic_config(database_url)
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0021")  # before 0024: "2" put the codes on at once
    engine.dispose()
    upgrade(database_url)
    created = container.db.transaction(lambda s: s.scalar(select(contracts.c.created_at)))
    assert _verified_at(container) == created
