"""Fuzz fixtures: SQLite in ``make test``; ``make fuzz`` sets KEYAUTOMAT_FUZZ_ENGINES."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from tests.conftest import empty_database
from tests.devices import Simulators
from tests.fuzz.harness import Sender, World, engines, seed_world, tolerant_client
from tests.iloq_helpers import bound_automat


@pytest.fixture(params=engines())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from empty_database(request.param, request, tmp_path)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A webhook receiver on loopback for the seeded subscription; sendPincode to an
    # automat that is not connected must not wait seconds per generated case.
    return settings.model_copy(
        update={"webhooks_allow_private": True, "device_ack_timeout_seconds": 0.05}
    )


@pytest.fixture
def http(container: Container) -> Iterator[TestClient]:
    yield from tolerant_client(container)


@pytest.fixture
def world(container: Container, http: TestClient) -> World:
    return seed_world(container, http)


@pytest.fixture
def sender(world: World, http: TestClient) -> Iterator[Sender]:
    with Sender(http, world.tenant.account_id, world.tenant.private_key) as s:
        yield s


@pytest.fixture
def online_automat(world: World, http: TestClient, container: Container) -> Iterator[str]:
    """A key20 of the world's tenant with a simulated device bound and connected."""
    sims = Simulators(http, container)
    automat_id, _sim, _keys = bound_automat(world.tenant, sims)
    world.online_automat_id = automat_id
    yield automat_id
    sims.stop_all()
