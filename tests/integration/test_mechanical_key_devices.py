"""Mechanical keys follow what a simulated key30 automat reports (docs/mechanical-keys.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.simulator import SimKey, SimulatedAutomat
from tests.conftest import Tenant, make_tenant
from tests.devices import BIND_SECONDS, FAST_DEVICE_SETTINGS, Simulators, eventually, install

ROOM_101 = SimKey("room-101-key", "Room 101", rfid="1a00d1")
ROOM_102 = SimKey("room-102-key", "Room 102", rfid="1a00d2")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST_DEVICE_SETTINGS)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def register(
    tenant: Tenant, automat_id: str, key: SimKey, *, away: bool = True, **extra: Any
) -> dict[str, Any]:
    body = {
        "id": key.id,
        "name": key.name,
        "rfidHex": key.rfid,
        "selectedStorage": {"automatId": automat_id},
        "away": away,
        **extra,
    }
    created: dict[str, Any] = tenant.api.post("/mechanical/keys", body)
    return created


def start(sims: Simulators, automat: dict[str, Any], *stock: SimKey) -> SimulatedAutomat:
    sim = sims.start(
        hw_id=f"SIM-{automat['id']}",
        product="key30",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
    )
    sims.call(sim.stock, list(stock))
    sims.call(sim.wait_bound, BIND_SECONDS)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    return sim


def storage_of(tenant: Tenant, key_id: str) -> Any:
    return tenant.api.get(f"/mechanical/keys/{key_id}")["storage"]


def test_keys_the_automat_holds_are_available_there_and_removed_keys_are_away(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme, product="key30")
    here = {"automatId": automat["id"]}
    register(acme, automat["id"], ROOM_101)
    register(acme, automat["id"], ROOM_102)
    sim = start(sims, automat, ROOM_101, ROOM_102)
    eventually(lambda: storage_of(acme, "room-101-key") == here)
    eventually(lambda: storage_of(acme, "room-102-key") == here)
    assert acme.api.get("/mechanical/keys/room-101-key")["status"] == {"available": True}

    sims.call(sim.take_key, 0)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    key = acme.api.get("/mechanical/keys/room-101-key")
    assert (key["storage"], key["status"]) == (None, {"available": False})
    assert key["targetStorage"] == here
    assert storage_of(acme, "room-102-key") == here

    sims.call(sim.insert_key, 3, ROOM_101)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    assert storage_of(acme, "room-101-key") == here
    lockers = acme.api.get(f"/automats/{automat['id']}")["lockers"]
    assert lockers[3]["isKeyInside"] is True
    assert lockers[3]["key"] == {"id": "room-101-key", "name": "Room 101"}


def test_a_key_known_to_the_automat_only_by_its_tag_is_matched_by_rfid(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme, product="key30")
    register(acme, automat["id"], SimKey("garage", "Garage door", rfid="BEEF01"))
    sim = start(sims, automat, SimKey("TAG-0001", "unnamed tag", rfid="beef01"))
    eventually(lambda: storage_of(acme, "garage") == {"automatId": automat["id"]})
    locker = acme.api.get(f"/automats/{automat['id']}")["lockers"][0]
    assert locker["key"] == {"id": "garage", "name": "Garage door"}

    sims.call(sim.take_key, 0)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    assert storage_of(acme, "garage") is None


def test_an_inventory_makes_keys_the_automat_does_not_hold_away(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme, product="key30")
    created = register(acme, automat["id"], ROOM_101, away=False)
    assert created["storage"] == {"automatId": automat["id"]}
    start(sims, automat)  # empty lockers
    eventually(lambda: storage_of(acme, "room-101-key") is None)


def test_a_manual_key_put_into_an_automat_is_stored_there(acme: Tenant, sims: Simulators) -> None:
    automat = install(acme, product="key30")
    acme.api.post(
        "/mechanical/keys",
        {"id": "room-101-key", "selectedStorage": {"manualStorageInfo": "Shelf"}, "away": True},
    )
    sim = start(sims, automat)
    sims.call(sim.insert_key, 1, ROOM_101)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    key = acme.api.get("/mechanical/keys/room-101-key")
    assert key["storage"] == {"automatId": automat["id"]}
    assert key["selectedStorage"] == {"manualStorageInfo": "Shelf"}


def test_a_key_registered_after_the_automat_reported_it_is_already_inside(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme, product="key30")
    start(sims, automat, ROOM_101)
    created = register(acme, automat["id"], ROOM_101, away=True)
    assert created["storage"] == {"automatId": automat["id"]}


def test_another_organizations_key_with_the_same_id_is_not_touched(
    acme: Tenant, sims: Simulators, container: Container, http: TestClient
) -> None:
    other = make_tenant(container, http, name="Other Housing")
    other.api.post(
        "/mechanical/keys",
        {"id": "room-101-key", "selectedStorage": {"manualStorageInfo": "Shelf"}, "away": True},
    )
    automat = install(acme, product="key30")
    register(acme, automat["id"], ROOM_101)
    start(sims, automat, ROOM_101)
    eventually(lambda: storage_of(acme, "room-101-key") == {"automatId": automat["id"]})
    assert storage_of(other, "room-101-key") is None


def test_a_key_moved_between_automats_is_where_it_was_last_inserted(
    acme: Tenant, sims: Simulators
) -> None:
    first = install(acme, product="key30", name="First")
    second = install(acme, product="key30", name="Second")
    register(acme, first["id"], ROOM_101)
    sim1 = start(sims, first, ROOM_101)
    eventually(lambda: storage_of(acme, "room-101-key") == {"automatId": first["id"]})
    sim2 = start(sims, second)
    sims.call(sim1.take_key, 0)
    sims.call(sim1.wait_flushed, BIND_SECONDS)
    sims.call(sim2.insert_key, 2, ROOM_101)
    sims.call(sim2.wait_flushed, BIND_SECONDS)
    assert storage_of(acme, "room-101-key") == {"automatId": second["id"]}
    # The first automat's next full report no longer names the key: nothing changes.
    sims.call(lambda: sim1.stock([ROOM_102], start=1))
    sims.call(sim1.wait_flushed, BIND_SECONDS)
    assert storage_of(acme, "room-101-key") == {"automatId": second["id"]}


def test_a_tag_shared_by_two_keys_names_the_one_at_home_in_this_automat(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme, product="key30")
    acme.api.post(
        "/mechanical/keys",
        {
            "id": "shelf-key",
            "rfidHex": "C0FFEE",
            "selectedStorage": {"manualStorageInfo": "Shelf"},
            "away": True,
        },
    )
    register(acme, automat["id"], SimKey("home-key", "Home", rfid="C0FFEE"))
    start(sims, automat, SimKey("TAG", "tag only", rfid="c0ffee"))
    eventually(lambda: storage_of(acme, "home-key") == {"automatId": automat["id"]})
    assert storage_of(acme, "shelf-key") is None


def test_renaming_a_key_renames_it_in_its_locker(acme: Tenant, sims: Simulators) -> None:
    automat = install(acme, product="key30")
    register(acme, automat["id"], ROOM_101)
    start(sims, automat, ROOM_101)
    eventually(lambda: storage_of(acme, "room-101-key") == {"automatId": automat["id"]})
    acme.api.patch("/mechanical/keys/room-101-key", {"name": "Room 101 (new lock)"})
    locker = acme.api.get(f"/automats/{automat['id']}")["lockers"][0]
    assert locker["key"] == {"id": "room-101-key", "name": "Room 101 (new lock)"}


def test_a_key_registered_by_the_tag_an_automat_reported_is_inside_at_once(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme, product="key30")
    start(sims, automat, SimKey("TAG-7", "tag only", rfid="beef07"))
    created = register(acme, automat["id"], SimKey("garage-7", "Garage", rfid="BEEF07"))
    assert created["storage"] == {"automatId": automat["id"]}
    lockers = acme.api.get(f"/automats/{automat['id']}")["lockers"]
    assert lockers[0]["key"]["id"] == "garage-7"


def test_a_tag_given_to_a_key_that_is_away_places_it_where_an_automat_reported_the_tag(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme, product="key30")
    register(acme, automat["id"], SimKey("garage-8", "Garage", rfid=None))
    start(sims, automat, SimKey("TAG-8", "tag only", rfid="beef08"))
    assert storage_of(acme, "garage-8") is None
    acme.api.patch("/mechanical/keys/garage-8", {"rfidHex": "beef08"})
    assert storage_of(acme, "garage-8") == {"automatId": automat["id"]}


def test_a_tag_read_of_a_key_taken_out_no_longer_places_a_key_registered_later(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme, product="key30")
    sim = start(sims, automat, SimKey("TAG-9", "tag only", rfid="beef09"))
    sims.call(sim.take_key, 0)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    created = register(acme, automat["id"], SimKey("garage-9", "Garage", rfid="BEEF09"))
    assert created["storage"] is None
