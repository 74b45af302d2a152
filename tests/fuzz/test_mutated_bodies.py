"""Hostile values in every field of bodies the API accepts (tests/fuzz/mutations.py).

Per target: the unmutated body must be accepted (else the harness tests nothing);
then each mutation must get a non-5xx answer in the one error shape, a refusal
must leave what the target touches unchanged, and every list must still answer
200 at the end. Whatever a mutation created is removed again, so the next one
meets the same world.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fuzz.harness import SEED, Exchange, Findings, Sender, World, budget, lists_answer
from tests.fuzz.mutations import TARGETS, Target, mutations

MUTATIONS = budget("KEYAUTOMAT_FUZZ_MUTATIONS", 60)  # per body; 0: every single mutation
PAIRS = budget("KEYAUTOMAT_FUZZ_PAIRS", 0)


def _snapshot(sender: Sender, paths: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """The watched resources as JSON, and which of them did not answer 200."""
    seen: dict[str, Any] = {}
    broken: list[str] = []
    for path in paths:
        got = sender.json("GET", f"{path}?limit=100")
        seen[path] = got.body
        if got.status != 200:
            extra = f" ({got.exceptions[0]})" if got.exceptions else ""
            broken.append(f"then GET {path} answered {got.status}{extra}")
    return seen, broken


def _undo(sender: Sender, target: Target, world: World, exchange: Exchange) -> None:
    step = target.undo(world, exchange.body) if 200 <= exchange.status < 300 else None
    if step is not None:
        sender.json(*step)


@pytest.mark.timeout(120 + 2 * ((MUTATIONS or 1000) + PAIRS))
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_hostile_value_in_any_field_gets_a_clean_refusal_and_changes_nothing(
    name: str, world: World, sender: Sender
) -> None:
    target = TARGETS[name]
    path = target.path(world)
    operation = f"{target.method} {world.route(path)}"
    watched = target.watch(world)
    valid = target.body(world)

    accepted = sender.json(target.method, path, valid)
    assert 200 <= accepted.status < 300 or (name == "send-pincode" and accepted.status < 500), (
        f"{operation} refused the unmutated body, so its mutations would test nothing: "
        f"{accepted.status} {accepted.text[:300]}"
    )
    _undo(sender, target, world, accepted)

    findings = Findings()
    before, _ = _snapshot(sender, watched)
    for mutation in mutations(valid, budget=MUTATIONS, pairs=PAIRS, seed=SEED):
        exchange = sender.json(target.method, path, mutation.body)
        after, broken = _snapshot(sender, watched)
        changed = [
            f"the refusal changed GET {p}"
            for p in watched
            if 400 <= exchange.status < 500 and after[p] != before[p]
        ]
        findings.record(operation, mutation.what, exchange, broken + changed)
        if 200 <= exchange.status < 300 or exchange.status >= 500:
            _undo(sender, target, world, exchange)
            before, _ = _snapshot(sender, watched)
    broken_lists = lists_answer(sender)
    print(f"\n{operation}: {findings.summary()}")
    if findings.failures or broken_lists:
        pytest.fail("\n".join([findings.report(), *broken_lists]), pytrace=False)
