"""Organization units and service accounts: the tenancy tree and who may act in it."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.domain.model import OrgUnitType, Role
from tests.conftest import TEST_BASE, Tenant, make_tenant


def test_an_admin_creates_a_sub_unit_below_its_own_unit_by_default(operator: Tenant) -> None:
    unit = operator.api.post("/organizationUnits", {"name": "Finland", "customerId": "fi"})
    assert set(unit) == {"id", "name", "customerId", "iloqApiUser", "parentId", "type"}
    assert unit["name"] == "Finland"
    assert unit["customerId"] == "fi"
    assert unit["parentId"] == operator.unit_id
    assert unit["type"] == 1  # the documented default
    assert unit["iloqApiUser"] is None
    assert len(unit["id"]) == 24
    int(unit["id"], 16)


def test_the_iloq_password_is_stored_but_never_echoed(
    operator: Tenant, container: Container
) -> None:
    iloq = {
        "username": "api-user",
        "password": "s3cret!",
        "customerCode": "CUST-1",
        "serviceAddress": "https://s5.iloq.example",
    }
    unit = operator.api.post(
        "/organizationUnits", {"name": "Area", "customerId": "a", "type": 2, "iloqApiUser": iloq}
    )
    assert unit["iloqApiUser"] == {**iloq, "password": "********"}
    stored = container.db.transaction(
        lambda s: s.execute(
            text("SELECT iloq_password_encrypted FROM organization_units WHERE id = :id"),
            {"id": unit["id"]},
        ).scalar_one()
    )
    assert "s3cret!" not in stored
    assert container.secrets.decrypt(stored) == "s3cret!"


def test_an_incomplete_iloq_api_user_is_refused_naming_the_field(operator: Tenant) -> None:
    response = operator.api.request(
        "POST",
        "/organizationUnits",
        {"name": "X", "customerId": "x", "iloqApiUser": {"username": "u"}},
    )
    assert response.status_code == 400
    assert "iloqApiUser.password: is required" in response.json()["message"]


def test_only_platform_operators_create_organizations_of_type_zero(
    operator: Tenant, container: Container, http: TestClient
) -> None:
    created = operator.api.post(
        "/organizationUnits", {"name": "Customer Org", "customerId": "c", "type": 0}
    )
    assert created["parentId"] == operator.unit_id
    customer_admin = make_tenant(
        container, http, name="Customer Admin Unit", parent_id=created["id"]
    )
    response = customer_admin.api.request(
        "POST", "/organizationUnits", {"name": "Rogue", "customerId": "r", "type": 0}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "Forbidden"


def test_a_parent_outside_the_callers_subtree_is_forbidden(acme: Tenant, operator: Tenant) -> None:
    for parent in (operator.unit_id, "ffffffffffffffffffffffff"):
        response = acme.api.request(
            "POST", "/organizationUnits", {"name": "X", "customerId": "x", "parentId": parent}
        )
        assert response.status_code == 403


def test_an_integration_account_cannot_manage_units_or_accounts(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    integration = make_tenant(
        container, http, name="Integration", parent_id=acme.unit_id, role=Role.INTEGRATION
    )
    assert (
        integration.api.request(
            "POST", "/organizationUnits", {"name": "X", "customerId": "x"}
        ).status_code
        == 403
    )
    assert (
        integration.api.request(
            "POST",
            "/serviceAccounts",
            {"organizationUnitId": integration.unit_id, "name": "mine"},
        ).status_code
        == 403
    )


def test_a_new_service_account_gets_a_pkcs1_key_once_and_can_sign_with_it(
    acme: Tenant, http: TestClient
) -> None:
    account = acme.api.post("/serviceAccounts", {"organizationUnitId": acme.unit_id, "name": "PMS"})
    assert set(account) == {"id", "name", "role", "privateKey", "organizationUnitId"}
    assert account["role"] == "integration"
    assert account["organizationUnitId"] == acme.unit_id
    assert account["privateKey"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    pms = Client(TEST_BASE, account["id"], account["privateKey"], http=http)
    assert pms.get("/")["serviceAccountId"] == account["id"]


def test_admin_service_accounts_are_for_platform_operators_to_create(
    operator: Tenant, acme: Tenant, container: Container, http: TestClient
) -> None:
    made = operator.api.post(
        "/serviceAccounts",
        {"organizationUnitId": operator.unit_id, "name": "ops", "role": "admin"},
    )
    assert made["role"] == "admin"
    sub_admin = make_tenant(container, http, name="Sub admin", parent_id=acme.unit_id)
    response = sub_admin.api.request(
        "POST",
        "/serviceAccounts",
        {"organizationUnitId": sub_admin.unit_id, "name": "x", "role": "admin"},
    )
    assert response.status_code == 403
    bad_role = operator.api.request(
        "POST",
        "/serviceAccounts",
        {"organizationUnitId": operator.unit_id, "name": "x", "role": "root"},
    )
    assert bad_role.status_code == 400
    assert bad_role.json()["message"] == ["role: must be one of admin, integration"]


def test_a_service_account_for_a_unit_outside_the_subtree_is_forbidden(
    acme: Tenant, operator: Tenant
) -> None:
    response = acme.api.request(
        "POST", "/serviceAccounts", {"organizationUnitId": operator.unit_id, "name": "x"}
    )
    assert response.status_code == 403


def test_deleting_a_service_account_answers_204_then_404(acme: Tenant) -> None:
    account = acme.api.post(
        "/serviceAccounts", {"organizationUnitId": acme.unit_id, "name": "temp"}
    )
    response = acme.api.request("DELETE", f"/serviceAccounts/{account['id']}")
    assert response.status_code == 204
    assert response.content == b""
    again = acme.api.request("DELETE", f"/serviceAccounts/{account['id']}")
    assert again.status_code == 404
    assert again.json() == {
        "statusCode": 404,
        "message": "Service account not found",
        "error": "Not Found",
    }


def test_another_organizations_service_account_cannot_be_deleted_or_detected(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    globex = make_tenant(container, http, name="Globex")
    response = acme.api.request("DELETE", f"/serviceAccounts/{globex.account_id}")
    assert response.status_code == 404
    assert globex.api.get("/")["ok"] is True


def test_a_sub_unit_account_sees_its_subtree_only(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    child = make_tenant(
        container, http, name="Child", parent_id=acme.unit_id, unit_type=OrgUnitType.AREA
    )
    group = acme.api.post("/groups", {"name": "Top", "customerId": "t", "type": 1})
    assert child.api.request("GET", f"/groups/{group['id']}").status_code == 404
    own = child.api.post("/groups", {"name": "Child group", "customerId": "c", "type": 1})
    assert acme.api.get(f"/groups/{own['id']}")["name"] == "Child group"


@pytest.mark.parametrize(
    "address",
    [
        "http://s5.example.com",
        "https://127.0.0.1:8443",
        "https://[::1]/",
        "https://169.254.169.254/latest",
        "https://10.1.2.3",
        "https://user:pw@s5.example.com",
        "https://s5.example.com/?next=x",
        "https://s5.example.com/#top",
        "s5.example.com",
    ],
)
def test_an_iloq_service_address_the_server_must_not_call_is_refused_when_saved(
    operator: Tenant, container: Container, address: str
) -> None:
    def count(session: Session) -> int:
        return int(session.execute(text("SELECT count(*) FROM organization_units")).scalar_one())

    before = container.db.transaction(count)
    iloq = {"username": "u", "password": "p", "customerCode": "c", "serviceAddress": address}
    response = operator.api.request(
        "POST", "/organizationUnits", {"name": "X", "customerId": "x", "iloqApiUser": iloq}
    )
    assert response.status_code == 400
    (message,) = response.json()["message"]
    assert message.startswith("iloqApiUser.serviceAddress: ")
    assert container.db.transaction(count) == before


def test_emulated_iloq_service_addresses_are_accepted(operator: Tenant) -> None:
    iloq = {"username": "u", "password": "p", "customerCode": "c", "serviceAddress": "emulator:"}
    unit = operator.api.post(
        "/organizationUnits", {"name": "X", "customerId": "x", "iloqApiUser": iloq}
    )
    assert unit["iloqApiUser"]["serviceAddress"] == "emulator:"
