"""What every V2 client relies on: the OpenAPI document, the error shape, the routes."""

from __future__ import annotations

from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
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
