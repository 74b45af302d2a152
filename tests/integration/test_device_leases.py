"""Device leases in the database: one gateway holds a device until it lets go or its lease
lapses (service_layer/device_leases.py), and routed commands are claimed once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from keyautomat.bootstrap import Container
from keyautomat.service_layer import device_commands, device_leases
from keyautomat.service_layer.device_commands import Command, CommandKind

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LENGTH = timedelta(seconds=15)


def claim(container: Container, hw_id: str, gateway: str, at: datetime) -> str:
    lease = container.db.transaction(lambda s: device_leases.claim(s, hw_id, gateway, at, LENGTH))
    assert lease is not None
    return lease.gateway_id


def test_a_free_device_goes_to_the_first_gateway_and_stays_with_it_while_its_lease_runs(
    container: Container,
) -> None:
    assert claim(container, "HW-1", "gw-a", NOW) == "gw-a"
    assert claim(container, "HW-1", "gw-b", NOW + timedelta(seconds=14)) == "gw-a"
    assert claim(container, "HW-1", "gw-a", NOW + timedelta(seconds=14)) == "gw-a"


def test_a_lapsed_lease_goes_to_the_next_gateway_that_asks(container: Container) -> None:
    claim(container, "HW-1", "gw-a", NOW)
    assert claim(container, "HW-1", "gw-b", NOW + LENGTH) == "gw-b"
    assert claim(container, "HW-1", "gw-a", NOW + LENGTH) == "gw-b"


def test_renewing_extends_only_the_leases_the_gateway_still_holds(container: Container) -> None:
    claim(container, "HW-1", "gw-a", NOW)
    claim(container, "HW-2", "gw-a", NOW)
    claim(container, "HW-3", "gw-b", NOW)
    later = NOW + LENGTH
    claim(container, "HW-2", "gw-b", later)  # gw-a's lease on HW-2 lapsed and was taken
    held = container.db.transaction(
        lambda s: device_leases.renew(s, "gw-a", later, LENGTH, ["HW-1", "HW-2"])
    )
    assert held == {"HW-1"}
    assert claim(container, "HW-1", "gw-b", later + timedelta(seconds=14)) == "gw-a"


def test_a_released_device_goes_at_once_to_another_gateway(container: Container) -> None:
    claim(container, "HW-1", "gw-a", NOW)
    assert container.db.transaction(lambda s: device_leases.release(s, "gw-a")) == 1
    assert claim(container, "HW-1", "gw-b", NOW) == "gw-b"


def test_pruning_deletes_only_leases_that_lapsed_before_the_given_time(
    container: Container,
) -> None:
    claim(container, "HW-OLD", "gw-a", NOW)  # lapses at NOW + 15 s
    claim(container, "HW-NEW", "gw-a", NOW + LENGTH)  # lapses at NOW + 30 s
    pruned = container.db.transaction(lambda s: device_leases.prune(s, NOW + 2 * LENGTH))
    assert pruned == 1
    assert claim(container, "HW-NEW", "gw-b", NOW + LENGTH) == "gw-a"


def command(kind: CommandKind = CommandKind.SEND) -> Command:
    return Command("c" * 32, "000001", "HW-1", kind, "sealed", False)


def issue(container: Container, expires_at: datetime) -> None:
    container.db.transaction(lambda s: device_commands.issue(s, command(), expires_at))


def test_a_routed_command_is_claimed_by_one_gateway_only_and_not_after_its_deadline(
    container: Container,
) -> None:
    issue(container, NOW + timedelta(seconds=3))
    late = container.db.transaction(
        lambda s: device_commands.claim(s, "c" * 32, "gw-a", NOW + timedelta(seconds=3))
    )
    assert late is None
    first = container.db.transaction(lambda s: device_commands.claim(s, "c" * 32, "gw-a", NOW))
    second = container.db.transaction(lambda s: device_commands.claim(s, "c" * 32, "gw-b", NOW))
    assert first == command()
    assert second is None


def answer_of(container: Container, at: datetime) -> str | None:
    return container.db.transaction(lambda s: device_commands.answer_of(s, "c" * 32, at))


def test_an_answer_is_read_back_and_the_command_then_forgotten(container: Container) -> None:
    issue(container, NOW + timedelta(seconds=3))
    assert answer_of(container, NOW) is None
    container.db.transaction(lambda s: device_commands.answer(s, "c" * 32, "SENT"))
    assert answer_of(container, NOW) == "SENT"
    container.db.transaction(lambda s: device_commands.forget(s, "c" * 32))
    assert container.db.transaction(lambda s: device_commands.waiting(s, NOW)) == []


def test_a_command_nobody_claimed_by_its_deadline_is_withdrawn_and_no_gateway_runs_it(
    container: Container,
) -> None:
    issue(container, NOW + timedelta(seconds=3))
    deadline = NOW + timedelta(seconds=3)
    assert answer_of(container, deadline) == device_commands.UNANSWERED
    claimed = container.db.transaction(lambda s: device_commands.claim(s, "c" * 32, "gw-a", NOW))
    assert claimed is None


def test_a_claimed_command_is_waited_for_past_its_claim_deadline(container: Container) -> None:
    issue(container, NOW + timedelta(seconds=3))
    container.db.transaction(lambda s: device_commands.claim(s, "c" * 32, "gw-a", NOW))
    assert answer_of(container, NOW + timedelta(seconds=10)) is None


def test_renewing_leaves_out_the_leases_not_named_and_releasing_some_keeps_the_rest(
    container: Container,
) -> None:
    claim(container, "HW-1", "gw-a", NOW)
    claim(container, "HW-2", "gw-a", NOW)
    released = container.db.transaction(lambda s: device_leases.release(s, "gw-a", ["HW-2"]))
    assert released == 1
    held = container.db.transaction(
        lambda s: device_leases.renew(s, "gw-a", NOW, LENGTH, ["HW-1", "HW-2"])
    )
    assert held == {"HW-1"}
    assert claim(container, "HW-2", "gw-b", NOW) == "gw-b"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_starting_gateway_forgets_the_leases_of_a_process_that_died(
    container: Container,
) -> None:
    """One process runs on SQLite: after a kill -9, the restarted one handles its devices
    at once instead of waiting for the dead process's leases to lapse."""
    claim(container, "HW-1", "host:4242:deadbeef", datetime.now(UTC))

    async def scenario() -> bool:
        gateway = container.devices
        await gateway.start(wait=1.0)
        try:
            return await gateway.holds("HW-1")
        finally:
            await gateway.stop()

    assert asyncio.run(scenario())
