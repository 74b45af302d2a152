"""The text rules every edge applies (domain/text.py)."""

from __future__ import annotations

import pytest

from keyautomat.domain.text import (
    MAX_JSON_INTEGER,
    is_ascii_digits,
    json_problems,
    printable,
    text_problem,
)


def test_plain_text_has_no_problem() -> None:
    assert text_problem("Matti Meikäläinen, 00100 Helsinki") is None


def test_a_nul_character_is_a_problem() -> None:
    assert text_problem("a\x00b") == "must not contain NUL characters"


def test_a_lone_surrogate_is_a_problem() -> None:
    assert text_problem("x\ud800") == "must not contain unpaired UTF-16 surrogates"


@pytest.mark.parametrize("value", ["0", "123456", "0000000000"])
def test_ascii_digits_are_digits(value: str) -> None:
    assert is_ascii_digits(value)


@pytest.mark.parametrize("value", ["", "١٢٣٤٥٦", "¹²³⁴", "12a4", " 123", "１２３"])
def test_anything_else_is_not_ascii_digits(value: str) -> None:
    assert not is_ascii_digits(value)


def test_json_problems_name_each_place_in_the_document() -> None:
    document = {"input": {"contact": {"name": "x\ud800"}, "ids": ["ok", "a\x00"]}}
    assert json_problems(document) == [
        "input.contact.name: must not contain unpaired UTF-16 surrogates",
        "input.ids.1: must not contain NUL characters",
    ]


def test_json_problems_bound_numbers() -> None:
    assert json_problems({"n": 2**70, "m": -(2**53), "ok": 2**53 - 1, "f": float("nan")}) == [
        f"n: must be an integer between {-MAX_JSON_INTEGER} and {MAX_JSON_INTEGER}",
        f"m: must be an integer between {-MAX_JSON_INTEGER} and {MAX_JSON_INTEGER}",
        "f: must be a finite number",
    ]


def test_json_problems_survive_deep_nesting() -> None:
    document: list[object] = []
    for _ in range(100_000):
        document = [document]
    assert json_problems(document) == []


def test_printable_replaces_only_what_cannot_be_encoded() -> None:
    assert printable("Jane") == "Jane"
    assert printable("x\ud800y") == "x\ufffdy"
    assert printable("\ud83d\ude00") == "\U0001f600"
