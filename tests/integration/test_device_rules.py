"""Rules that keep a device's mistakes from changing what the server knows (issue 19, item 1):
inventories must list exactly the lockers 0 … lockerCount-1, events about lockers the automat
does not have are refused, lockers that contracts use are never taken away by a report, and
device times too far ahead are flagged (docs/device-protocol.md, "Lockers" and "Clock")."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from keyautomat.adapters.device_protocol import (
    AlarmEvent,
    CodeEntered,
    Hello,
    KeyEvent,
    KeyProgrammed,
    LockerEvent,
    Message,
    RejectReason,
    new_message_id,
)
from keyautomat.adapters.orm_devices import automat_events, device_inbox
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.contracts.store import SqlContractStore
from keyautomat.service_layer import devices
from keyautomat.simulator import SimKey, SimulatedAutomat, blank_iloq_keys
from tests.conftest import Tenant
from tests.contract_helpers import period
from tests.devices import (
    BIND_SECONDS,
    FAST_DEVICE_SETTINGS,
    Outgoing,
    Simulators,
    admin_client,
    answer_to,
    as_device,
    bound_key30,
    eventually,
    exchange,
    id_of,
    install,
    inventory_of,
)

ROOM = SimKey("room-101-key", "Room 101", rfid="1a00d1")
GARAGE = SimKey("garage-key", "Garage", rfid="1a00d2")
CONTACT = {"name": "John Doe", "email": "john.doe@example.com"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST_DEVICE_SETTINGS)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


# --- helpers --------------------------------------------------------------------------------


def _bound(
    acme: Tenant, sims: Simulators, *, keys: Sequence[SimKey] = (), lockers: int = 4
) -> tuple[str, SimulatedAutomat]:
    """A bound key20 with ``lockers`` lockers, ``keys`` in the first ones, all reported."""
    automat = install(acme)
    sim = sims.start(
        hw_id=f"SIM-{automat['id']}",
        locker_count=lockers,
        installation_pincode=automat["installationPincode"],
    )
    sims.call(sim.stock, list(keys))
    sims.call(sim.wait_bound, BIND_SECONDS)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    return automat["id"], sim


def _send(container: Container, sims: Simulators, hw_id: str, *messages: Outgoing) -> list[Message]:
    """Publish ``messages`` on the device's topic; what the server answered to them."""
    link = container.device_link
    assert link is not None
    answers: list[Message] = sims.call(
        functools.partial(
            exchange,
            link,
            container.settings.mqtt_topic_prefix,
            hw_id,
            messages,
            answers=len(messages),
            timeout=5.0,
        )
    )
    return answers


def _lockers(acme: Tenant, automat_id: str) -> list[dict[str, Any]]:
    lockers: list[dict[str, Any]] = acme.api.get(f"/automats/{automat_id}")["lockers"]
    return lockers


def _in_inbox(container: Container, automat_id: str, payload: bytes) -> bool:
    message_id = id_of(payload)
    return (
        container.db.transaction(
            lambda s: s.scalar(
                select(device_inbox.c.id).where(
                    device_inbox.c.automat_id == automat_id,
                    device_inbox.c.message_id == message_id,
                )
            )
        )
        is not None
    )


def _alarms(acme: Tenant, http: TestClient, automat_id: str, alarm_type: str) -> list[Any]:
    alarms = admin_client(acme, http).get(f"/admin/automats/{automat_id}/alarms")["data"]
    return [a for a in alarms if a["alarmType"] == alarm_type]


def _stored_events(container: Container, automat_id: str, message_id: str) -> list[Any]:
    return container.db.transaction(
        lambda s: list(
            s.execute(
                select(automat_events).where(
                    automat_events.c.automat_id == automat_id,
                    automat_events.c.source_message_id == message_id,
                )
            ).all()
        )
    )


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _key30_with(
    acme: Tenant, sims: Simulators, keys: Sequence[SimKey]
) -> tuple[str, SimulatedAutomat]:
    """A bound key30 with the mechanical ``keys`` registered and stocked in lockers 0, 1, ..."""
    automat, sim = bound_key30(acme, sims, keys)
    return automat["id"], sim


