"""``GET /v2/iloq/accessRights`` on the built-in emulator (the default adapter)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.service_layer.access_rights import AccessRightsCache
from keyautomat.service_layer.clock import ManualClock
from tests.conftest import TEST_BASE, Tenant, make_tenant
from tests.iloq_helpers import SeededSystem, on_system, seed_system

PASSWORD = "Sup3r-secret-iLOQ-pass"


@pytest.fixture
def seeded(container: Container, acme: Tenant) -> SeededSystem:
    return seed_system(container, acme.unit_id)


def names(body: dict[str, object]) -> list[str]:
    data = body["data"]
    assert isinstance(data, list)
    return [item["name"] for item in data]


def test_it_lists_the_api_enabled_rights_by_name_with_their_real_estate_path(
    acme: Tenant, seeded: SeededSystem
) -> None:
    body = acme.api.get("/iloq/accessRights")
    assert set(body) == {"after", "limit", "hasNext", "data"}
    assert (body["after"], body["limit"], body["hasNext"]) == ("3", 20, False)
    assert body["data"] == [
        {"id": seeded.front_door, "name": "Front door", "realEstatePath": "Mannerheimintie 1"},
        {"id": seeded.sauna, "name": "Sauna", "realEstatePath": "Mannerheimintie 1 / Stair A"},
        {
            "id": seeded.storage,
            "name": "Storage room",
            "realEstatePath": "Mannerheimintie 1 / Stair A",
        },
    ]


def test_search_matches_part_of_the_name_ignoring_case(acme: Tenant, seeded: SeededSystem) -> None:
    del seeded
    assert names(acme.api.get("/iloq/accessRights?search=OO")) == ["Front door", "Storage room"]
    assert names(acme.api.get("/iloq/accessRights?search=nothing")) == []


def test_default_accesses_only_leaves_out_the_others(acme: Tenant, seeded: SeededSystem) -> None:
    del seeded
    body = acme.api.get("/iloq/accessRights?returnDefaultAccessesOnly=true")
    assert names(body) == ["Front door", "Sauna"]
    body = acme.api.get("/iloq/accessRights?returnDefaultAccessesOnly=false&search=sauna")
    assert names(body) == ["Sauna"]


def test_pages_follow_the_offset_returned_in_after(acme: Tenant, seeded: SeededSystem) -> None:
    del seeded
    first = acme.api.get("/iloq/accessRights?limit=2")
    assert (names(first), first["after"], first["hasNext"]) == (
        ["Front door", "Sauna"],
        "2",
        True,
    )
    second = acme.api.get(f"/iloq/accessRights?limit=2&after={first['after']}")
    assert (names(second), second["after"], second["hasNext"]) == (["Storage room"], "3", False)
    assert acme.api.get("/iloq/accessRights?limit=500")["limit"] == 100


def test_bad_paging_and_flags_are_refused_with_the_field_named(acme: Tenant) -> None:
    for query, field in (
        ("limit=0", "limit"),
        ("after=-1", "after"),
        ("returnDefaultAccessesOnly=maybe", "returnDefaultAccessesOnly"),
    ):
        response = acme.api.request("GET", f"/iloq/accessRights?{query}")
        assert response.status_code == 400, query
        assert field in str(response.json()["message"])


def test_another_organization_sees_only_its_own_system(
    container: Container, http: TestClient, acme: Tenant, seeded: SeededSystem
) -> None:
    del seeded
    other = make_tenant(container, http, name="Other Housing")
    assert names(other.api.get("/iloq/accessRights")) == []
    seed_system(container, other.unit_id, prefix="Other ")
    container.access_rights_cache.invalidate()
    assert names(other.api.get("/iloq/accessRights")) == [
        "Other Front door",
        "Other Sauna",
        "Other Storage room",
    ]
    assert "Other Sauna" not in names(acme.api.get("/iloq/accessRights"))


def test_a_sub_unit_uses_the_system_of_its_nearest_configured_ancestor(
    container: Container, http: TestClient, acme: Tenant, seeded: SeededSystem
) -> None:
    del seeded
    area = make_tenant(container, http, name="Area", parent_id=acme.unit_id)
    assert names(area.api.get("/iloq/accessRights")) == ["Front door", "Sauna", "Storage room"]
    # A unit with its own iLOQ configuration has its own (here emulated) system.
    created = acme.api.post(
        "/organizationUnits",
        {
            "type": 5,
            "name": "Own system",
            "customerId": "own",
            "iloqApiUser": {
                "username": "api.user",
                "password": PASSWORD,
                "customerCode": "OWN-1",
                "serviceAddress": "emulator:",
            },
        },
    )
    assert created["iloqApiUser"]["password"] == "********"
    account = acme.api.post(
        "/serviceAccounts", {"organizationUnitId": created["id"], "name": "own system"}
    )
    own = Client(TEST_BASE, account["id"], account["privateKey"], http=http)
    assert names(own.get("/iloq/accessRights")) == []
    seed_system(container, created["id"], prefix="Own ")
    container.access_rights_cache.invalidate(created["id"])
    assert names(own.get("/iloq/accessRights")) == [
        "Own Front door",
        "Own Sauna",
        "Own Storage room",
    ]
    assert PASSWORD not in str(own.get("/iloq/accessRights"))


def test_rights_are_cached_per_system_until_they_expire(
    container: Container, acme: Tenant, seeded: SeededSystem
) -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    container.access_rights_cache = AccessRightsCache(300, clock)
    assert len(names(acme.api.get("/iloq/accessRights"))) == 3
    on_system(container, seeded.unit_id, lambda s: s.add_access_right("Laundry"))
    assert len(names(acme.api.get("/iloq/accessRights"))) == 3
    clock.advance(timedelta(seconds=301))
    assert names(acme.api.get("/iloq/accessRights"))[0] == "Front door"
    assert "Laundry" in names(acme.api.get("/iloq/accessRights"))


def test_the_operation_is_documented_under_its_livion_names(http: TestClient) -> None:
    schema = http.get("/v2/openapi.json").json()
    operation = schema["paths"]["/iloq/accessRights"]["get"]
    assert operation["operationId"] == "IloqController_getAccessRights"
    parameters = {p["name"] for p in operation["parameters"]}
    assert parameters == {"after", "limit", "search", "returnDefaultAccessesOnly"}
    assert "IloqAccessRight" in schema["components"]["schemas"]
