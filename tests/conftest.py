"""Fixtures shared by every level of the suite.

Every database test runs twice, on SQLite and on PostgreSQL. The schema is
migrated once per session and engine; between tests SQLite gets a fresh copy of
a migrated template file and PostgreSQL has its rows deleted.

Service-account key pairs are generated once per session and handed out again
in every test (:class:`KeyPool`): an RSA-2048 key costs ~0.1 s of CPU to make
and another ~0.06 s to load for signing, paid for each of thousands of tenants.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from fastapi.dependencies import models as fastapi_dependency_models
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters import crypto
from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.orm import load_all_tables
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.domain.model import OrgUnitType, Role
from keyautomat.entrypoints.api.app import create_app
from keyautomat.service_layer import accounts
from keyautomat.service_layer.clock import SystemClock
from tests.services import postgres_database

TEST_BASE = "http://testserver/v2"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Marked here rather than by hand so that every PostgreSQL instance of the
    # engine-parametrized fixture is covered: ``pytest -m "not postgres"`` then
    # runs the same tests on SQLite only.
    for item in items:
        if _needs_postgres(item):
            item.add_marker(pytest.mark.postgres)


def _needs_postgres(item: pytest.Item) -> bool:
    if not isinstance(item, pytest.Function):
        return False
    if "postgres_url" in item.fixturenames:
        return True
    # ``callspec`` exists only on parametrized tests; its params include those of
    # fixtures the test reaches through others (container -> settings -> database_url).
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("database_url") == "postgresql"


class KeyPool:
    """Real service-account key pairs, made on first need and handed out again in each test:
    within a test every account gets a key of its own, in the order asked for."""

    def __init__(self) -> None:
        self._keys: list[crypto.GeneratedKeyPair] = []
        self._handed_out = 0
        self._lock = threading.Lock()

    def restart(self) -> None:
        with self._lock:
            self._handed_out = 0

    def take(self) -> crypto.GeneratedKeyPair:
        with self._lock:
            if self._handed_out == len(self._keys):
                self._keys.append(crypto.generate_service_account_key())
            key = self._keys[self._handed_out]
            self._handed_out += 1
            return key


@pytest.fixture(scope="session")
def key_pool() -> KeyPool:
    return KeyPool()


@pytest.fixture(autouse=True)
def reused_service_account_keys(key_pool: KeyPool, monkeypatch: pytest.MonkeyPatch) -> KeyPool:
    """Accounts created in this process take their keys from the pool (tests/unit/test_signing
    covers the generator itself)."""
    key_pool.restart()
    monkeypatch.setattr(accounts, "generate_service_account_key", key_pool.take)
    return key_pool


# FastAPI remembers how it classified each endpoint and dependency callable in module-level
# LRU caches of 4,096 entries (``fastapi.dependencies.models``). The app's own endpoints are
# closures over its container (metrics, probes, documents, console), so every app a test
# builds stayed reachable, with its routes, database engines and pydantic adapters, until
# some 300 apps later: millions of live objects that every full garbage collection walks,
# which made each test slower than the one before (a serial run took 24 minutes instead of
# 7; docs/performance/test-suite.md). A process that serves builds one app: this is the
# suite's own hygiene.
FASTAPI_CALLABLE_CACHES = tuple(
    cache for cache in vars(fastapi_dependency_models).values() if hasattr(cache, "cache_clear")
)
assert FASTAPI_CALLABLE_CACHES, "FastAPI moved its callable caches: the suite would slow down"


@pytest.fixture(autouse=True)
def forget_the_apps_endpoints() -> Iterator[None]:
    yield
    for cache in FASTAPI_CALLABLE_CACHES:
        cache.cache_clear()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_database(f"keyautomat_test_{os.getpid()}") as url:
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each engine."""
    yield from empty_database(request.param, request, tmp_path)


def empty_database(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a migrated, empty database of ``engine`` ("sqlite" or "postgresql")."""
    if engine == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "keyautomat.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    _empty_all(url)


def _empty_all(url: str) -> None:
    """Delete every row a test left, children before parents. DELETE, not TRUNCATE: on the
    few rows a test leaves it takes milliseconds, where TRUNCATE makes new files for each of
    the ~40 tables and their indexes (0.2-2 s a test)."""
    from keyautomat.adapters.db import make_engine

    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        for table in reversed(load_all_tables().sorted_tables):
            if table.name == "id_counters":
                conn.execute(table.update().values(value=0))
            else:
                conn.execute(table.delete())
    engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key=Fernet.generate_key().decode(),
        secret_key_file=tmp_path / "unused.key",
        rate_limit_per_second=0,
        db_threads=4,
        # Tests of races send bursts on purpose; admission control would refuse some with
        # 429 (tests/integration/test_overload.py turns it on).
        max_requests_in_flight=0,
    )


@pytest.fixture
def container(settings: Settings) -> Iterator[Container]:
    c = bootstrap(settings, clock=SystemClock())
    yield c
    c.close()


@pytest.fixture
def http(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container), base_url="http://testserver") as client:
        yield client


@dataclass
class Tenant:
    """An organization unit with a service account that can call the API."""

    unit_id: str
    account_id: str
    private_key: str
    api: Client


def make_tenant(
    container: Container,
    http: TestClient,
    *,
    name: str = "Acme Housing",
    parent_id: str | None = None,
    unit_type: OrgUnitType = OrgUnitType.ORGANIZATION,
    role: Role = Role.ADMIN,
) -> Tenant:
    """Create a unit (a new root by default) and a service account, bypassing the API."""
    now = container.clock.now()

    def work(session: Session) -> Tenant:
        unit = accounts.create_organization_unit(
            session,
            None,
            name=name,
            customer_id=name.lower().replace(" ", "-"),
            type=unit_type,
            parent_id=parent_id,
            iloq_api_user=None,
            secrets=container.secrets,
            now=now,
        )
        created = accounts.create_service_account(
            session,
            None,
            organization_unit_id=unit.id,
            name=f"{name} account",
            role=role,
            now=now,
        )
        return Tenant(
            unit.id,
            created.account.id,
            created.private_key_pem,
            Client(TEST_BASE, created.account.id, created.private_key_pem, http=http),
        )

    return container.db.transaction(work)


@pytest.fixture
def operator(container: Container, http: TestClient) -> Tenant:
    """The platform operator: admin of a root organization (type 0)."""
    return make_tenant(container, http, name="Platform")


@pytest.fixture
def acme(container: Container, http: TestClient) -> Tenant:
    """An admin of a customer organization."""
    return make_tenant(container, http, name="Acme Housing")


@pytest.fixture
def acme_pms(container: Container, http: TestClient, acme: Tenant) -> Tenant:
    """An integration account (a booking system) of a company under Acme."""
    return make_tenant(
        container,
        http,
        name="Acme PMS",
        parent_id=acme.unit_id,
        unit_type=OrgUnitType.COMPANY,
        role=Role.INTEGRATION,
    )
