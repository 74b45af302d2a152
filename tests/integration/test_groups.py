"""Groups through the V2 API (endpoints §5, gaps E1-E3), and the shared list behaviour."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from tests.conftest import Tenant, make_tenant


def group(tenant: Tenant, name: str, customer_id: str = "c", type_: int = 1) -> dict[str, Any]:
    result: dict[str, Any] = tenant.api.post(
        "/groups", {"name": name, "customerId": customer_id, "type": type_}
    )
    return result


def test_a_new_group_has_no_members(acme: Tenant) -> None:
    created = group(acme, "Helsinki center", "hki", 1)
    assert created == {
        "id": created["id"],
        "name": "Helsinki center",
        "customerId": "hki",
        "type": 1,
        "members": [],
    }
    assert acme.api.get(f"/groups/{created['id']}") == created


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"name": "G", "customerId": "c", "type": 3},
            "type: must be 1 (device group) or 2 (key group)",
        ),
        ({"name": "G", "customerId": "c", "type": "1"}, "type: Input should be a valid integer"),
        ({"name": "G", "type": 1}, "customerId: is required"),
        ({"customerId": "c", "type": 1}, "name: is required"),
    ],
)
def test_bad_group_input_is_refused_naming_the_field(
    acme: Tenant, body: dict[str, Any], message: str
) -> None:
    response = acme.api.request("POST", "/groups", body)
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert acme.api.get("/groups")["data"] == []


def test_a_body_that_is_not_json_is_a_bad_request(acme: Tenant) -> None:
    response = acme.api.request("POST", "/groups", raw_body="{not json")
    assert response.status_code == 400
    assert response.json()["message"] == ["body: is not valid JSON"]


def test_patch_renames_and_changes_the_customer_reference(acme: Tenant) -> None:
    created = group(acme, "Old", "old")
    updated = acme.api.patch(f"/groups/{created['id']}", {"name": "New"})
    assert (updated["name"], updated["customerId"]) == ("New", "old")
    updated = acme.api.patch(f"/groups/{created['id']}", {"customerId": "new", "type": 2})
    assert (updated["name"], updated["customerId"], updated["type"]) == ("New", "new", 1)


def test_deleting_a_group_in_use_removes_the_memberships(acme: Tenant) -> None:
    created = group(acme, "Center")
    automat = acme.api.post(
        "/automats/install",
        {
            "name": "A",
            "address": "x",
            "postalCode": "1",
            "postalOffice": "y",
            "timezone": "UTC",
            "product": "key30",
            "groupId": created["id"],
        },
    )
    response = acme.api.request("DELETE", f"/groups/{created['id']}")
    assert response.status_code == 204
    assert acme.api.get(f"/automats/{automat['id']}")["groups"] == []
    assert acme.api.request("GET", f"/groups/{created['id']}").status_code == 404
    patch = acme.api.request("PATCH", f"/automats/{automat['id']}", {"groups": [created["id"]]})
    assert patch.status_code == 400


def test_groups_filter_by_customer_id_and_search_the_name(acme: Tenant) -> None:
    group(acme, "Helsinki Center", "hki")
    group(acme, "Espoo", "esp")
    group(acme, "helsinki harbour", "hki")
    assert [g["name"] for g in acme.api.get("/groups?customerId=esp")["data"]] == ["Espoo"]
    names = {g["name"] for g in acme.api.get("/groups?search=HELSINKI")["data"]}
    assert names == {"Helsinki Center", "helsinki harbour"}
    assert acme.api.get("/groups?search=%25")["data"] == []  # a literal %, not a wildcard


def test_lists_page_with_after_as_an_offset_and_limit(acme: Tenant) -> None:
    names = [f"g{i:02d}" for i in range(25)]
    for name in names:
        group(acme, name)
    first = acme.api.get("/groups")
    assert (first["after"], first["limit"], first["hasNext"]) == ("20", 20, True)
    assert [g["name"] for g in first["data"]] == names[:20]
    second = acme.api.get(f"/groups?after={first['after']}")
    assert (second["after"], second["limit"], second["hasNext"]) == ("25", 20, False)
    assert [g["name"] for g in second["data"]] == names[20:]
    small = acme.api.get("/groups?limit=10&after=10")
    assert [g["name"] for g in small["data"]] == names[10:20]
    assert (small["after"], small["hasNext"]) == ("20", True)
    assert acme.api.get("/groups?limit=1000")["limit"] == 100
    assert acme.api.get("/groups?after=30")["data"] == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("after=-1", "after: must be a non-negative integer (items to skip)"),
        ("after=abc", "after: must be a non-negative integer (items to skip)"),
        ("limit=0", "limit: must be at least 1"),
        ("limit=ten", "limit: must be an integer"),
    ],
)
def test_bad_pagination_is_refused(acme: Tenant, query: str, message: str) -> None:
    for path in ("/groups", "/automats"):
        response = acme.api.request("GET", f"{path}?{query}")
        assert response.status_code == 400
        assert response.json()["message"] == [message]


def test_another_organizations_groups_are_invisible(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    globex = make_tenant(container, http, name="Globex")
    theirs = group(globex, "Secret", "s")
    assert acme.api.get("/groups")["data"] == []
    assert acme.api.get("/groups?customerId=s")["data"] == []
    for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
        response = acme.api.request(method, f"/groups/{theirs['id']}", body)
        assert response.status_code == 404
        assert response.json()["message"] == "Group not found"
    assert globex.api.get(f"/groups/{theirs['id']}")["name"] == "Secret"


def test_search_folds_case_beyond_ascii(acme: Tenant) -> None:
    group(acme, "Äänekoski", "ä")
    for term in ("äänekoski", "ÄÄNEKOSKI", "Äänekoski", "nekoski"):
        assert [g["name"] for g in acme.api.get(f"/groups?search={term}")["data"]] == [
            "Äänekoski"
        ], term


@pytest.mark.parametrize("after", ["99999999999999999999", "%C2%B2", "1e3", "+1"])
def test_an_offset_too_large_or_not_plain_digits_is_a_bad_request(acme: Tenant, after: str) -> None:
    response = acme.api.request("GET", f"/groups?after={after}")
    assert response.status_code == 400
    assert response.json()["message"] == ["after: must be a non-negative integer (items to skip)"]


def test_a_child_units_group_cannot_hold_or_reveal_a_parent_automat(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    child = make_tenant(container, http, name="Child", parent_id=acme.unit_id)
    child_group = group(child, "Child group")
    parent_group = group(acme, "Parent group")
    automat = acme.api.post(
        "/automats/install",
        {
            "name": "Parent secret automat",
            "address": "x",
            "postalCode": "1",
            "postalOffice": "y",
            "timezone": "UTC",
            "product": "key30",
        },
    )
    response = acme.api.request(
        "PATCH", f"/automats/{automat['id']}", {"groups": [child_group["id"]]}
    )
    assert response.status_code == 400
    assert response.json()["message"] == [
        "groups.0: belongs to an organization unit below the automat's; it cannot hold it"
    ]
    assert child.api.get(f"/groups/{child_group['id']}")["members"] == []
    # A child automat in the parent's group is fine, and the parent sees it.
    child_automat = child.api.post(
        "/automats/install",
        {
            "name": "Child automat",
            "address": "x",
            "postalCode": "1",
            "postalOffice": "y",
            "timezone": "UTC",
            "product": "key30",
        },
    )
    acme.api.patch(f"/automats/{child_automat['id']}", {"groups": [parent_group["id"]]})
    assert acme.api.get(f"/groups/{parent_group['id']}")["members"] == [
        {"id": child_automat["id"], "name": "Child automat"}
    ]
    # The child reads its automat without learning of the parent's group.
    assert child.api.get(f"/automats/{child_automat['id']}")["groups"] == []
