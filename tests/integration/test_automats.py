"""Automats through the V2 API: install, read, change, replace, uninstall (endpoints §4)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.domain.model import Role
from keyautomat.service_layer import automats as automat_cases
from keyautomat.service_layer import lockers
from keyautomat.service_layer.accounts import load_account
from keyautomat.service_layer.principal import Principal
from tests.conftest import TEST_BASE, Tenant, make_tenant

INSTALL = {
    "name": "Mainstreet 1",
    "address": "Mannerheimintie 1",
    "postalCode": "00100",
    "postalOffice": "Helsinki",
    "timezone": "Europe/Helsinki",
    "product": "key20",
}


def install(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = tenant.api.post("/automats/install", {**INSTALL, **changes})
    return result


def test_an_installed_automat_waits_for_its_hardware_with_a_pincode(acme: Tenant) -> None:
    automat = install(acme, label="A")
    assert automat == {
        "id": "000001",
        "name": "Mainstreet 1",
        "location": {
            "address": "Mannerheimintie 1",
            "postalCode": "00100",
            "postalOffice": "Helsinki",
        },
        "label": "A",
        "groups": [],
        "hwId": None,
        "timezone": "Europe/Helsinki",
        "installationPincode": automat["installationPincode"],
        "lockers": [],
        "lifecycleState": "waitingForInstall",
    }
    assert len(automat["installationPincode"]) == 6
    assert automat["installationPincode"].isdigit()


def test_automat_ids_are_sequential_six_digit_strings(acme: Tenant) -> None:
    assert [install(acme)["id"] for _ in range(3)] == ["000001", "000002", "000003"]


def test_install_can_put_the_automat_into_a_device_group(acme: Tenant) -> None:
    group = acme.api.post("/groups", {"name": "Center", "customerId": "c", "type": 1})
    automat = install(acme, groupId=group["id"])
    assert automat["groups"] == [{"id": group["id"], "name": "Center"}]
    assert acme.api.get(f"/groups/{group['id']}")["members"] == [
        {"id": automat["id"], "name": "Mainstreet 1"}
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"timezone": "Mars/Olympus"},
            "timezone: must be an IANA time zone such as Europe/Helsinki",
        ),
        ({"product": "key99"}, "product: Input should be 'key20' or 'key30'"),
        ({"name": 5}, "name: Input should be a valid string"),
        ({"name": ""}, "name: String should have at least 1 character"),
        ({"address": None}, "address: Input should be a valid string"),
        ({"groupId": "ffffffffffffffffffffffff"}, "groupId: does not name a group you can use"),
        (
            {"organizationUnitId": "ffffffffffffffffffffffff"},
            "organizationUnitId: does not name an organization unit you can use",
        ),
    ],
)
def test_bad_install_input_is_refused_naming_the_field(
    acme: Tenant, change: dict[str, Any], message: str
) -> None:
    response = acme.api.request("POST", "/automats/install", {**INSTALL, **change})
    assert response.status_code == 400
    body = response.json()
    assert body["statusCode"] == 400
    assert body["error"] == "Bad Request"
    assert message in body["message"]
    assert acme.api.get("/automats")["data"] == []


def test_a_missing_required_field_is_named(acme: Tenant) -> None:
    body = {k: v for k, v in INSTALL.items() if k != "postalCode"}
    response = acme.api.request("POST", "/automats/install", body)
    assert response.status_code == 400
    assert response.json()["message"] == ["postalCode: is required"]


def test_unknown_properties_are_ignored(acme: Tenant) -> None:
    automat = install(acme, colour="red", lockerCount=30)
    assert "colour" not in automat


def test_a_key_group_cannot_hold_automats(acme: Tenant) -> None:
    keys = acme.api.post("/groups", {"name": "Masters", "customerId": "m", "type": 2})
    response = acme.api.request("POST", "/automats/install", {**INSTALL, "groupId": keys["id"]})
    assert response.status_code == 400
    assert response.json()["message"] == [
        "groupId: names a key group; automats join device groups (type 1)"
    ]


def test_patch_changes_only_what_it_names_and_merges_the_location(acme: Tenant) -> None:
    automat = install(acme, label="A")
    updated = acme.api.patch(
        f"/automats/{automat['id']}",
        {"name": "Renamed", "location": {"postalCode": "00200"}, "timezone": "Europe/Stockholm"},
    )
    assert updated["name"] == "Renamed"
    assert updated["label"] == "A"
    assert updated["timezone"] == "Europe/Stockholm"
    assert updated["location"] == {
        "address": "Mannerheimintie 1",
        "postalCode": "00200",
        "postalOffice": "Helsinki",
    }
    assert acme.api.get(f"/automats/{automat['id']}") == updated


def test_patch_groups_replaces_the_whole_membership(acme: Tenant) -> None:
    g1 = acme.api.post("/groups", {"name": "One", "customerId": "1", "type": 1})
    g2 = acme.api.post("/groups", {"name": "Two", "customerId": "2", "type": 1})
    automat = install(acme, groupId=g1["id"])
    updated = acme.api.patch(f"/automats/{automat['id']}", {"groups": [g2["id"], g2["id"]]})
    assert updated["groups"] == [{"id": g2["id"], "name": "Two"}]
    assert acme.api.get(f"/groups/{g1['id']}")["members"] == []
    cleared = acme.api.patch(f"/automats/{automat['id']}", {"groups": []})
    assert cleared["groups"] == []


def test_patch_with_an_unknown_group_changes_nothing(acme: Tenant) -> None:
    g1 = acme.api.post("/groups", {"name": "One", "customerId": "1", "type": 1})
    automat = install(acme, groupId=g1["id"])
    response = acme.api.request(
        "PATCH",
        f"/automats/{automat['id']}",
        {"name": "Changed", "groups": [g1["id"], "ffffffffffffffffffffffff"]},
    )
    assert response.status_code == 400
    assert response.json()["message"] == ["groups.1: does not name a group you can use"]
    assert acme.api.get(f"/automats/{automat['id']}")["name"] == "Mainstreet 1"


def test_replace_unbinds_the_hardware_and_issues_a_new_pincode(
    acme: Tenant, container: Container
) -> None:
    automat = install(acme)
    principal = principal_of(container, acme)

    def bind(session: Any) -> None:
        a = automat_cases.get_automat(session, principal, automat["id"])
        assert automat_cases.bind_hardware(session, a, "hw-123", automat["installationPincode"])
        lockers.report_key(session, a.id, 0, inside=True, key_id="k1", key_name="740FE4C")

    container.db.transaction(bind)
    bound = acme.api.get(f"/automats/{automat['id']}")
    assert (bound["hwId"], bound["lifecycleState"], bound["installationPincode"]) == (
        "hw-123",
        "active",
        None,
    )
    assert bound["lockers"] == [
        {"lockerIndex": "0", "isKeyInside": True, "key": {"id": "k1", "name": "740FE4C"}}
    ]
    replaced = acme.api.post(f"/automats/{automat['id']}/replace")
    assert replaced["hwId"] is None
    assert replaced["lifecycleState"] == "waitingForInstall"
    assert replaced["installationPincode"] not in (None, automat["installationPincode"])
    assert replaced["lockers"] == bound["lockers"]  # keys stay with the automat id


def test_a_locker_key_without_a_name_is_named_by_its_id(acme: Tenant, container: Container) -> None:
    automat = install(acme)
    principal = principal_of(container, acme)

    def bind(session: Any) -> None:
        a = automat_cases.get_automat(session, principal, automat["id"])
        assert automat_cases.bind_hardware(session, a, "hw-124", automat["installationPincode"])
        lockers.report_key(session, a.id, 0, inside=True, key_id="room-101-key", key_name=None)

    container.db.transaction(bind)
    (locker,) = acme.api.get(f"/automats/{automat['id']}")["lockers"]
    assert locker["key"] == {"id": "room-101-key", "name": "room-101-key"}


def test_uninstall_deactivates_and_leaves_groups_but_stays_readable(acme: Tenant) -> None:
    group = acme.api.post("/groups", {"name": "Center", "customerId": "c", "type": 1})
    automat = install(acme, groupId=group["id"])
    response = acme.api.request("POST", f"/automats/{automat['id']}/uninstall")
    assert response.status_code == 204
    assert response.content == b""
    after = acme.api.get(f"/automats/{automat['id']}")
    assert after["lifecycleState"] == "deactivated"
    assert after["groups"] == []
    assert after["installationPincode"] is None
    assert acme.api.request("POST", f"/automats/{automat['id']}/replace").status_code == 400


def test_an_uninstall_guard_refuses_while_the_automat_is_in_use(
    container: Container, acme: Tenant
) -> None:
    automat = install(acme)
    container.wiring.uninstall_guards.append(lambda _s, _a: "has ongoing or future contracts")
    response = acme.api.request("POST", f"/automats/{automat['id']}/uninstall")
    assert response.status_code == 400
    assert response.json()["message"] == ["id: has ongoing or future contracts"]
    assert acme.api.get(f"/automats/{automat['id']}")["lifecycleState"] == "waitingForInstall"


def test_unknown_automats_answer_404_on_every_operation(acme: Tenant) -> None:
    for method, path, body in [
        ("GET", "/automats/999999", None),
        ("PATCH", "/automats/999999", {"name": "x"}),
        ("POST", "/automats/999999/uninstall", None),
        ("POST", "/automats/999999/replace", None),
    ]:
        response = acme.api.request(method, path, body)
        assert response.status_code == 404
        assert response.json()["message"] == "Automat not found"


def test_another_organizations_automats_are_invisible_and_untouchable(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    globex = make_tenant(container, http, name="Globex")
    theirs = install(globex)
    assert acme.api.get("/automats")["data"] == []
    for method, path, body in [
        ("GET", f"/automats/{theirs['id']}", None),
        ("PATCH", f"/automats/{theirs['id']}", {"name": "mine now"}),
        ("POST", f"/automats/{theirs['id']}/uninstall", None),
        ("POST", f"/automats/{theirs['id']}/replace", None),
    ]:
        response = acme.api.request(method, path, body)
        assert response.status_code == 404, path
    assert globex.api.get(f"/automats/{theirs['id']}")["name"] == "Mainstreet 1"
    foreign_group = globex.api.post("/groups", {"name": "G", "customerId": "g", "type": 1})
    response = acme.api.request(
        "POST", "/automats/install", {**INSTALL, "groupId": foreign_group["id"]}
    )
    assert response.status_code == 400


def test_integration_accounts_read_automats_but_cannot_change_them(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    automat = install(acme)
    pms = make_tenant(container, http, name="PMS", parent_id=acme.unit_id, role=Role.INTEGRATION)
    # The PMS's own unit is below acme's: it sees nothing of acme's automats...
    assert pms.api.get("/automats")["data"] == []
    # ...while an integration account of acme's own unit reads them.
    reader = acme.api.post(
        "/serviceAccounts", {"organizationUnitId": acme.unit_id, "name": "reader"}
    )
    api = Client(TEST_BASE, reader["id"], reader["privateKey"], http=http)
    assert [a["id"] for a in api.get("/automats")["data"]] == [automat["id"]]
    assert api.request("PATCH", f"/automats/{automat['id']}", {"name": "x"}).status_code == 403
    assert api.request("POST", "/automats/install", INSTALL).status_code == 403


def principal_of(container: Container, tenant: Tenant) -> Principal:
    key = container.db.transaction(lambda s: load_account(s, tenant.account_id))
    assert key is not None
    return key.principal


IANA = "must be an IANA time zone such as Europe/Helsinki"


@pytest.mark.parametrize(
    ("zone", "reason"),
    [
        ("a/" * 3000 + "b", IANA),
        ("../../etc/passwd", IANA),
        ("Europe/Helsinki\x00", "must not contain NUL characters"),  # refused for every body
    ],
)
def test_a_hostile_time_zone_is_a_bad_request(acme: Tenant, zone: str, reason: str) -> None:
    response = acme.api.request("POST", "/automats/install", {**INSTALL, "timezone": zone})
    assert response.status_code == 400
    assert response.json()["message"] == [f"timezone: {reason}"]


def test_an_uninstalled_automat_cannot_rejoin_a_group(acme: Tenant) -> None:
    group = acme.api.post("/groups", {"name": "Center", "customerId": "c", "type": 1})
    automat = install(acme, groupId=group["id"])
    acme.api.request("POST", f"/automats/{automat['id']}/uninstall")
    response = acme.api.request("PATCH", f"/automats/{automat['id']}", {"groups": [group["id"]]})
    assert response.status_code == 400
    assert acme.api.get(f"/groups/{group['id']}")["members"] == []


def test_a_drawn_installation_pincode_that_is_taken_is_drawn_again(
    acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = install(acme)
    taken = first["installationPincode"]
    draws = iter([taken, taken, "123456"])
    monkeypatch.setattr(automat_cases, "new_pincode", lambda: next(draws))
    second = install(acme)
    assert second["installationPincode"] == "123456"
    draws = iter([taken, "654321"])
    replaced = acme.api.post(f"/automats/{second['id']}/replace")
    assert replaced["installationPincode"] == "654321"
