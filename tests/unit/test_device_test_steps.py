"""Choosing the conformance kit's steps (``keyautomat device-test --steps``)."""

from __future__ import annotations

import pytest

from keyautomat.devicetest.runner import select_steps
from keyautomat.devicetest.steps import STEPS
from keyautomat.entrypoints.cli import main


def test_a_step_named_alone_brings_the_steps_it_needs_in_the_kits_order() -> None:
    chosen = [step.name for step in select_steps(["codes-that-must-not-open"])]
    assert chosen == [
        "binding",
        "locker-inventory",
        "sync",
        "fetch-at-keypad",
        "return-at-keypad",
        "codes-that-must-not-open",
    ]


def test_no_steps_named_means_every_step() -> None:
    assert select_steps(None) == list(STEPS)


def test_an_unknown_step_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no such step: offline"):
        select_steps(["offline"])


def test_every_step_needs_only_steps_that_run_before_it() -> None:
    seen: set[str] = set()
    for step in STEPS:
        assert set(step.needs) <= seen, step.name
        seen.add(step.name)


def test_device_test_lists_its_steps_with_what_each_expects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["device-test", "--list"]) == 0
    listed = capsys.readouterr().out
    for step in STEPS:
        assert f"{step.name}\n    {step.expected}\n" in listed


def test_device_test_without_a_broker_says_what_it_needs_and_runs_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["device-test"]) == 2
    assert "device-test needs --broker mqtt://host:port" in capsys.readouterr().err


def test_device_test_refuses_a_step_it_does_not_have(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device-test", "--broker", "mqtt://127.0.0.1:1", "--steps", "teleport"]) == 2
    assert "no such step: teleport" in capsys.readouterr().err
