"""Every ``/admin`` route has a documented role, and the application enforces it (docs/api.md).

The role table in ``docs/api.md`` is the decision; these tests hold the served
routes and the table to each other, so a new admin route without a decision
fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.domain.model import Role
from keyautomat.entrypoints.api.app import ADMIN_DOCS_URL, ADMIN_OPENAPI_URL
from tests.conftest import TEST_BASE, Tenant, make_tenant

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
INSTALL = {
    "name": "Mainstreet 2",
    "address": "Mannerheimintie 1",
    "postalCode": "00100",
    "postalOffice": "Helsinki",
    "timezone": "Europe/Helsinki",
    "product": "key20",
}
_ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE)` \| `(/admin[^`]*)` \| (\w+) \|$")


def documented_roles() -> dict[tuple[str, str], str]:
    """``(method, path) -> role`` from the admin role table of docs/api.md."""
    rows = (_ROW.match(line) for line in API_DOC.read_text(encoding="utf-8").splitlines())
    return {(m.group(1), m.group(2)): m.group(3) for m in rows if m is not None}


def served_admin_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every signed route under ``/admin`` (its OpenAPI document and docs are public)."""
    served: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        path = route.path
        if path in {ADMIN_OPENAPI_URL, ADMIN_DOCS_URL}:
            continue
        if path is not None and (path == "/admin" or path.startswith("/admin/")):
            served.update((method, path) for method in route.methods or ())
    return served


def signed(tenant: Tenant, http: TestClient) -> Client:
    return Client("http://testserver", tenant.account_id, tenant.private_key, http=http)


def concrete(path: str, unit_id: str) -> str:
    """A request path for a route: units in the caller's scope, other ids unknown."""
    if path.startswith("/admin/organizationunits/"):
        path = path.replace("{id}", unit_id)
    return (
        path.replace("{id}", "0" * 24)
        .replace("{delivery_id}", "1")
        .replace("{alarm_id}", "0" * 24)
        .replace("{key_id}", "k")
    )


def test_every_admin_route_is_in_the_role_table_and_every_row_is_served(
    http: TestClient,
) -> None:
    table = documented_roles()
    served = served_admin_routes(http.app)  # type: ignore[arg-type]
    assert served, "no admin routes found: has the prefix moved?"
    assert sorted(served - table.keys()) == [], "admin routes without a role in docs/api.md"
    assert sorted(table.keys() - served) == [], "docs/api.md lists routes that are not served"
    assert set(table.values()) <= {Role.ADMIN.value, Role.INTEGRATION.value}


def test_an_integration_account_is_refused_on_every_admin_route_and_an_admin_gets_through(
    container: Container, http: TestClient, acme: Tenant, acme_pms: Tenant
) -> None:
    integration, admin = signed(acme_pms, http), signed(acme, http)
    wrong: list[str] = []
    for (method, path), role in sorted(documented_roles().items()):
        target = concrete(path, acme_pms.unit_id)
        body: dict[str, Any] | None = {} if method in {"POST", "PUT", "PATCH"} else None
        refused = integration.request(method, target, body)
        if role == Role.ADMIN.value:
            if refused.status_code != 403 or refused.json() != {
                "statusCode": 403,
                "message": "Forbidden",
                "error": "Forbidden",
            }:
                wrong.append(f"integration {method} {path}: {refused.status_code} {refused.text}")
        elif refused.status_code in (401, 403) or refused.status_code >= 500:
            wrong.append(f"integration {method} {path}: {refused.status_code}")
        allowed = admin.request(method, target, body)
        if allowed.status_code in (401, 403) or allowed.status_code >= 500:
            wrong.append(f"admin {method} {path}: {allowed.status_code} {allowed.text}")
    assert wrong == []


def test_an_integration_account_cannot_subscribe_to_webhooks_and_nothing_is_stored(
    container: Container, http: TestClient, acme: Tenant
) -> None:
    pms = make_tenant(container, http, name="PMS", parent_id=acme.unit_id, role=Role.INTEGRATION)
    body = {
        "name": "exfiltrate",
        "url": "https://hooks.example.com/x",
        "organizationUnitId": pms.unit_id,
        "eventTypes": ["contract-update", "key-status"],
    }
    refused = signed(pms, http).request("POST", "/admin/webhooks", body)
    assert refused.status_code == 403
    assert "secret" not in refused.text
    assert signed(acme, http).get("/admin/webhooks")["data"] == []


def test_an_integration_account_is_refused_every_admin_only_v2_write_and_nothing_changes(
    http: TestClient, acme: Tenant
) -> None:
    """gaps.md B5, route by route: units, accounts, automats and groups are the admin's."""
    automat = acme.api.post("/automats/install", {**INSTALL, "name": "Mainstreet 1"})
    group = acme.api.post("/groups", {"name": "Block A", "customerId": "a", "type": 1})
    other = acme.api.post("/serviceAccounts", {"organizationUnitId": acme.unit_id, "name": "B"})
    reader = acme.api.post("/serviceAccounts", {"organizationUnitId": acme.unit_id, "name": "PMS"})
    assert reader["role"] == Role.INTEGRATION.value
    pms = Client(TEST_BASE, reader["id"], reader["privateKey"], http=http)
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/organizationUnits", {"name": "X", "customerId": "x", "type": 1}),
        ("POST", "/serviceAccounts", {"organizationUnitId": acme.unit_id, "name": "mine"}),
        ("DELETE", f"/serviceAccounts/{other['id']}", None),
        ("POST", "/automats/install", INSTALL),
        ("PATCH", f"/automats/{automat['id']}", {"name": "renamed"}),
        ("POST", f"/automats/{automat['id']}/replace", None),
        ("POST", f"/automats/{automat['id']}/uninstall", None),
        ("POST", "/groups", {"name": "G", "customerId": "g", "type": 1}),
        ("PATCH", f"/groups/{group['id']}", {"name": "renamed"}),
        ("DELETE", f"/groups/{group['id']}", None),
    ]
    answers = {f"{m} {p}": pms.request(m, p, body).status_code for m, p, body in writes}
    assert answers == dict.fromkeys(answers, 403)
    assert acme.api.get(f"/automats/{automat['id']}") == automat
    assert acme.api.get(f"/groups/{group['id']}") == group
    assert [a["id"] for a in acme.api.get("/automats")["data"]] == [automat["id"]]
    assert [g["id"] for g in acme.api.get("/groups")["data"]] == [group["id"]]
    assert Client(TEST_BASE, other["id"], other["privateKey"], http=http).get("/")["ok"] is True
