"""The built-in iLOQ S5 emulator behind the iLOQ port, on both engines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from keyautomat.adapters.iloq.emulator import CanOrder, EmulatorIloq
from keyautomat.bootstrap import Container
from keyautomat.service_layer.clock import ManualClock
from keyautomat.service_layer.iloq import IloqPermanentError, ensure_key
from tests.iloq_helpers import SeededSystem, make_unit, on_system, seed_system

START = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
END = datetime(2030, 6, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 5, 31, 8, 0, tzinfo=UTC))


@pytest.fixture
def seeded(container: Container) -> SeededSystem:
    return seed_system(container, make_unit(container))


@pytest.fixture
def port(container: Container, seeded: SeededSystem, clock: ManualClock) -> EmulatorIloq:
    return EmulatorIloq(container.db, seeded.unit_id, clock)


def test_access_rights_come_sorted_by_name_with_their_real_estate_path(
    port: EmulatorIloq, seeded: SeededSystem
) -> None:
    rights = asyncio.run(port.list_access_rights())
    assert [r.name for r in rights] == ["Front door", "Office", "Sauna", "Storage room"]
    by_id = {r.id: r for r in rights}
    assert by_id[seeded.sauna].real_estate_path == "Mannerheimintie 1 / Stair A"
    assert by_id[seeded.front_door].real_estate_path == "Mannerheimintie 1"
    assert by_id[seeded.office].real_estate_path is None
    assert not by_id[seeded.office].api_enabled


def test_access_rights_can_be_searched_and_limited_to_default_ones(port: EmulatorIloq) -> None:
    assert [r.name for r in asyncio.run(port.list_access_rights(search="OR"))] == [
        "Front door",
        "Storage room",
    ]
    defaults = asyncio.run(port.list_access_rights(default_only=True))
    assert [r.name for r in defaults] == ["Front door", "Office", "Sauna"]


def test_programming_writes_the_rights_and_time_limits_and_logs_the_moment(
    port: EmulatorIloq, seeded: SeededSystem, clock: ManualClock
) -> None:
    clock.set(START + timedelta(minutes=3))
    key = asyncio.run(
        port.program_key(
            seeded.key_id,
            [seeded.sauna, seeded.front_door],
            valid_from=START,
            valid_until=END,
            person_id="f5ac6bce-eac9-4508-a5cf-a0114dc06477",
        )
    )
    assert set(key.access_right_ids) == {seeded.sauna, seeded.front_door}
    assert (key.valid_from, key.valid_until) == (START, END)
    assert key.person_id == "f5ac6bce-eac9-4508-a5cf-a0114dc06477"
    assert key.programmed_at == START + timedelta(minutes=3)
    [entry] = asyncio.run(port.programming_log(seeded.key_id))
    assert entry.action == "program"
    assert entry.at == START + timedelta(minutes=3)
    assert set(entry.access_right_ids) == {seeded.sauna, seeded.front_door}


def test_a_key_programmed_without_a_person_is_registered_to_the_default_person(
    container: Container, port: EmulatorIloq, seeded: SeededSystem
) -> None:
    key = asyncio.run(port.program_key(seeded.key_id, [seeded.sauna]))
    default = on_system(container, seeded.unit_id, lambda s: s.default_person_id())
    assert key.person_id == default


def test_a_right_that_is_not_api_enabled_is_refused_and_nothing_is_written(
    port: EmulatorIloq, seeded: SeededSystem
) -> None:
    with pytest.raises(IloqPermanentError, match="not enabled for the public API"):
        asyncio.run(port.program_key(seeded.key_id, [seeded.sauna, seeded.office]))
    key = asyncio.run(port.get_key(seeded.key_id))
    assert key is not None
    assert key.is_blank
    assert asyncio.run(port.programming_log()) == []


def test_rights_of_another_locking_system_cannot_be_programmed(
    container: Container, port: EmulatorIloq, seeded: SeededSystem
) -> None:
    other = seed_system(container, make_unit(container, "Other"), prefix="Other ")
    with pytest.raises(IloqPermanentError, match="does not exist"):
        asyncio.run(port.program_key(seeded.key_id, [other.sauna]))


def test_an_unknown_key_is_a_permanent_failure(port: EmulatorIloq, seeded: SeededSystem) -> None:
    with pytest.raises(IloqPermanentError, match="does not exist"):
        asyncio.run(port.program_key("0b0e0000-0000-4000-8000-000000000000", [seeded.sauna]))


def test_wiping_leaves_the_key_blank_and_logs_it(
    port: EmulatorIloq, seeded: SeededSystem, clock: ManualClock
) -> None:
    asyncio.run(port.program_key(seeded.key_id, [seeded.sauna], valid_from=START, valid_until=END))
    clock.advance(timedelta(days=2))
    key = asyncio.run(port.wipe_key(seeded.key_id))
    assert key.is_blank
    assert (key.valid_from, key.valid_until) == (None, None)
    assert [e.action for e in asyncio.run(port.programming_log(seeded.key_id))] == [
        "program",
        "wipe",
    ]


def test_a_blocklisted_key_can_no_longer_be_programmed(
    container: Container, port: EmulatorIloq, seeded: SeededSystem
) -> None:
    asyncio.run(port.program_key(seeded.key_id, [seeded.sauna]))
    asyncio.run(port.blocklist_key(seeded.key_id))
    asyncio.run(port.blocklist_key(seeded.key_id))  # idempotent
    key = asyncio.run(port.get_key(seeded.key_id))
    assert key is not None
    assert key.blocked
    with pytest.raises(IloqPermanentError, match="blocklisted"):
        asyncio.run(port.program_key(seeded.key_id, [seeded.sauna]))
    verdict = on_system(container, seeded.unit_id, lambda s: s.can_order(seeded.key_id))
    assert verdict is CanOrder.BLOCKLISTED
    assert [e.action for e in asyncio.run(port.programming_log())] == ["program", "blocklist"]


def test_a_blank_key_cannot_be_blocklisted(port: EmulatorIloq, seeded: SeededSystem) -> None:
    with pytest.raises(IloqPermanentError, match="no access rights"):
        asyncio.run(port.blocklist_key(seeded.key_id))


def test_planned_changes_are_written_only_when_the_key_is_ordered(
    container: Container, seeded: SeededSystem, clock: ManualClock
) -> None:
    def plan(system: object) -> None:
        system.plan(  # type: ignore[attr-defined]
            seeded.key_id, [seeded.sauna], valid_from=None, valid_until=None
        )

    on_system(container, seeded.unit_id, plan)
    key = on_system(container, seeded.unit_id, lambda s: s.key(seeded.key_id))
    assert key.is_blank
    no_person = on_system(container, seeded.unit_id, lambda s: s.can_order(seeded.key_id))
    assert no_person is CanOrder.NO_PERSON
    on_system(container, seeded.unit_id, lambda s: s.assign_person(seeded.key_id, None))
    assert on_system(container, seeded.unit_id, lambda s: s.can_order(seeded.key_id)) is CanOrder.OK
    key = on_system(container, seeded.unit_id, lambda s: s.order(seeded.key_id, clock.now()))
    assert key.access_right_ids == (seeded.sauna,)
    verdict = on_system(container, seeded.unit_id, lambda s: s.can_order(seeded.key_id))
    assert verdict is CanOrder.WRONG_STATE


def test_ensure_key_enrols_a_new_key_once(port: EmulatorIloq) -> None:
    key_id = "0b0e0000-0000-4000-8000-000000000001"
    created = asyncio.run(ensure_key(port, key_id, "0B0E000"))
    again = asyncio.run(ensure_key(port, key_id, "ignored"))
    assert created == again
    assert created.name == "0B0E000"
    assert created.is_blank
    with pytest.raises(IloqPermanentError, match="already exists"):
        asyncio.run(port.create_key(key_id=key_id, name="dup"))
