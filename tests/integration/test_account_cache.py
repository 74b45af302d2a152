"""The API keeps service accounts in memory, yet a change made by another process counts on
the account's very next request (entrypoints/api/account_cache.py).

Each test warms this process's cache with a request, changes the account through a
second container on the same database (another API process, as far as this one can
tell), and sends the next request to the first process again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters.crypto import GeneratedKeyPair, generate_service_account_key
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app
from keyautomat.service_layer.accounts import accounts_version
from keyautomat.service_layer.clock import SystemClock
from tests.conftest import TEST_BASE, Tenant

INSTALL = {
    "name": "Lobby",
    "address": "Main street 1",
    "postalCode": "00100",
    "postalOffice": "Helsinki",
    "timezone": "Europe/Helsinki",
    "product": "key20",
}


@pytest.fixture
def elsewhere(settings: Settings) -> Iterator[Container]:
    """A second container on the same database: another process, for the first one."""
    other = bootstrap(settings, clock=SystemClock())
    yield other
    other.close()


def _warm(tenant: Tenant, http: TestClient) -> None:
    assert tenant.api.get("/")["serviceAccountId"] == tenant.account_id
    assert tenant.account_id in http.app.state.accounts._accounts  # type: ignore[attr-defined]


def _execute(container: Container, sql: str, **params: str) -> None:
    container.db.transaction(lambda s: s.execute(text(sql), params))


def _re_key(container: Container, account_id: str) -> GeneratedKeyPair:
    """Gives the account a new key through ``container``; returns the key."""
    new = generate_service_account_key()
    _execute(
        container,
        "UPDATE service_accounts SET public_key_pem = :pem, fingerprint = :fp WHERE id = :id",
        pem=new.public_pem,
        fp=new.fingerprint,
        id=account_id,
    )
    return new


def test_an_account_deleted_by_another_process_is_refused_on_its_next_request(
    acme: Tenant, http: TestClient, elsewhere: Container
) -> None:
    _warm(acme, http)
    with TestClient(create_app(elsewhere), base_url="http://testserver") as other_http:
        admin = Client(TEST_BASE, acme.account_id, acme.private_key, http=other_http)
        sub = admin.post("/serviceAccounts", {"name": "Doomed", "organizationUnitId": acme.unit_id})
        doomed = Client(TEST_BASE, sub["id"], sub["privateKey"], http=http)
        assert doomed.get("/")["serviceAccountId"] == sub["id"]
        admin.delete(f"/serviceAccounts/{sub['id']}")
    response = doomed.request("GET", "/")
    assert response.status_code == 401
    assert response.json()["message"] == "Unknown service account"
    assert acme.api.get("/")["ok"] is True


def test_a_re_keyed_account_is_verified_with_its_new_key_on_its_next_request(
    acme: Tenant, http: TestClient, elsewhere: Container
) -> None:
    _warm(acme, http)
    new = _re_key(elsewhere, acme.account_id)
    old_key = acme.api.request("GET", "/")
    assert old_key.status_code == 401
    assert old_key.json()["message"] == "Invalid signature"
    rekeyed = Client(TEST_BASE, acme.account_id, new.private_pem, http=http)
    assert rekeyed.get("/")["serviceAccountId"] == acme.account_id


def test_a_new_key_is_good_on_the_first_request_after_another_process_re_keyed_the_account(
    acme: Tenant, http: TestClient, elsewhere: Container
) -> None:
    _warm(acme, http)
    new = _re_key(elsewhere, acme.account_id)
    rekeyed = Client(TEST_BASE, acme.account_id, new.private_pem, http=http)
    assert rekeyed.get("/")["serviceAccountId"] == acme.account_id


def test_an_account_whose_role_another_process_lowered_acts_in_its_new_role_at_once(
    acme: Tenant, http: TestClient, elsewhere: Container
) -> None:
    assert acme.api.post("/automats/install", INSTALL)["name"] == "Lobby"
    _execute(
        elsewhere,
        "UPDATE service_accounts SET role = 'integration' WHERE id = :id",
        id=acme.account_id,
    )
    response = acme.api.request("POST", "/automats/install", INSTALL)
    assert response.status_code == 403


def test_an_account_whose_unit_moved_acts_from_its_new_place_at_once(
    acme: Tenant, http: TestClient, elsewhere: Container
) -> None:
    organization = {"name": "Tenant Co", "customerId": "tenant-co", "type": 0}
    assert acme.api.post("/organizationUnits", organization)["type"] == 0
    # Moved below another unit, acme's admin is no longer a platform operator.
    _execute(
        elsewhere,
        "UPDATE organization_units SET path = :path WHERE id = :id",
        path=f"/elsewhere/{acme.unit_id}/",
        id=acme.unit_id,
    )
    response = acme.api.request("POST", "/organizationUnits", organization)
    assert response.status_code == 403


def test_a_change_to_an_account_bumps_the_counter_in_its_own_transaction(
    container: Container, acme: Tenant
) -> None:
    before = container.db.transaction(accounts_version)

    def rename_and_read(session: Session) -> int:
        rename = text("UPDATE service_accounts SET name = 'Renamed' WHERE id = :id")
        session.execute(rename, {"id": acme.account_id})
        return accounts_version(session)

    assert container.db.transaction(rename_and_read) == before + 1
    # A unit's name is no part of how a request is verified.
    _execute(
        container, "UPDATE organization_units SET name = 'Renamed' WHERE id = :id", id=acme.unit_id
    )
    assert container.db.transaction(accounts_version) == before + 1
