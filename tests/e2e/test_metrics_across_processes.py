"""``/metrics`` of a deployment in separate processes on PostgreSQL (docs/operations.md,
"Metrics", "Several processes"): with ``PROMETHEUS_MULTIPROC_DIR`` each API process
reports every process's counts, the worker's included, and the same database facts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.domain import webhooks as wh
from keyautomat.metrics import MULTIPROCESS_ENV
from keyautomat.service_layer import webhooks
from tests.conftest import Tenant
from tests.devices import admin_client, eventually
from tests.integration.webhook_support import subscribe
from tests.processes import Processes, all_ready
from tests.webhook_receiver import running_receiver

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

API = ("--no-worker", "--no-gateway")
Key = tuple[str, frozenset[tuple[str, str]]]
Samples = dict[Key, float]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Webhooks to the receiver on 127.0.0.1 over http (gaps.md G8).
    return settings.model_copy(update={"webhooks_allow_private": True})


def scraped(url: str) -> Samples:
    answer = httpx.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def once_counted(url: str, key: Key) -> Samples:
    """The samples of ``url`` once ``key`` is above 0 there."""

    def counted() -> Samples | None:
        samples = scraped(url)
        return samples if samples.get(key) else None

    found = eventually(counted, interval=0.1)
    assert found is not None
    return found


def publish_one(container: Container, unit_id: str) -> None:
    now = datetime.now(UTC)
    data = wh.key_status_data(
        state="key-fetched", key_id="k-1", contract_id="c-1", contract_object_id="c-1"
    )
    container.db.transaction(
        lambda s: webhooks.publish(
            s,
            organization_unit_id=unit_id,
            event_type="key-status",
            data=data,
            occurred_at=now,
            now=now,
        )
    )


def test_each_api_process_reports_every_processs_counts_and_the_same_facts(
    processes: Processes, container: Container, acme: Tenant, http: TestClient, tmp_path: Path
) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {MULTIPROCESS_ENV: str(shared)}
    with running_receiver() as receiver:
        subscribe(admin_client(acme, http), receiver, acme.unit_id, ["key-status"])
        apis = all_ready([processes.serve(*API, wait=False, env=env) for _ in range(2)])
        processes.worker(env=env)
        tested = len(receiver.accepted)  # the subscription's test delivery, made in-process
        publish_one(container, acme.unit_id)
        eventually(lambda: len(receiver.accepted) == tested + 1, timeout=30)
        for api in apis:
            assert httpx.get(f"{api.base_url}/v2/automats").status_code == 401  # unsigned

        missing: Key = (
            "keyautomat_signature_failures_total",
            frozenset({("reason", "missing_headers")}),
        )
        delivered: Key = (
            "keyautomat_webhook_deliveries_total",
            frozenset({("outcome", "delivered")}),
        )
        bound: Key = ("keyautomat_devices_bound", frozenset())
        webhook_due: Key = (
            "keyautomat_outbox_depth",
            frozenset({("kind", "webhook"), ("state", "due")}),
        )
        for api in apis:
            # The worker counts its attempt a moment after the receiver has the request.
            samples = once_counted(api.base_url, delivered)
            assert samples[delivered] == 1  # made by the worker process
            assert samples[missing] == 2  # one refusal in each API process
            assert samples[bound] == 0
            assert samples[webhook_due] == 0