def _mechanical_contract(
    acme: Tenant, sims: Simulators, sim: SimulatedAutomat, key: SimKey
) -> dict[str, Any]:
    start, end = period()
    created: dict[str, Any] = acme.api.post(
        "/mechanical/keycontracts",
        {"start": start, "end": end, "contact": CONTACT, "keys": [{"id": key.id}]},
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: any(p.code == code for p in sims.call(lambda: list(sim.pincodes.values()))))
    return created


def _add_pincode(
    container: Container, automat_id: str, locker: int, *, valid_until: datetime
) -> str:
    pincode_id: str = container.db.transaction(
        lambda s: devices.add_pincode(
            s,
            automat_id,
            code=str(700000 + locker),
            locker_index=locker,
            valid_from=valid_until - timedelta(hours=2),
            valid_until=valid_until,
            purpose="default",
        )
    )
    return pincode_id


# --- inventories ----------------------------------------------------------------------------

BAD_INVENTORIES = {
    "empty": [],
    "one-missing": [0, 1, 2],
    "one-twice": [0, 1, 2, 3, 3],
    "one-beyond-the-count": [0, 1, 2, 3, 4],
    "counted-from-one": [1, 2, 3, 4],
}


@pytest.mark.parametrize("indices", BAD_INVENTORIES.values(), ids=BAD_INVENTORIES.keys())
def test_an_inventory_not_exactly_lockers_0_to_count_minus_1_is_refused_unapplied_with_an_alarm(
    acme: Tenant, http: TestClient, container: Container, sims: Simulators, indices: list[int]
) -> None:
    automat_id, sim = _bound(acme, sims, keys=blank_iloq_keys(2))
    before = _lockers(acme, automat_id)
    assert [locker["isKeyInside"] for locker in before] == [True, True, False, False]

    bad = as_device(sim, "locker-inventory", inventory_of(indices))
    answers = _send(container, sims, sim.hw_id, bad)

    assert answer_to(answers, bad) == ("rejected", RejectReason.BAD_INVENTORY.value)
    assert _lockers(acme, automat_id) == before
    assert not _in_inbox(container, automat_id, bad)
    [alarm] = _alarms(acme, http, automat_id, devices.BAD_INVENTORY_ALARM)
    assert alarm["state"] == "activated"


def test_a_refused_inventory_resent_keeps_one_alarm_and_a_corrected_one_is_applied_and_ends_it(
    acme: Tenant, http: TestClient, container: Container, sims: Simulators
) -> None:
    keys = blank_iloq_keys(2)
    automat_id, sim = _bound(acme, sims, keys=keys)
    bad = as_device(sim, "locker-inventory", inventory_of([1, 2, 3, 4]))
    answers = _send(container, sims, sim.hw_id, bad, bad)
    refusals = [m for m in answers if getattr(m.data, "ref", None) == id_of(bad)]
    assert [m.type for m in refusals] == ["rejected", "rejected"]
    assert len(_alarms(acme, http, automat_id, devices.BAD_INVENTORY_ALARM)) == 1

    # The firmware fixed: the same state counted from 0, under a new id. Its key moved.
    fixed = as_device(sim, "locker-inventory", inventory_of(range(4), {0: keys[1]}))
    assert answer_to(_send(container, sims, sim.hw_id, fixed), fixed) == ("ack", None)

    lockers = _lockers(acme, automat_id)
    assert [locker["isKeyInside"] for locker in lockers] == [True, False, False, False]
    assert lockers[0]["key"]["id"] == keys[1].id
    [alarm] = _alarms(acme, http, automat_id, devices.BAD_INVENTORY_ALARM)
    assert alarm["state"] == "deactivated"
    assert _parse(alarm["end"]) >= _parse(alarm["start"])


def test_a_key_missing_from_a_locker_a_contract_uses_leaves_it_assigned_and_the_contract_working(
    acme: Tenant, container: Container, sims: Simulators
) -> None:
    automat_id, sim = _key30_with(acme, sims, (ROOM, GARAGE))
    contract = _mechanical_contract(acme, sims, sim, ROOM)

    def both_keys_vanish() -> None:  # taken without a code, or a sensor fault
        for locker in sim.lockers:
            locker.key = None

    sims.call(both_keys_vanish)
    sims.call(sim.stock, [])  # reports the inventory
    sims.call(sim.wait_flushed, BIND_SECONDS)

    lockers = _lockers(acme, automat_id)
    assert [locker["lockerIndex"] for locker in lockers] == ["0", "1", "2", "3"]
    # The contract's locker: the key is not inside, a fact; but it stays the key's locker.
    assert lockers[0]["isKeyInside"] is False
    assert lockers[0]["key"]["id"] == ROOM.id
    # A locker nothing holds shows what was reported.
    assert lockers[1] == {"lockerIndex": "1", "isKeyInside": False, "key": None}

    sims.call(sim.stock, [ROOM])  # the key is back
    sims.call(sim.wait_flushed, BIND_SECONDS)
    code = contract["keys"][0]["storageInfo"]["pincode"]
    assert sims.call(sim.enter_code, code)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(
        lambda: (
            acme.api.get(f"/mechanical/keycontracts/{contract['id']}")["keys"][0]["status"]
            == "key-fetched"
        )
    )


