"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from keyautomat.config import Settings
from tests.processes import Processes, settings_env
from tests.services import unavailable

# Playwright's own browser download is not reachable here, so Debian's Chromium is
# launched by path. Without it the browser tests skip, saying so, and fail under
# KEYAUTOMAT_REQUIRE_SERVICES=1 (CI, whose .ci/run installs it).
CHROMIUM = os.environ.get("KEYAUTOMAT_TEST_CHROMIUM", "/usr/bin/chromium")


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page of a fresh browser context (no cookies or storage of another test)."""
    context = browser.new_context()
    yield context.new_page()
    context.close()
