"""The mutator itself: it reaches every field, changes one thing, and repeats itself."""

from __future__ import annotations

from tests.fuzz.mutations import MUTANTS, field_paths, mutations, replaced

BODY = {"input": {"ids": ["a", "b"], "n": 1}, "name": "x"}


def test_every_field_and_list_item_is_a_mutation_site() -> None:
    assert list(field_paths(BODY)) == [
        (),
        ("input",),
        ("input", "ids"),
        ("input", "ids", 0),
        ("input", "ids", 1),
        ("input", "n"),
        ("name",),
    ]


def test_a_mutation_replaces_one_value_and_leaves_the_original_alone() -> None:
    changed = replaced(BODY, ("input", "ids", 1), "x\ud800")
    assert changed == {"input": {"ids": ["a", "x\ud800"], "n": 1}, "name": "x"}
    assert BODY["input"] == {"ids": ["a", "b"], "n": 1}


def test_the_same_seed_gives_the_same_cases_and_zero_gives_all_of_them() -> None:
    first = [m.what for m in mutations(BODY, budget=10, pairs=5, seed=3)]
    assert first == [m.what for m in mutations(BODY, budget=10, pairs=5, seed=3)]
    every = mutations(BODY, budget=0, pairs=0, seed=3)
    assert len(every) >= len(MUTANTS) * 7
    assert "input.ids[1] = lone surrogate" in {m.what for m in every}
    assert "name = removed" in {m.what for m in every}