def test_a_locker_in_use_survives_a_smaller_locker_count_while_the_others_beyond_it_go(
    acme: Tenant, container: Container, sims: Simulators
) -> None:
    automat_id, sim = _bound(acme, sims)
    _add_pincode(container, automat_id, 3, valid_until=datetime.now(UTC) + timedelta(hours=1))
    eventually(lambda: len(sim.pincodes) == 1)
    token = sim.token
    sims.call(sim.go_offline)

    # Its firmware comes back counting two lockers.
    _send(container, sims, sim.hw_id, ("hello", Hello(product="key20", locker_count=2), token))
    inventory = as_device(sim, "locker-inventory", inventory_of([0, 1]))
    assert answer_to(_send(container, sims, sim.hw_id, inventory), inventory) == ("ack", None)

    assert [locker["lockerIndex"] for locker in _lockers(acme, automat_id)] == ["0", "1", "3"]
    # The device does not have it any more: events about it are refused.
    opened = as_device(sim, "locker-opened", LockerEvent(locker_index=3))
    answer = answer_to(_send(container, sims, sim.hw_id, opened), opened)
    assert answer == ("rejected", RejectReason.UNKNOWN_LOCKER.value)


def test_the_lockers_in_use_are_those_of_live_pincodes_and_of_contract_reservations(
    acme: Tenant, container: Container, sims: Simulators
) -> None:
    automat_id, sim = _key30_with(acme, sims, (ROOM, GARAGE))
    contract = _mechanical_contract(acme, sims, sim, ROOM)

    def in_use() -> set[int]:
        now = datetime.now(UTC)
        return container.db.transaction(lambda s: devices.lockers_in_use(s, automat_id, now))

    assert in_use() == {0}
    spare = _add_pincode(
        container, automat_id, 2, valid_until=datetime.now(UTC) + timedelta(hours=1)
    )
    _add_pincode(container, automat_id, 3, valid_until=datetime.now(UTC) - timedelta(minutes=1))
    assert in_use() == {0, 2}  # an expired code holds nothing
    container.db.transaction(lambda s: devices.remove_pincode(s, automat_id, spare))
    assert in_use() == {0}

    # Without its code, the contract's reservation still holds the locker ...
    now = datetime.now(UTC)
    held = container.db.transaction(lambda s: SqlContractStore(s).lockers_in_use(automat_id, now))
    assert held == {0}
    # ... until the contract is gone.
    acme.api.delete(f"/mechanical/keycontracts/{contract['id']}")
    assert in_use() == set()


# --- lockers the automat does not have -----------------------------------------------------

EVENTS_ABOUT_A_LOCKER: dict[str, Any] = {
    "locker-opened": lambda i: LockerEvent(locker_index=i),
    "locker-closed": lambda i: LockerEvent(locker_index=i),
    "key-removed": lambda i: KeyEvent(locker_index=i),
    "key-inserted": lambda i: KeyEvent(locker_index=i, key_id="stray-key"),
    "code-entered": lambda i: CodeEntered(code="1234", code_type="right-pincode", locker_index=i),
    "key-programmed": lambda i: KeyProgrammed(ref=new_message_id(), locker_index=i, ok=True),
}


