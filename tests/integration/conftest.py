"""Every integration test also checks the persistence rule (docs/persistence.md); and the
fixtures several integration files share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.notify_support import SmtpServer
from tests.oidc_support import Provider, loopback_provider
from tests.persistence_guard import Style, WriteGuard, declared_styles

# Writes that break the rule today and are on their way out, with the reason;
# remove an entry when its code is gone.
TOLERATED: dict[tuple[str, Style], str] = {}


@pytest.fixture(autouse=True)
def one_style_per_table() -> Iterator[WriteGuard]:
    """Fails the test when a transaction wrote a table through the ORM and with Core, or
    wrote it in a style other than the declared one."""
    guard = WriteGuard(declared_styles(), TOLERATED)
    with guard.watching():
        yield guard
    assert guard.violations == [], sorted(set(guard.violations))


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback (aiosmtpd)."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def provider() -> Iterator[Provider]:
    """The OpenID Connect provider on loopback (tests/oidc_support.py), one for the session:
    it knows the same users throughout and keeps nothing a test could see of another's
    logins (each has its own codes, nonces and states); its start makes an RSA key."""
    with loopback_provider() as running:
        yield running
