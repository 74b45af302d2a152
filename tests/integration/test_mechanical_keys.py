"""Mechanical keys through the V2 API (endpoints §8; gaps.md A5, F6-F9)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters.orm_mechanical import mechanical_keys as mk
from keyautomat.bootstrap import Container
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.mechanical import MechanicalKey, Storage
from keyautomat.domain.model import OrgUnitType
from keyautomat.service_layer import mechanical_keys
from tests.conftest import Tenant, make_tenant
from tests.devices import install


def new_key(tenant: Tenant, key_id: str = "room-101-key", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": key_id,
        "selectedStorage": {"manualStorageInfo": "Shelf 1, Drawer 1"},
        "away": False,
        **fields,
    }
    created: dict[str, Any] = tenant.api.post("/mechanical/keys", body)
    return created


def test_a_manual_key_is_created_in_its_storage_and_can_be_read(acme: Tenant) -> None:
    created = new_key(acme, name="Room 101", rfidHex="1a00d1")
    assert created == {
        "id": "room-101-key",
        "name": "Room 101",
        "organizationUnitId": acme.unit_id,
        "rfidHex": "1A00D1",
        "selectedStorage": {"manualStorageInfo": "Shelf 1, Drawer 1"},
        "storage": {"manualStorageInfo": "Shelf 1, Drawer 1"},
        "targetStorage": {"manualStorageInfo": "Shelf 1, Drawer 1"},
        "status": {"available": True},
        "shared": False,
    }
    assert acme.api.get("/mechanical/keys/room-101-key") == created


def test_a_key_created_away_has_no_storage_and_is_not_available(acme: Tenant) -> None:
    automat = install(acme, product="key30")
    created = new_key(acme, selectedStorage={"automatId": automat["id"]}, away=True, shared=True)
    assert created["storage"] is None
    assert created["status"] == {"available": False}
    assert created["selectedStorage"] == {"automatId": automat["id"]}
    assert created["targetStorage"] == {"automatId": automat["id"]}
    assert created["shared"] is True
    assert created["name"] is None
    assert created["rfidHex"] is None


def test_a_device_key_not_away_is_stored_in_its_automat(acme: Tenant) -> None:
    automat = install(acme, product="key30")
    created = new_key(acme, selectedStorage={"automatId": automat["id"]})
    assert created["storage"] == {"automatId": automat["id"]}
    assert created["status"] == {"available": True}


def test_a_duplicate_id_is_a_conflict_within_the_whole_organization(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    new_key(acme)
    response = acme.api.request(
        "POST",
        "/mechanical/keys",
        {"id": "room-101-key", "selectedStorage": {"manualStorageInfo": "x"}, "away": False},
    )
    assert response.status_code == 409
    assert "same keyId" in response.json()["message"]
    branch = make_tenant(
        container, http, name="Acme branch", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    response = branch.api.request(
        "POST",
        "/mechanical/keys",
        {"id": "room-101-key", "selectedStorage": {"manualStorageInfo": "x"}, "away": False},
    )
    assert response.status_code == 409


def test_another_organization_may_use_the_same_id_and_never_sees_ours(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    ours = new_key(acme, name="ours")
    other = make_tenant(container, http, name="Other Housing")
    theirs = new_key(other, name="theirs")
    assert theirs["organizationUnitId"] == other.unit_id
    assert acme.api.get("/mechanical/keys/room-101-key") == ours
    assert other.api.get("/mechanical/keys/room-101-key") == theirs
    assert [k["name"] for k in other.api.get("/mechanical/keys")["data"]] == ["theirs"]
    other.api.delete("/mechanical/keys/room-101-key")
    assert acme.api.get("/mechanical/keys/room-101-key") == ours


def test_another_organizations_key_answers_404_everywhere(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    new_key(acme, "only-ours")
    other = make_tenant(container, http, name="Other Housing")
    for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
        response = other.api.request(method, "/mechanical/keys/only-ours", body)
        assert response.status_code == 404, method
        assert response.json()["message"] == "Mechanical key not found"
    assert acme.api.get("/mechanical/keys/only-ours")["name"] is None


def test_another_organizations_automat_cannot_be_the_selected_storage(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    other = make_tenant(container, http, name="Other Housing")
    foreign = install(other, product="key30")
    response = acme.api.request(
        "POST",
        "/mechanical/keys",
        {"id": "k", "selectedStorage": {"automatId": foreign["id"]}, "away": False},
    )
    assert response.status_code == 400
    assert response.json()["message"] == [
        "selectedStorage.automatId: does not name an automat you can use"
    ]
    new_key(acme, "k")
    response = acme.api.request(
        "PATCH", "/mechanical/keys/k", {"selectedStorage": {"automatId": foreign["id"]}}
    )
    assert response.status_code == 400
    # Filtering by an automat the caller cannot see finds nothing, not the other's keys.
    other.api.post(
        "/mechanical/keys",
        {"id": "theirs", "selectedStorage": {"automatId": foreign["id"]}, "away": False},
    )
    assert acme.api.get(f"/mechanical/keys?automatId={foreign['id']}")["data"] == []
    assert acme.api.get("/mechanical/keys?search=theirs")["data"] == []


def test_a_key20_or_uninstalled_automat_cannot_hold_mechanical_keys(acme: Tenant) -> None:
    key20 = install(acme, product="key20")
    response = acme.api.request(
        "POST",
        "/mechanical/keys",
        {"id": "k", "selectedStorage": {"automatId": key20["id"]}, "away": False},
    )
    assert response.status_code == 400
    assert "key30" in response.json()["message"][0]
    key30 = install(acme, product="key30")
    acme.api.post(f"/automats/{key30['id']}/uninstall")
    response = acme.api.request(
        "POST",
        "/mechanical/keys",
        {"id": "k", "selectedStorage": {"automatId": key30["id"]}, "away": False},
    )
    assert response.status_code == 400
    assert response.json()["message"] == ["selectedStorage.automatId: names an uninstalled automat"]


def _bad(extra: dict[str, Any]) -> dict[str, Any]:
    body = {"id": "k", "selectedStorage": {"manualStorageInfo": "Shelf"}, "away": False}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_bad({"id": ...}), "id: is required"),
        (_bad({"away": ...}), "away: is required"),
        (_bad({"selectedStorage": ...}), "selectedStorage: is required"),
        (_bad({"id": ""}), "id: must be 1-128 printable characters without '/'"),
        (_bad({"id": "a/b"}), "id: must be 1-128 printable characters without '/'"),
        (_bad({"id": "x" * 129}), "id: must be 1-128 printable characters without '/'"),
        (_bad({"id": "tab\there"}), "id: must be 1-128 printable characters without '/'"),
        (_bad({"id": 7}), "id: Input should be a valid string"),
        (_bad({"away": "no"}), "away: Input should be a valid boolean"),
        (_bad({"shared": "yes"}), "shared: Input should be a valid boolean"),
        (_bad({"name": 5}), "name: Input should be a valid string"),
        (_bad({"rfidHex": "XYZ"}), "rfidHex: must be 1-64 hexadecimal digits, e.g. 1A00D1"),
        (_bad({"rfidHex": ""}), "rfidHex: must be 1-64 hexadecimal digits, e.g. 1A00D1"),
        (
            _bad({"shared": True}),
            "shared: is only allowed for keys stored in an automat",
        ),
        (
            _bad({"selectedStorage": {}}),
            "selectedStorage: must have automatId (device) or manualStorageInfo (manual)",
        ),
        (
            _bad({"selectedStorage": {"automatId": "000001", "manualStorageInfo": "x"}}),
            "selectedStorage: give either automatId or manualStorageInfo, not both",
        ),
        (
            _bad({"selectedStorage": {"manualStorageInfo": " "}}),
            "selectedStorage.manualStorageInfo: must not be empty",
        ),
        (
            _bad({"selectedStorage": {"automatId": 1}}),
            "selectedStorage.automatId: Input should be a valid string",
        ),
        (
            _bad({"selectedStorage": {"automatId": "999999"}}),
            "selectedStorage.automatId: does not name an automat you can use",
        ),
        (
            _bad({"organizationUnitId": "ffffffffffffffffffffffff"}),
            "organizationUnitId: does not name an organization unit you can use",
        ),
    ],
)
def test_bad_key_input_is_refused_naming_the_field(
    acme: Tenant, body: dict[str, Any], message: str
) -> None:
    response = acme.api.request("POST", "/mechanical/keys", body)
    assert response.status_code == 400, response.json()
    assert message in response.json()["message"]
    assert acme.api.get("/mechanical/keys")["data"] == []


def test_unknown_properties_are_ignored_and_nulls_take_the_defaults(acme: Tenant) -> None:
    created = new_key(
        acme, name=None, rfidHex=None, shared=None, organizationUnitId=None, color="red"
    )
    assert (created["name"], created["rfidHex"], created["shared"]) == (None, None, False)
    assert created["organizationUnitId"] == acme.unit_id


def test_a_key_can_belong_to_a_unit_below_the_caller(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    branch = make_tenant(
        container, http, name="Acme branch", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    created = new_key(acme, organizationUnitId=branch.unit_id)
    assert created["organizationUnitId"] == branch.unit_id
    assert branch.api.get("/mechanical/keys/room-101-key") == created
    response = branch.api.request(
        "POST",
        "/mechanical/keys",
        {
            "id": "up",
            "organizationUnitId": acme.unit_id,
            "selectedStorage": {"manualStorageInfo": "x"},
            "away": False,
        },
    )
    assert response.status_code == 400


def test_ids_with_spaces_and_unicode_work_in_the_path(acme: Tenant) -> None:
    new_key(acme, "Huone 101 – avain")
    assert acme.api.get("/mechanical/keys/Huone%20101%20%E2%80%93%20avain")["id"] == (
        "Huone 101 – avain"
    )


def test_the_list_filters_by_search_storage_automat_and_unit(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    a1 = install(acme, product="key30", name="Harbour")
    a2 = install(acme, product="key30", name="Station")
    branch = make_tenant(
        container, http, name="Acme branch", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    new_key(
        acme,
        "room-101-key",
        name="Room 101",
        rfidHex="1A00D1",
        selectedStorage={"automatId": a1["id"]},
    )
    new_key(acme, "room-102-key", name="Sauna", selectedStorage={"automatId": a2["id"]})
    new_key(acme, "garage", name="Garage door", rfidHex="BEEF")
    new_key(acme, "branch-key", organizationUnitId=branch.unit_id)

    def ids(query: str) -> list[str]:
        return [k["id"] for k in acme.api.get(f"/mechanical/keys{query}")["data"]]

    assert ids("") == ["room-101-key", "room-102-key", "garage", "branch-key"]
    assert ids("?search=ROOM") == ["room-101-key", "room-102-key"]
    assert ids("?search=sauna") == ["room-102-key"]
    assert ids("?search=a00d") == ["room-101-key"]
    assert ids("?search=%25") == []  # a literal percent sign, not a wildcard
    assert ids("?selectedStorage=1") == ["room-101-key", "room-102-key"]
    assert ids("?selectedStorage=2") == ["garage", "branch-key"]
    assert ids(f"?automatId={a2['id']}") == ["room-102-key"]
    assert ids(f"?organizationUnitId={branch.unit_id}") == ["branch-key"]
    assert ids(f"?organizationUnitId={acme.unit_id}&selectedStorage=2") == ["garage"]
    assert [k["id"] for k in branch.api.get("/mechanical/keys")["data"]] == ["branch-key"]
    response = branch.api.request("GET", f"/mechanical/keys?organizationUnitId={acme.unit_id}")
    assert response.status_code == 400
    assert response.json()["message"] == [
        "organizationUnitId: does not name an organization unit you can use"
    ]
    for bad in ("0", "3", "device"):
        response = acme.api.request("GET", f"/mechanical/keys?selectedStorage={bad}")
        assert response.status_code == 400
        assert response.json()["message"] == [
            "selectedStorage: must be 1 (device) or 2 (manual storage)"
        ]


def test_the_pms_example_lists_device_keys_a_hundred_at_a_time(acme: Tenant) -> None:
    automat = install(acme, product="key30")
    for number in range(1, 4):
        new_key(acme, f"room-10{number}-key", selectedStorage={"automatId": automat["id"]})
    new_key(acme, "manual")
    page = acme.api.get("/mechanical/keys?limit=100&selectedStorage=1")
    assert page["limit"] == 100
    assert page["hasNext"] is False
    assert page["after"] == "3"
    assert [k["id"] for k in page["data"]] == ["room-101-key", "room-102-key", "room-103-key"]


def test_the_list_pages_with_after_and_limit(acme: Tenant) -> None:
    for number in range(5):
        new_key(acme, f"k{number}")
    first = acme.api.get("/mechanical/keys?limit=2")
    assert ([k["id"] for k in first["data"]], first["after"], first["hasNext"]) == (
        ["k0", "k1"],
        "2",
        True,
    )
    last = acme.api.get("/mechanical/keys?limit=2&after=4")
    assert ([k["id"] for k in last["data"]], last["hasNext"]) == (["k4"], False)
    assert acme.api.request("GET", "/mechanical/keys?after=x").status_code == 400
    assert acme.api.request("GET", "/mechanical/keys?limit=0").status_code == 400


def test_patch_changes_only_what_it_names_and_null_clears(acme: Tenant) -> None:
    automat = install(acme, product="key30")
    new_key(acme, name="Room 101", rfidHex="AB")
    updated = acme.api.patch("/mechanical/keys/room-101-key", {"rfidHex": "cd01"})
    assert (updated["name"], updated["rfidHex"]) == ("Room 101", "CD01")
    updated = acme.api.patch("/mechanical/keys/room-101-key", {"name": None, "unknown": 1})
    assert (updated["name"], updated["rfidHex"]) == (None, "CD01")
    updated = acme.api.patch(
        "/mechanical/keys/room-101-key",
        {"selectedStorage": {"automatId": automat["id"]}, "shared": True},
    )
    assert updated["selectedStorage"] == {"automatId": automat["id"]}
    assert updated["targetStorage"] == {"automatId": automat["id"]}
    assert updated["shared"] is True
    # The key is still on the shelf until the automat reports it.
    assert updated["storage"] == {"manualStorageInfo": "Shelf 1, Drawer 1"}
    updated = acme.api.patch("/mechanical/keys/room-101-key", {"shared": None})
    assert updated["shared"] is False
    assert acme.api.get("/mechanical/keys/room-101-key") == updated


def test_a_shared_key_cannot_move_to_manual_storage_unless_it_stops_sharing(
    acme: Tenant,
) -> None:
    automat = install(acme, product="key30")
    new_key(acme, selectedStorage={"automatId": automat["id"]}, shared=True)
    manual = {"selectedStorage": {"manualStorageInfo": "Shelf 2"}}
    response = acme.api.request("PATCH", "/mechanical/keys/room-101-key", manual)
    assert response.status_code == 400
    assert response.json()["message"] == ["shared: is only allowed for keys stored in an automat"]
    updated = acme.api.patch("/mechanical/keys/room-101-key", {**manual, "shared": False})
    assert updated["selectedStorage"] == {"manualStorageInfo": "Shelf 2"}


def test_a_manual_key_at_home_follows_its_home_being_renamed(acme: Tenant) -> None:
    new_key(acme)
    updated = acme.api.patch(
        "/mechanical/keys/room-101-key", {"selectedStorage": {"manualStorageInfo": "Shelf 2"}}
    )
    assert updated["storage"] == {"manualStorageInfo": "Shelf 2"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rfidHex": "zz"}, "rfidHex: must be 1-64 hexadecimal digits, e.g. 1A00D1"),
        ({"shared": "true"}, "shared: Input should be a valid boolean"),
        ({"shared": True}, "shared: is only allowed for keys stored in an automat"),
        ({"selectedStorage": {}}, "selectedStorage: must have automatId"),
        ({"name": []}, "name: Input should be a valid string"),
    ],
)
def test_bad_patches_are_refused_and_change_nothing(
    acme: Tenant, body: dict[str, Any], message: str
) -> None:
    before = new_key(acme, name="Room 101")
    response = acme.api.request("PATCH", "/mechanical/keys/room-101-key", body)
    assert response.status_code == 400
    assert any(m.startswith(message) for m in response.json()["message"])
    assert acme.api.get("/mechanical/keys/room-101-key") == before


def test_delete_takes_an_optional_json_body_and_answers_204(acme: Tenant) -> None:
    new_key(acme, "a")
    new_key(acme, "b")
    response = acme.api.request("DELETE", "/mechanical/keys/a", {"deleteActiveContracts": True})
    assert (response.status_code, response.content) == (204, b"")
    response = acme.api.request("DELETE", "/mechanical/keys/b")
    assert response.status_code == 204
    assert acme.api.request("GET", "/mechanical/keys/a").status_code == 404
    assert acme.api.request("DELETE", "/mechanical/keys/a").status_code == 404
    # A deleted id can be registered again.
    new_key(acme, "a")


def test_a_delete_body_of_the_wrong_type_is_refused(acme: Tenant) -> None:
    new_key(acme)
    response = acme.api.request(
        "DELETE", "/mechanical/keys/room-101-key", {"deleteActiveContracts": "yes"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == ["deleteActiveContracts: Input should be a valid boolean"]
    assert acme.api.get("/mechanical/keys/room-101-key")["id"] == "room-101-key"


def test_delete_hooks_can_refuse_and_see_the_flag(container: Container, acme: Tenant) -> None:
    """The contract code plugs F8 in here: refuse without the flag, delete with it."""
    seen: list[bool] = []

    def hook(_s: Session, key: MechanicalKey, delete_active: bool, _now: datetime) -> None:
        seen.append(delete_active)
        if not delete_active:
            raise InvalidInput("deleteActiveContracts", f"key {key.id} has active contracts")

    new_key(acme)
    container.wiring.key_delete_hooks.append(hook)
    response = acme.api.request("DELETE", "/mechanical/keys/room-101-key", {})
    assert response.status_code == 400
    assert acme.api.get("/mechanical/keys/room-101-key")["id"] == "room-101-key"
    acme.api.delete("/mechanical/keys/room-101-key", {"deleteActiveContracts": True})
    assert seen == [False, True]


def test_target_storage_comes_from_a_resolver_when_one_knows_better(
    container: Container, acme: Tenant
) -> None:
    """The contract code plugs F9 in here: the storage of the key's current or next contract."""

    def resolver(
        _s: Session, keys: Sequence[MechanicalKey], _now: datetime
    ) -> Mapping[str, Storage]:
        return {k.object_id: Storage.manual("Reception") for k in keys if k.id == "b"}

    new_key(acme, "a")
    new_key(acme, "b")
    container.wiring.target_storage_resolvers.append(resolver)
    data = acme.api.get("/mechanical/keys")["data"]
    assert [k["targetStorage"] for k in data] == [
        {"manualStorageInfo": "Shelf 1, Drawer 1"},
        {"manualStorageInfo": "Reception"},
    ]


