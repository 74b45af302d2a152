"""A request id goes from the ``X-Request-Id`` header onto every log line of its request,
the database thread's included, and back in the answer (docs/operations.md, "Logs")."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.entrypoints.api.app import create_app
from keyautomat.logs import request_id_of, service_account_of
from tests.conftest import Tenant, make_tenant
from tests.integration.log_capture import Captured, captured_logs

GROUP = {"name": "G", "type": 1, "customerId": "g"}


@pytest.fixture
def quiet_client(container: Container) -> Iterator[TestClient]:
    """The API without the device gateway: no background task logs while a request runs,
    so every record made during one belongs to it."""
    with TestClient(create_app(container, run_gateway=False)) as client:
        yield client


@pytest.fixture
def tenant(container: Container, quiet_client: TestClient) -> Tenant:
    return make_tenant(container, quiet_client)


@pytest.fixture
def logs() -> Iterator[Captured]:
    with captured_logs("debug") as captured:
        # SQLAlchemy's statements (never their parameters), logged on the database thread.
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
        yield captured


def test_a_request_id_from_the_header_is_on_every_log_line_of_the_request_and_in_the_answer(
    tenant: Tenant, logs: Captured
) -> None:
    logs.records.taken()
    response = tenant.api.request("POST", "/groups", GROUP, headers={"X-Request-Id": "trace-42"})
    records = logs.records.taken()
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "trace-42"
    assert records
    assert {request_id_of(record) for record in records} == {"trace-42"}
    # The statements ran on the database thread, and still carry it.
    sql = [r for r in records if r.name.startswith("sqlalchemy.engine")]
    assert sql
    assert all(str(r.threadName).startswith("keyautomat-db") for r in sql)
    [access] = [r for r in records if r.name == "keyautomat.access"]
    assert access.getMessage().startswith("POST /v2/groups 201 ")
    assert service_account_of(access) == tenant.account_id
    # The process's own JSON line of it carries both.
    [line] = [json.loads(x) for x in logs.text().splitlines() if "keyautomat.access" in x]
    assert (line["requestId"], line["serviceAccountId"]) == ("trace-42", tenant.account_id)


def test_without_a_request_id_the_server_makes_one_and_returns_it(
    tenant: Tenant, logs: Captured
) -> None:
    logs.records.taken()
    response = tenant.api.request("GET", "/groups")
    records = logs.records.taken()
    made = response.headers["x-request-id"]
    assert len(made) == 32
    assert {request_id_of(record) for record in records} == {made}
    assert tenant.api.request("GET", "/groups").headers["x-request-id"] != made


@pytest.mark.parametrize("given", [b"two words", b"x" * 129, "\u00fcber".encode()])
def test_a_request_id_that_is_not_1_to_128_visible_ascii_is_replaced(
    quiet_client: TestClient, given: bytes
) -> None:
    response = quiet_client.get("/healthz", headers=[(b"x-request-id", given)])
    assert response.status_code == 200
    returned = response.headers["x-request-id"]
    assert returned.encode() != given
    assert len(returned) == 32


def test_a_refused_request_carries_its_id_in_the_refusal_and_its_log_line(
    quiet_client: TestClient, logs: Captured
) -> None:
    logs.records.taken()
    response = quiet_client.get("/v2/groups", headers={"X-Request-Id": "unsigned-1"})
    records = logs.records.taken()
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "unsigned-1"
    messages = {r.name: r.getMessage() for r in records}
    assert "a signing header is missing" in messages["keyautomat.entrypoints.api.auth"]
    assert messages["keyautomat.access"].startswith("GET - 401 ")
    assert {request_id_of(record) for record in records} == {"unsigned-1"}
    assert {service_account_of(record) for record in records} == {None}


def test_the_access_line_names_the_route_not_the_path_it_was_called_with(
    tenant: Tenant, logs: Captured
) -> None:
    group = tenant.api.post("/groups", GROUP)
    logs.records.taken()
    tenant.api.get(f"/groups/{group['id']}")
    [access] = [r for r in logs.records.taken() if r.name == "keyautomat.access"]
    assert access.getMessage().startswith("GET /v2/groups/{id} 200 ")
