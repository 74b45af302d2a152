"""Hostile values in every field of bodies the API accepts (tests/fuzz/mutations.py).

Per target: the unmutated body must be accepted (else the harness tests nothing);
then each mutation must get a non-5xx answer in the one error shape, a refusal
must leave what the target touches unchanged, and every list must still answer
200 at the end. Whatever a mutation created is removed again, so the next one
meets the same world.
"""

from __future__ import annotations

import pytest

from tests.fuzz.harness import SEED, Exchange, Findings, Sender, World, budget, lists_answer
from tests.fuzz.mutations import TARGETS, Target, mutations

MUTATIONS = budget("KEYAUTOMAT_FUZZ_MUTATIONS", 60)  # per body; 0: every single mutation
PAIRS = budget("KEYAUTOMAT_FUZZ_PAIRS", 0)


def _snapshot(sender: Sender, paths: tuple[str, ...]) -> dict[str, Exchange]:
    """The answers of the watched resources."""
    return {path: sender.json("GET", f"{path}?limit=100") for path in paths}


def _newly_broken(before: dict[str, Exchange], after: dict[str, Exchange]) -> list[str]:
    """Watched resources that answered 200 before the case and do not any more.

    Once a stored value poisons a page it stays poisoned; only the case that did it
    is reported, not every case after it.
    """
    found = []
    for path, got in after.items():
        if got.status != 200 and before[path].status == 200:
            extra = f" ({got.exceptions[0]})" if got.exceptions else ""
            found.append(f"then GET {path} answered {got.status}{extra}")
    return found


def _undo(sender: Sender, target: Target, world: World, exchange: Exchange) -> None:
    step = target.undo(world, exchange.body) if 200 <= exchange.status < 300 else None
    if step is not None:
        sender.json(*step)


@pytest.mark.timeout(120 + 2 * ((MUTATIONS or 1000) + PAIRS))
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_hostile_value_in_any_field_gets_a_clean_refusal_and_changes_nothing(
    name: str, world: World, sender: Sender, request: pytest.FixtureRequest
) -> None:
    target = TARGETS[name]
    if target.online:
        request.getfixturevalue("online_automat")
    path = target.path(world)
    operation = f"{target.method} {world.route(path)}"
    watched = target.watch(world)
    valid = target.body(world)

    accepted = sender.json(target.method, path, valid)
    assert 200 <= accepted.status < 300, (
        f"{operation} refused the unmutated body, so its mutations would test nothing: "
        f"{accepted.status} {accepted.text[:300]}"
    )
    _undo(sender, target, world, accepted)

    findings = Findings()
    before = _snapshot(sender, watched)
    for mutation in mutations(valid, budget=MUTATIONS, pairs=PAIRS, seed=SEED):
        exchange = sender.json(target.method, path, mutation.body)
        after = _snapshot(sender, watched)
        changed = [
            f"the refusal changed GET {p}"
            for p in watched
            if 400 <= exchange.status < 500 and after[p].body != before[p].body
        ]
        findings.record(operation, mutation.what, exchange, _newly_broken(before, after) + changed)
        if 200 <= exchange.status < 300 or exchange.status >= 500:
            _undo(sender, target, world, exchange)
            after = _snapshot(sender, watched)
        before = after
    broken_lists = lists_answer(sender)
    print(f"\n{operation}: {findings.summary()}")
    if findings.failures or broken_lists:
        pytest.fail("\n".join([findings.report(), *broken_lists]), pytrace=False)
