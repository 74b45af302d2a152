"""The text rules every edge applies (domain/text.py)."""

from __future__ import annotations

import pytest

from keyautomat.domain.text import is_ascii_digits, text_problem


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
