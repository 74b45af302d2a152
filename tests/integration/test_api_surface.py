"""What every V2 client relies on: the OpenAPI document, the error shape, the routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.entrypoints.api.app import create_app
from tests.conftest import Tenant

# The typing of every operation and schema is held to the vendor's by
# tests/openapi_ts; these are what TypeScript does not show.


@pytest.fixture
def doc(http: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = http.get("/v2/openapi.json").json()
    return document


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _served(app: FastAPI, prefix: str) -> set[tuple[str, str]]:
    return {
        (method.lower(), (route.path or "").removeprefix(prefix) or "/")
        for route in iter_route_contexts(app.routes)
        if (route.path or "").startswith(f"{prefix}/") and route.include_in_schema
        for method in route.methods or ()
    }


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def test_the_v2_document_holds_every_v2_route_under_the_server_url_and_nothing_else(
    http: TestClient, doc: dict[str, Any]
) -> None:
    assert doc["servers"] == [{"url": "/v2"}]
    assert _documented(doc) == _served(http.app, "/v2")  # type: ignore[arg-type]
    assert len(_documented(doc)) == 33  # the vendor's 32 and GET /


def test_the_admin_routes_have_a_document_of_their_own(http: TestClient) -> None:
    admin = http.get("/admin/openapi.json").json()
    assert admin["servers"] == [{"url": "/admin"}]
    assert _documented(admin) == _served(http.app, "/admin")  # type: ignore[arg-type]
    assert set(admin["components"]["securitySchemes"]) == {
        "serviceAccountId",
        "timestamp",
        "signature",
    }
    assert http.get("/admin/docs").status_code == 200


def test_the_v2_document_states_types_as_the_vendor_does(doc: dict[str, Any]) -> None:
    """Numbers, not integers; no lengths, patterns or ranges (docs/api.md lists ours); no
    FastAPI 422 (never sent): a 422 is only the reused Idempotency-Key's."""
    nodes = list(_walk(doc))
    assert not [n for n in nodes if n.get("type") == "integer"]
    stated = {"minLength", "maxLength", "pattern", "minimum", "maximum", "minItems", "maxItems"}
    assert not [n for n in nodes if stated & n.keys() and "type" in n]
    reused = {"$ref": "#/components/responses/IdempotencyKeyReused"}
    assert not [n for n in nodes if "422" in n and n["422"] != reused]
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_every_error_status_is_the_vendors_without_a_body_schema_or_ours_with_the_one_shape(
    doc: dict[str, Any],
) -> None:
    responses = doc["components"]["responses"]
    for item in doc["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                if "$ref" in response:
                    shared = responses[response["$ref"].rsplit("/", 1)[1]]
                    schema = shared["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
                else:
                    assert "content" not in response, (operation["operationId"], status)


def test_a_refusal_has_the_documented_error_shape(acme: Tenant, doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    validator = jsonschema_rs.validator_for(
        {**schemas["ErrorResponse"], "components": {"schemas": schemas}}
    )
    refused = acme.api.request("POST", "/groups", {"name": "", "type": "x"})
    assert refused.status_code == 400
    validator.validate(refused.json())


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
