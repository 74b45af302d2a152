"""The replay window and the rate limit hold across API processes on PostgreSQL (issue 13
item 4). Each process is stood for by its own container, with its own database engine
and pool, and its own app; they share only the database, as separate processes do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container, bootstrap
from keyautomat.client import signature_headers
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app
from tests.conftest import TEST_BASE, Tenant, make_tenant

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
JSON = {"content-type": "application/json"}
URL = f"{TEST_BASE}/groups"
BODY = '{"name":"Once","customerId":"once","type":1}'


class Processes:
    """API processes on one database, started and restarted together."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._stack = ExitStack()
        self.apis: list[TestClient] = []
        self.containers: list[Container] = []

    def start(self) -> list[TestClient]:
        self.stop()
        for _ in range(self.count):
            container = bootstrap(self.settings)
            self._stack.callback(container.close)
            self.containers.append(container)
            client = TestClient(create_app(container), base_url="http://testserver")
            self.apis.append(self._stack.enter_context(client))
        return self.apis

    def stop(self) -> None:
        self._stack.close()
        self._stack = ExitStack()
        self.apis = []
        self.containers = []


def _signed(tenant: Tenant, method: str, url: str, body: str = "") -> dict[str, str]:
    return signature_headers(
        method=method,
        url=url,
        body=body,
        service_account_id=tenant.account_id,
        private_key_pem=tenant.private_key,
    )


@pytest.fixture
def processes(settings: Settings) -> Iterator[Processes]:
    running = Processes(settings.model_copy(update={"rate_limit_per_second": 0.0}), 2)
    yield running
    running.stop()


def test_a_request_one_process_accepted_is_a_replay_to_the_other(processes: Processes) -> None:
    first, second = processes.start()
    acme = make_tenant(processes.containers[0], first)
    signed = {**_signed(acme, "POST", URL, BODY), **JSON}
    assert first.post(URL, content=BODY, headers=signed).status_code == 201
    replayed = second.post(URL, content=BODY, headers=signed)
    assert (replayed.status_code, replayed.json()["message"]) == (401, "Replayed request")


def test_a_replay_stays_refused_after_every_process_restarts(processes: Processes) -> None:
    first, _ = processes.start()
    acme = make_tenant(processes.containers[0], first)
    signed = {**_signed(acme, "POST", URL, BODY), **JSON}
    assert first.post(URL, content=BODY, headers=signed).status_code == 201
    for api in processes.start():
        replayed = api.post(URL, content=BODY, headers=signed)
        assert (replayed.status_code, replayed.json()["message"]) == (401, "Replayed request")


def test_the_rate_limit_counts_an_accounts_requests_across_processes(
    settings: Settings,
) -> None:
    slow = settings.model_copy(update={"rate_limit_per_second": 0.01, "rate_limit_burst": 2})
    processes = Processes(slow, 2)
    try:
        first, second = processes.start()
        acme = make_tenant(processes.containers[0], first)
        url = f"{TEST_BASE}/"
        answers = [
            api.get(url, headers=_signed(acme, "GET", url)).status_code
            for api in (first, second, first, second)
        ]
        assert answers == [200, 200, 429, 429]
        refused = second.get(url, headers=_signed(acme, "GET", url))
        assert int(refused.headers["retry-after"]) >= 1
    finally:
        processes.stop()
