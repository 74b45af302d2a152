"""What every V2 client relies on: the OpenAPI document, the error shape, the routes."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.domain.notifications import NOTIFICATION_TYPES
from keyautomat.entrypoints.api.app import create_app
from tests.conftest import Tenant

OPERATIONS = {
    ("get", "/v2/automats"): "AutomatsController_getAutomats",
    ("get", "/v2/automats/{id}"): "AutomatsController_getAutomatById",
    ("patch", "/v2/automats/{id}"): "AutomatsController_updateAutomat",
    ("post", "/v2/automats/install"): "AutomatsController_installAutomat",
    ("post", "/v2/automats/{id}/uninstall"): "AutomatsController_uninstallAutomat",
    ("post", "/v2/automats/{id}/replace"): "AutomatsController_replaceAutomat",
    ("get", "/v2/groups"): "GroupsController_list",
    ("post", "/v2/groups"): "GroupsController_create",
    ("get", "/v2/groups/{id}"): "GroupsController_findOne",
    ("patch", "/v2/groups/{id}"): "GroupsController_update",
    ("delete", "/v2/groups/{id}"): "GroupsController_delete",
    ("post", "/v2/organizationUnits"): "OrganizationUnitsController_create",
    ("post", "/v2/serviceAccounts"): "ServiceAccountsController_create",
    ("delete", "/v2/serviceAccounts/{id}"): "ServiceAccountsController_delete",
}


def test_the_openapi_document_names_operations_and_schemas_as_the_spec_does(
    http: TestClient,
) -> None:
    doc = http.get("/v2/openapi.json").json()
    for (method, path), operation_id in OPERATIONS.items():
        assert doc["paths"][path][method]["operationId"] == operation_id
    schemas = doc["components"]["schemas"]
    for name in (
        "Automat",
        "AutomatLocker",
        "AutomatLocation",
        "AutomatGroup",
        "InstallAutomatDto",
        "UpdateAutomatDto",
        "Group",
        "GroupMember",
        "CreateGroupDto",
        "UpdateGroupDto",
        "OrganizationUnit",
        "CreateOrganizationUnitDto",
        "IloqApiUserDto",
        "ServiceAccount",
        "CreateServiceAccountDto",
    ):
        assert name in schemas, name
    assert set(schemas["Automat"]["properties"]) == {
        "id",
        "name",
        "location",
        "label",
        "groups",
        "hwId",
        "timezone",
        "installationPincode",
        "lockers",
        "lifecycleState",
    }
    assert set(schemas["AutomatLocker"]["properties"]) == {"lockerIndex", "isKeyInside", "key"}
    assert set(doc["components"]["securitySchemes"]) == {
        "serviceAccountId",
        "timestamp",
        "signature",
    }


CONTACT_INPUT = {
    "name",
    "email",
    "phoneNumber",
    "sendSms",
    "sendEmail",
    "language",
    "notifications",
}
ILOQ_CREATE = {
    # contract type: (every property, the required ones), endpoints.md §3.3
    1: (
        {"contractType", "accessRightIds", "start", "end", "numberOfKeys", "keyIds"},
        {"contractType", "accessRightIds", "start", "end"},
    ),
    2: (
        {"contractType", "accessRightIds", "start", "numberOfKeys", "keyIds"},
        {"contractType", "accessRightIds", "start"},
    ),
    3: ({"contractType", "keyIds", "start", "end"}, {"contractType", "keyIds"}),
}
LOCATION = {"keyAutomatId", "groupId", "pincodes", "contact"}


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$ref`` followed, and a nullable ``anyOf`` reduced to its value."""
    if "$ref" in schema:
        return resolve(doc, doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    values = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    return resolve(doc, values[0]) if len(values) == 1 else schema


def request_body(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    body = doc["paths"][path][method]["requestBody"]
    assert body["required"] is True
    return resolve(doc, body["content"]["application/json"]["schema"])


@pytest.fixture
def doc(http: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = http.get("/v2/openapi.json").json()
    return document


def test_the_iloq_create_body_is_documented_as_one_schema_per_contract_type(
    doc: dict[str, Any],
) -> None:
    body = request_body(doc, "post", "/v2/iloq/keycontracts")
    assert body["type"] == "object"
    assert body["required"] == ["input"]
    variants = [resolve(doc, v) for v in body["properties"]["input"]["oneOf"]]
    for variant in variants:
        contract_type = variant["properties"]["contractType"]["const"]
        documented, required = ILOQ_CREATE[contract_type]
        assert set(variant["properties"]) == documented | LOCATION, contract_type
        assert set(variant["required"]) == required, contract_type
    assert sorted(v["properties"]["contractType"]["const"] for v in variants) == [1, 2, 3]
    contact = resolve(doc, variants[0]["properties"]["contact"])
    assert set(contact["properties"]) == CONTACT_INPUT | {"iloqPersonId"}
    notifications = resolve(doc, contact["properties"]["notifications"])
    assert list(notifications["properties"]) == [t.value for t in NOTIFICATION_TYPES]


def test_the_iloq_patch_body_is_documented_with_the_fields_that_may_change(
    doc: dict[str, Any],
) -> None:
    body = request_body(doc, "patch", "/v2/iloq/keycontracts/{id}")
    assert body["type"] == "object"
    assert set(body["properties"]) == {"contact", "start", "end"}
    assert "required" not in body


def test_the_mechanical_create_body_is_documented_flat(doc: dict[str, Any]) -> None:
    body = request_body(doc, "post", "/v2/mechanical/keycontracts")
    assert body["type"] == "object"
    assert set(body["properties"]) == {
        "start",
        "end",
        "contact",
        "userVerification",
        "keys",
        "pickUpInfoForManualStorageKeys",
        "freeLockerAfterFetch",
        "id",
    }
    assert set(body["required"]) == {"start", "contact", "keys"}
    assert set(resolve(doc, body["properties"]["contact"])["properties"]) == CONTACT_INPUT
    key = resolve(doc, body["properties"]["keys"]["items"])
    assert set(key["properties"]) == {"id", "storageInfo"}
    storages = [resolve(doc, s) for s in key["properties"]["storageInfo"]["anyOf"][:2]]
    assert [set(s["properties"]) for s in storages] == [
        {"pincode", "automatId"},
        {"manualStorageInfo"},
    ]


def test_the_mechanical_patch_body_is_documented_with_the_fields_that_may_change(
    doc: dict[str, Any],
) -> None:
    body = request_body(doc, "patch", "/v2/mechanical/keycontracts/{id}")
    assert body["type"] == "object"
    assert set(body["properties"]) == {
        "start",
        "end",
        "contact",
        "userVerification",
        "pickUpInfoForManualStorageKeys",
    }
    assert "required" not in body


def test_contracts_are_answered_with_the_documented_response_schemas(
    doc: dict[str, Any],
) -> None:
    schemas = doc["components"]["schemas"]
    assert set(schemas["IloqKeyContract"]["properties"]) == {
        "id",
        "accessRightIds",
        "start",
        "end",
        "contact",
        "keys",
        "numberOfKeys",
        "keyIds",
        "keyAutomatId",
        "groupId",
        "contractType",
    }
    assert set(schemas["MechanicalKeyContract"]["properties"]) == {
        "id",
        "start",
        "end",
        "contact",
        "keys",
        "freeLockerAfterFetch",
        "userVerification",
        "pickUpInfoForManualStorageKeys",
    }
    contact = CONTACT_INPUT | {"iloqPersonId"}
    assert set(schemas["ContractContact"]["properties"]) == contact
    assert set(schemas["ContractContact"]["required"]) == contact
    assert set(schemas["CommonContractContact"]["properties"]) == CONTACT_INPUT
    assert list(schemas["ContactNotifications"]["properties"]) == [
        t.value for t in NOTIFICATION_TYPES
    ]


def test_an_unknown_route_answers_in_the_error_shape(acme: Tenant) -> None:
    response = acme.api.request("GET", "/nothing/here")
    assert response.status_code == 404
    assert response.json() == {
        "statusCode": 404,
        "message": "Cannot find the requested resource",
        "error": "Not Found",
    }


def test_paths_are_case_sensitive(acme: Tenant) -> None:
    assert acme.api.request("GET", "/Automats").status_code == 404


def test_a_wrong_method_answers_405_in_the_error_shape(acme: Tenant) -> None:
    response = acme.api.request("PUT", "/groups")
    assert response.status_code == 405
    assert response.json()["error"] == "Method Not Allowed"


def test_an_unexpected_failure_answers_500_in_the_error_shape_and_changes_nothing(
    acme: Tenant, container: Container
) -> None:
    app = create_app(container)

    @app.get("/v2/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as http:
        acme.api.http = http
        response = acme.api.request("GET", "/boom")
    assert response.status_code == 500
    assert response.json() == {
        "statusCode": 500,
        "message": "Internal server error",
        "error": "Internal Server Error",
    }


def test_a_too_large_body_is_refused_before_anything_else(http: TestClient) -> None:
    response = http.post("/v2/groups", content=b"x" * (1 << 20 + 1))
    assert response.status_code == 413
    assert response.json()["statusCode"] == 413


def test_the_rate_limit_answers_429_with_retry_after(acme: Tenant, container: Container) -> None:
    container.settings.rate_limit_per_second = 1
    container.settings.rate_limit_burst = 2
    with TestClient(create_app(container), base_url="http://testserver") as http:
        acme.api.http = http
        statuses = [acme.api.request("GET", "/").status_code for _ in range(3)]
        refused = acme.api.request("GET", "/")
    assert statuses[:2] == [200, 200]
    assert refused.status_code == 429
    assert refused.json()["message"] == "Too Many Requests"
    assert int(refused.headers["retry-after"]) >= 1
