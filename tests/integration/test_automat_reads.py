"""``GET /v2/automats`` and ``GET /v2/automats/{id}`` are written straight from plain rows;
their bytes are those of the object-by-object rendering they replaced, key order included."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import signature_headers
from keyautomat.entrypoints.api.schemas import Paginated
from keyautomat.entrypoints.api.v2 import automats as automat_routes
from keyautomat.entrypoints.api.v2.automats import Automat
from keyautomat.service_layer import automats as automat_cases
from keyautomat.service_layer import lockers
from keyautomat.service_layer.accounts import load_account
from keyautomat.service_layer.automats import AutomatView
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal
from tests.conftest import TEST_BASE, Tenant

INSTALL = {
    "address": "Mannerheimintie 1",
    "postalCode": "00100",
    "postalOffice": "Helsinki",
    "timezone": "Europe/Helsinki",
    "product": "key20",
}


def reference(view: AutomatView) -> dict[str, Any]:
    """The ``Automat`` JSON as the API wrote it, object by object, before it wrote rows."""
    return {
        "id": view.id,
        "name": view.name,
        "location": {
            "address": view.address,
            "postalCode": view.postal_code,
            "postalOffice": view.postal_office,
        },
        "label": view.label,
        "groups": [{"id": gid, "name": name} for gid, name in view.groups],
        "hwId": view.hw_id,
        "timezone": view.timezone,
        "installationPincode": view.installation_pincode,
        "lockers": [
            {
                "lockerIndex": str(locker.locker_index),
                "isKeyInside": locker.is_key_inside,
                "key": (
                    {"id": locker.key_id, "name": locker.key_name or locker.key_id}
                    if locker.key_id is not None
                    else None
                ),
            }
            for locker in view.lockers
        ],
        "lifecycleState": view.lifecycle_state,
    }


def _principal(container: Container, tenant: Tenant) -> Principal:
    key = container.db.transaction(lambda s: load_account(s, tenant.account_id))
    assert key is not None
    return key.principal


def _seed(acme: Tenant, container: Container) -> list[str]:
    """Three automats: one bound with a named key in, a nameless key out and an empty
    locker, in two groups; one with a label and odd text; one bare."""
    one = acme.api.post("/groups", {"name": "Zeta", "customerId": "z", "type": 1})
    two = acme.api.post("/groups", {"name": "Alpha", "customerId": "a", "type": 1})
    bound = acme.api.post("/automats/install", {**INSTALL, "name": "Lobby"})
    acme.api.patch(f"/automats/{bound['id']}", {"groups": [one["id"], two["id"]]})
    labelled = acme.api.post(
        "/automats/install", {**INSTALL, "name": 'Äänekoski "B" \u2603', "label": "L\\1"}
    )
    bare = acme.api.post("/automats/install", {**INSTALL, "name": "Bare"})
    principal = _principal(container, acme)

    def bind(session: Session) -> None:
        automat = automat_cases.get_automat(session, principal, bound["id"])
        assert automat_cases.bind_hardware(session, automat, "hw-9", bound["installationPincode"])
        lockers.report_key(session, automat.id, 2, inside=True, key_id="k1", key_name="740FE4C")
        lockers.report_key(session, automat.id, 0, inside=False, key_id="k2", key_name=None)
        lockers.report_key(session, automat.id, 1, inside=False, key_id=None, key_name=None)

    container.db.transaction(bind)
    return [bound["id"], labelled["id"], bare["id"]]


def _get(acme: Tenant, http: TestClient, path: str) -> bytes:
    url = f"{TEST_BASE}{path}"
    headers = signature_headers(
        method="GET",
        url=url,
        body="",
        service_account_id=acme.account_id,
        private_key_pem=acme.private_key,
    )
    response = http.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return response.content


def test_an_automat_reads_byte_for_byte_as_before(
    acme: Tenant, http: TestClient, container: Container
) -> None:
    ids = _seed(acme, container)
    principal = _principal(container, acme)
    for automat_id in ids:

        def read(session: Session, automat_id: str = automat_id) -> AutomatView:
            return automat_cases.view_automat(session, principal, automat_id)

        view = container.db.transaction(read)
        body = _get(acme, http, f"/automats/{automat_id}")
        assert body == orjson.dumps(reference(view))
        # The key order is the vendor's, as the response model declares it.
        assert Automat.model_validate_json(body).model_dump_json(by_alias=True).encode() == body


def test_a_page_of_automats_reads_byte_for_byte_as_before(
    acme: Tenant, http: TestClient, container: Container
) -> None:
    _seed(acme, container)
    principal = _principal(container, acme)
    for after, limit in ((0, 100), (0, 2), (2, 2), (5, 2)):
        wanted = PageRequest(after, limit)

        def read(session: Session, wanted: PageRequest = wanted) -> Page[AutomatView]:
            return automat_cases.list_automats(session, principal, wanted)

        page = container.db.transaction(read)
        expected = {
            "after": str(page.next_offset),
            "limit": page.limit,
            "hasNext": page.has_next,
            "data": [reference(view) for view in page.items],
        }
        body = _get(acme, http, f"/automats?after={after}&limit={limit}")
        assert body == orjson.dumps(expected)
        parsed = Paginated[Automat].model_validate_json(body)
        assert parsed.model_dump_json(by_alias=True).encode() == body
    full = orjson.loads(_get(acme, http, "/automats?limit=100"))
    lobby = full["data"][0]
    assert [group["name"] for group in lobby["groups"]] == ["Alpha", "Zeta"]
    assert lobby["lockers"] == [
        {"lockerIndex": "0", "isKeyInside": False, "key": {"id": "k2", "name": "k2"}},
        {"lockerIndex": "1", "isKeyInside": False, "key": None},
        {"lockerIndex": "2", "isKeyInside": True, "key": {"id": "k1", "name": "740FE4C"}},
    ]


def test_a_far_page_is_read_on_the_database_thread_and_reads_the_same(
    acme: Tenant, http: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(acme, container)
    on_the_loop = _get(acme, http, "/automats?after=2&limit=2")
    monkeypatch.setattr(automat_routes, "LOOP_READ_MAX_OFFSET", 1)
    reads: list[bool] = []
    real = container.db.loop_reader
    if real is not None:
        monkeypatch.setattr(real, "read", lambda *a: reads.append(True))
    assert _get(acme, http, "/automats?after=2&limit=2") == on_the_loop
    assert reads == []
