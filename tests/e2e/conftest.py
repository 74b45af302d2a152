"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from keyautomat.config import Settings
from tests.processes import Processes, settings_env


@pytest.fixture
def processes(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    """keyautomat processes run with the test's ``settings`` (its database, secret key, broker
    and topic prefix, so they share what the test's in-process ``container`` sees), each
    stopped when the test ends, passed or failed.

    Separate API, worker and gateway processes need PostgreSQL: pin the engine with
    ``@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)``.
    """
    with Processes(tmp_path / "processes", settings_env(settings)) as started:
        yield started