def test_an_integration_account_may_manage_keys(acme_pms: Tenant) -> None:
    pms = acme_pms
    assert new_key(pms)["organizationUnitId"] == pms.unit_id
    assert pms.api.patch("/mechanical/keys/room-101-key", {"name": "n"})["name"] == "n"
    pms.api.delete("/mechanical/keys/room-101-key")


def test_the_openapi_document_gives_keys_and_contracts_the_vendors_operation_ids(
    http: TestClient,
) -> None:
    paths = http.get("/v2/openapi.json").json()["paths"]
    for path in ("/mechanical/keys", "/mechanical/keycontracts"):
        assert paths[path]["get"]["operationId"] == "list"
        assert paths[path]["post"]["operationId"] == "create"
        assert paths[f"{path}/{{id}}"]["get"]["operationId"] == "get"
        assert paths[f"{path}/{{id}}"]["patch"]["operationId"] == "update"
        assert paths[f"{path}/{{id}}"]["delete"]["operationId"] == "delete"
    assert paths["/mechanical/keys/{id}"]["delete"]["requestBody"]["required"] is True


def test_concurrent_creations_of_one_id_make_one_key_and_conflicts(
    acme: Tenant, container: Container
) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from keyautomat.domain.errors import Conflict
    from keyautomat.service_layer.accounts import load_account

    account = container.db.transaction(lambda s: load_account(s, acme.account_id))
    assert account is not None
    # SQLite runs one transaction at a time, so there threads cannot meet inside one.
    barrier = Barrier(1 if container.settings.database_url.startswith("sqlite") else 4)

    def create(_n: int) -> str:
        def work(session: Session) -> str:
            barrier.wait(timeout=5)
            mechanical_keys.create_key(
                session,
                account.principal,
                key_id="room-101-key",
                name=None,
                organization_unit_id=None,
                rfid_hex=None,
                selected=Storage.manual("Shelf"),
                shared=False,
                away=False,
                now=container.clock.now(),
            )
            return "created"

        try:
            return container.db.transaction(work)
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(create, range(4)))
    assert outcomes == ["conflict"] * 3 + ["created"]
    assert [k["id"] for k in acme.api.get("/mechanical/keys")["data"]] == ["room-101-key"]


def object_id_of(container: Container, key_id: str) -> str:
    found = container.db.transaction(
        lambda s: s.scalar(select(mk.c.object_id).where(mk.c.id == key_id))
    )
    assert isinstance(found, str)
    return found


def test_a_key_handed_over_by_staff_is_away_and_comes_back_to_a_manual_place(
    acme: Tenant, container: Container
) -> None:
    new_key(acme)
    object_id = object_id_of(container, "room-101-key")
    container.db.transaction(lambda s: mechanical_keys.hand_over(s, object_id))
    key = acme.api.get("/mechanical/keys/room-101-key")
    assert (key["storage"], key["status"]) == (None, {"available": False})

    container.db.transaction(lambda s: mechanical_keys.back_to_manual(s, object_id, "Front desk"))
    key = acme.api.get("/mechanical/keys/room-101-key")
    assert key["storage"] == {"manualStorageInfo": "Front desk"}
    assert key["status"] == {"available": True}


def test_handing_over_an_unknown_key_is_not_found(container: Container) -> None:
    with pytest.raises(NotFound, match="Mechanical key"):
        container.db.transaction(lambda s: mechanical_keys.hand_over(s, "f" * 24))
