"""Where the external services of the test suite are, and what to do when one is missing.

Tests that need PostgreSQL or MQTT skip with a clear reason on a laptop without
them, and fail instead under KEYAUTOMAT_REQUIRE_SERVICES=1 (which CI sets), so
CI always runs the full matrix.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import psycopg
import pytest
from sqlalchemy.engine import make_url

POSTGRES_ADMIN_URL = os.environ.get(
    "KEYAUTOMAT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MQTT_HOST = os.environ.get("KEYAUTOMAT_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("KEYAUTOMAT_TEST_MQTT_PORT", "1883"))

# This test process's mark on the shared broker: pytest-xdist workers, and other runs on
# the machine, each start simulators of the same hwIds (SIM-<automat id>), whose client
# ids must still differ, or the broker hands one's connection to the other.
RUN = uuid.uuid4().hex[:8]


def simulator_client_id(hw_id: str) -> str:
    """The MQTT client id of a simulator of ``hw_id`` started by this test process."""
    return f"sim-{hw_id}-{RUN}"


def services_required() -> bool:
    return os.environ.get("KEYAUTOMAT_REQUIRE_SERVICES") == "1"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def unavailable(reason: str) -> NoReturn:
    """Skip because ``reason``; fail instead where CI demands every service and tool
    (KEYAUTOMAT_REQUIRE_SERVICES=1, set by .ci/run, which installs them)."""
    if services_required():
        pytest.fail(f"{reason}, and KEYAUTOMAT_REQUIRE_SERVICES=1 demands it")
    pytest.skip(reason)


def need(service: str, host: str, port: int) -> None:
    """Skip (or, when services are required, fail) unless ``host:port`` answers."""
    if not reachable(host, port):
        unavailable(
            f"{service} is not reachable at {host}:{port} "
            "(start it, or see README: Running the tests)"
        )


@contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A new, empty PostgreSQL database ``name`` next to the admin URL's (one a killed run
    left behind is replaced), dropped on exit; skipped (or failed) without PostgreSQL."""
    url = make_url(POSTGRES_ADMIN_URL)
    need("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
