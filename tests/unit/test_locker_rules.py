"""What a device may report about its lockers (domain/devices.py; docs/device-protocol.md,
"Lockers")."""

from __future__ import annotations

import pytest

from keyautomat.domain.devices import inventory_problem


def test_an_inventory_of_every_locker_from_zero_once_is_exact_in_any_order() -> None:
    assert inventory_problem([3, 0, 2, 1], 4) is None
    assert inventory_problem([0], 1) is None


@pytest.mark.parametrize(
    ("indices", "problem"),
    [
        ([], "lists no locker"),
        ([0, 1, 2], "missing: 3"),
        ([0, 1, 1, 2, 3], "listed twice: 1"),
        ([0, 1, 2, 3, 10], "beyond lockerCount 4: 10"),
        ([1, 2, 3, 4], "beyond lockerCount 4: 4; missing: 0"),
    ],
)
def test_an_inventory_that_is_not_exact_names_what_is_wrong(
    indices: list[int], problem: str
) -> None:
    assert inventory_problem(indices, 4) == problem


def test_a_long_list_of_problems_names_the_first_five_and_counts_the_rest() -> None:
    assert inventory_problem([0], 10) == "missing: 1, 2, 3, 4, 5 and 4 more"