@pytest.mark.parametrize("type_", EVENTS_ABOUT_A_LOCKER)
def test_an_event_naming_a_locker_the_automat_does_not_have_is_refused_and_changes_nothing(
    acme: Tenant, http: TestClient, container: Container, sims: Simulators, type_: str
) -> None:
    automat_id, sim = _bound(acme, sims, keys=blank_iloq_keys(1))
    before = _lockers(acme, automat_id)
    about = EVENTS_ABOUT_A_LOCKER[type_]

    unknown = as_device(sim, type_, about(4))  # lockers 0-3
    answer = answer_to(_send(container, sims, sim.hw_id, unknown), unknown)

    assert answer == ("rejected", RejectReason.UNKNOWN_LOCKER.value)
    assert _lockers(acme, automat_id) == before
    assert not _in_inbox(container, automat_id, unknown)
    assert _stored_events(container, automat_id, id_of(unknown)) == []
    assert _alarms(acme, http, automat_id, devices.BAD_INVENTORY_ALARM) == []
    # The last locker is one it has.
    known = as_device(sim, type_, about(3))
    assert answer_to(_send(container, sims, sim.hw_id, known), known) == ("ack", None)


# --- the device's clock ---------------------------------------------------------------------


def test_an_event_an_hour_ahead_is_stored_as_reported_and_flagged_and_its_alarm_starts_at_receipt(
    acme: Tenant, http: TestClient, container: Container, sims: Simulators
) -> None:
    automat_id, sim = _bound(acme, sims)
    ahead = datetime.now(UTC) + timedelta(hours=1)
    raised = as_device(sim, "alarm-raised", AlarmEvent(alarm_type="DEVICE_MOVED"), at=ahead)
    assert answer_to(_send(container, sims, sim.hw_id, raised), raised) == ("ack", None)

    [row] = _stored_events(container, automat_id, id_of(raised))
    assert abs(row.occurred_at - ahead) < timedelta(milliseconds=1)  # as reported
    assert row.clock_suspect is True
    assert row.recorded_at < ahead - timedelta(minutes=55)  # the receive time, beside it
    [alarm] = _alarms(acme, http, automat_id, "DEVICE_MOVED")
    assert abs(_parse(alarm["start"]) - row.recorded_at) < timedelta(milliseconds=1)

    # The device's clock is right again when the alarm clears.
    cleared = as_device(sim, "alarm-cleared", AlarmEvent(alarm_type="DEVICE_MOVED"))
    assert answer_to(_send(container, sims, sim.hw_id, cleared), cleared) == ("ack", None)
    [alarm] = _alarms(acme, http, automat_id, "DEVICE_MOVED")
    assert alarm["state"] == "deactivated"
    assert _parse(alarm["end"]) >= _parse(alarm["start"])
    [row] = _stored_events(container, automat_id, id_of(cleared))
    assert row.clock_suspect is False


def test_an_event_less_than_the_skew_ahead_keeps_its_device_time_and_is_not_flagged(
    acme: Tenant, container: Container, sims: Simulators
) -> None:
    automat_id, sim = _bound(acme, sims)
    soon = datetime.now(UTC) + timedelta(minutes=4)  # the default skew is five minutes
    entered = as_device(
        sim, "code-entered", CodeEntered(code="1234", code_type="right-pincode"), at=soon
    )
    assert answer_to(_send(container, sims, sim.hw_id, entered), entered) == ("ack", None)
    [row] = _stored_events(container, automat_id, id_of(entered))
    assert abs(row.occurred_at - soon) < timedelta(milliseconds=1)
    assert row.clock_suspect is False


def test_an_alarm_cleared_at_a_device_time_before_its_start_does_not_end_before_it_started(
    acme: Tenant, http: TestClient, container: Container, sims: Simulators
) -> None:
    automat_id, sim = _bound(acme, sims)
    soon = datetime.now(UTC) + timedelta(minutes=4)  # ahead, but within the skew
    raised = as_device(sim, "alarm-raised", AlarmEvent(alarm_type="DEVICE_LOW_POWER"), at=soon)
    # The device's clock is set back (NTP) before the alarm clears.
    cleared = as_device(sim, "alarm-cleared", AlarmEvent(alarm_type="DEVICE_LOW_POWER"))
    answers = _send(container, sims, sim.hw_id, raised, cleared)
    assert answer_to(answers, raised) == answer_to(answers, cleared) == ("ack", None)

    [alarm] = _alarms(acme, http, automat_id, "DEVICE_LOW_POWER")
    assert abs(_parse(alarm["start"]) - soon) < timedelta(milliseconds=1)
    assert _parse(alarm["end"]) >= _parse(alarm["start"])
    [row] = _stored_events(container, automat_id, id_of(cleared))
    assert row.clock_suspect is True
