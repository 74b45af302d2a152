"""Patterns must match the whole value: ``$`` with ``re.match`` lets a trailing newline through."""

from __future__ import annotations

import pytest

from keyautomat.adapters.device_protocol import valid_hw_id
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.ids import is_object_id
from keyautomat.domain.iloq import check_key_id
from keyautomat.domain.mechanical import normalize_rfid


def test_an_iloq_key_id_with_a_trailing_newline_is_refused() -> None:
    assert check_key_id("K-1", "keyIds.0") == "K-1"
    with pytest.raises(InvalidInput):
        check_key_id("K-1\n", "keyIds.0")


def test_an_object_id_with_a_trailing_newline_is_not_an_object_id() -> None:
    assert is_object_id("0" * 24)
    assert not is_object_id("0" * 24 + "\n")


def test_an_rfid_with_a_trailing_newline_is_refused() -> None:
    assert normalize_rfid("1a00d1") == "1A00D1"
    with pytest.raises(InvalidInput):
        normalize_rfid("1A00D1\n")


def test_a_hardware_id_with_a_trailing_newline_is_not_valid() -> None:
    assert valid_hw_id("SIM-1")
    assert not valid_hw_id("SIM-1\n")
