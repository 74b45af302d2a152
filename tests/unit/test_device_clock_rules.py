"""What the server believes of a device's clock (domain/devices.py; docs/device-protocol.md,
"Clock")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keyautomat.domain.devices import clock_suspect

SKEW = timedelta(minutes=5)
NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def test_a_device_time_more_than_the_skew_ahead_is_suspect() -> None:
    assert clock_suspect(NOW + SKEW + timedelta(milliseconds=1), NOW, SKEW)


def test_a_device_time_up_to_the_skew_ahead_is_believed() -> None:
    assert not clock_suspect(NOW + SKEW, NOW, SKEW)


def test_a_device_time_in_the_past_is_believed_however_old_it_is() -> None:
    # Events queued offline arrive late with the times they happened.
    assert not clock_suspect(NOW - timedelta(days=30), NOW, SKEW)
