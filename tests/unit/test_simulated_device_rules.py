"""The device's side of syncs, commands and its event queue, as the simulated automat
follows docs/device-protocol.md §4, §6 and §7 (no server, no broker: what it publishes is
recorded)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from keyautomat.adapters.device_links import InProcessLink
from keyautomat.adapters.device_protocol import (
    Ack,
    Data,
    LockerEvent,
    Message,
    OpenLocker,
    PincodeEntry,
    RemoteCode,
    Sync,
    decode_from_device,
    decode_from_server,
    encode,
    new_message_id,
)
from keyautomat.simulator import SimKey, SimulatedAutomat

NOW = datetime.now(UTC)


def entry(pincode_id: str, code: str = "111111", locker: int = 0) -> PincodeEntry:
    return PincodeEntry(
        id=pincode_id,
        code=code,
        locker_index=locker,
        valid_from=NOW - timedelta(hours=1),
        purpose="fetch",
    )


def full(version: int, *entries: PincodeEntry) -> Sync:
    return Sync(full=True, version=version, pincodes=list(entries))


def delta(
    since: int, version: int, *entries: PincodeEntry, removed: list[str] | None = None
) -> Sync:
    return Sync(
        full=False, since=since, version=version, pincodes=list(entries), removed=removed or []
    )


class Wire:
    """Stands in for the broker connection: records what the device publishes."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def __call__(self, payload: bytes) -> None:
        self.sent.append(decode_from_device(payload))

    def of_type(self, type_: str) -> list[Message]:
        return [m for m in self.sent if m.type == type_]


def a_device() -> tuple[SimulatedAutomat, Wire]:
    device = SimulatedAutomat(
        link=InProcessLink(), hw_id="SIM-RULES", token="t", locker_count=4, autopilot=False
    )
    wire = Wire()
    device._publish = wire
    device.welcomed.set()
    return device, wire


def from_server(type_: str, data: Data, message_id: str | None = None) -> Message:
    return decode_from_server(
        encode(type_, data, hw_id="SIM-RULES", occurred_at=NOW, message_id=message_id)
    )


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_a_full_sync_replaces_the_store_and_keeps_a_spent_code_spent() -> None:
    async def scenario() -> None:
        device, _ = a_device()
        await device._on_message(from_server("sync", full(1, entry("a"), entry("b", "222222"))))
        device.pincodes["a"].spent = True  # its key went; the server has not heard yet
        await device._on_message(from_server("sync", full(2, entry("a"))))
        assert set(device.pincodes) == {"a"}
        assert device.pincodes["a"].spent
        assert device.sync_version == 2

    run(scenario)


def test_an_incremental_sync_no_newer_than_the_store_changes_nothing_and_is_acked() -> None:
    async def scenario() -> None:
        device, wire = a_device()
        await device._on_message(from_server("sync", full(5, entry("a"))))
        late = from_server("sync", delta(3, 4, entry("z")))
        await device._on_message(late)
        assert set(device.pincodes) == {"a"}
        assert device.sync_version == 5
        assert [m.data for m in wire.of_type("ack")][-1] == Ack(ref=late.id)

    run(scenario)


def test_an_incremental_sync_applies_its_codes_and_removals() -> None:
    async def scenario() -> None:
        device, _ = a_device()
        await device._on_message(from_server("sync", full(2, entry("a"), entry("b", "222222"))))
        await device._on_message(from_server("sync", delta(2, 4, entry("c"), removed=["a"])))
        assert set(device.pincodes) == {"b", "c"}
        assert device.sync_version == 4

    run(scenario)


def test_an_incremental_sync_from_a_version_the_store_never_had_leads_to_a_new_hello() -> None:
    async def scenario() -> None:
        device, wire = a_device()
        await device._on_message(from_server("sync", full(2, entry("a"))))
        await device._on_message(from_server("sync", delta(3, 4, entry("c"))))
        assert set(device.pincodes) == {"a"}
        assert device.sync_version == 2
        assert not wire.of_type("ack")[1:]  # the gap is not acknowledged
        assert not device.welcomed.is_set()  # its next tick says hello, naming version 2

    run(scenario)


def test_a_command_delivered_twice_is_answered_twice_and_carried_out_once() -> None:
    async def scenario() -> None:
        device, wire = a_device()
        await device._on_message(from_server("sync", full(1, entry("a", "482910"))))
        command = from_server("remote-code", RemoteCode(code="482910"), new_message_id())
        await device._on_message(command)
        await device._on_message(command)
        acks = [m.data for m in wire.of_type("ack") if isinstance(m.data, Ack)]
        assert [a.ref for a in acks].count(command.id) == 2
        assert device.openings == [0]

    run(scenario)


def test_the_next_event_waits_for_the_ack_of_the_one_before() -> None:
    async def scenario() -> None:
        device, wire = a_device()
        first = device.queue_event("locker-opened", LockerEvent(locker_index=1))
        second = device.queue_event("locker-closed", LockerEvent(locker_index=1))
        await device._flush()
        await device._flush()
        assert [m.id for m in wire.sent] == [first]
        await device._on_message(from_server("ack", Ack(ref=first)))
        assert [m.id for m in wire.sent] == [first, second]

    run(scenario)


def test_a_sync_between_a_hello_and_its_welcome_is_ignored() -> None:
    async def scenario() -> None:
        device, wire = a_device()
        device.welcomed.clear()
        await device._on_message(from_server("sync", full(1, entry("a"))))
        assert device.pincodes == {}
        assert not wire.of_type("ack")

    run(scenario)


def test_a_service_opening_of_a_locker_the_device_lacks_is_refused() -> None:
    async def scenario() -> None:
        device, wire = a_device()
        command = from_server("open-locker", OpenLocker(locker_index=9, reason="service"))
        await device._on_message(command)
        assert wire.of_type("ack")[-1].data == Ack(
            ref=command.id, ok=False, reason="unknown-locker"
        )
        assert device.openings == []

    run(scenario)


def test_a_program_first_code_typed_offline_opens_nothing_and_holds_nothing() -> None:
    async def scenario() -> None:
        device, _ = a_device()
        first = entry("p").model_copy(update={"program_first": True})
        await device._on_message(from_server("sync", full(1, first)))
        device.stock([SimKey("k", "key")])
        device.welcomed.clear()
        assert device.enter_code("111111")
        assert device.openings == []
        assert device.awaiting_open == {}

    run(scenario)
