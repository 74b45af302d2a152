"""Rules of the metrics without a database: who may scrape, how facts become gauges, what
counts when a transaction commits, and adding up processes in multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from keyautomat import metrics
from keyautomat.config import DEFAULT_METRICS_ALLOW, SettingsError, load_settings
from keyautomat.entrypoints.api.metrics_endpoint import families, refusal
from keyautomat.service_layer.metric_facts import DeviceFacts, Facts, OutboxFacts

LOOPBACK = load_settings(metrics_allow=DEFAULT_METRICS_ALLOW).metrics_networks
TOKEN = "s3cret-scrape-token"


def refused(host: str | None, headers: dict[str, str] | None = None, **kw: object) -> str | None:
    allow = kw.get("allow", LOOPBACK)
    token = kw.get("token")
    return refusal(host, headers or {}, allow=allow, token=token)  # type: ignore[arg-type]


def test_loopback_may_scrape_by_default_on_ipv4_ipv6_and_mapped_addresses() -> None:
    assert refused("127.0.0.1") is None
    assert refused("::1") is None
    assert refused("::ffff:127.0.0.1") is None


def test_any_other_client_is_refused_by_default() -> None:
    assert refused("10.0.0.5") is not None
    assert refused("::ffff:10.0.0.5") is not None
    assert refused(None) is not None
    assert refused("testclient") is not None


def test_a_configured_network_admits_its_clients_and_no_others() -> None:
    allow = load_settings(metrics_allow="10.1.0.0/16, 192.0.2.9").metrics_networks
    assert refused("10.1.200.3", allow=allow) is None
    assert refused("192.0.2.9", allow=allow) is None
    assert refused("192.0.2.10", allow=allow) is not None
    assert refused("127.0.0.1", allow=allow) is not None


def test_an_empty_allow_list_admits_nobody() -> None:
    assert refused("127.0.0.1", allow=load_settings(metrics_allow="").metrics_networks)


def test_a_proxied_request_is_refused_without_a_token_even_from_loopback() -> None:
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        assert refused("127.0.0.1", {header.lower(): "203.0.113.1"}) is not None


def test_with_a_token_a_scrape_needs_the_bearer_token_and_an_allowed_address() -> None:
    good = {"authorization": f"Bearer {TOKEN}"}
    assert refused("127.0.0.1", good, token=TOKEN) is None
    assert refused("127.0.0.1", {**good, "x-forwarded-for": "203.0.113.1"}, token=TOKEN) is None
    assert refused("127.0.0.1", {"authorization": "bearer " + TOKEN}, token=TOKEN) is None
    assert refused("127.0.0.1", {}, token=TOKEN) is not None
    assert refused("127.0.0.1", {"authorization": "Bearer wrong"}, token=TOKEN) is not None
    assert refused("127.0.0.1", {"authorization": TOKEN}, token=TOKEN) is not None
    assert refused("10.0.0.5", good, token=TOKEN) is not None


@pytest.mark.parametrize("value", ["10.0.0.0/33", "localhost", "10.0.0.1/8/1"])
def test_a_malformed_allow_list_stops_the_start_naming_the_setting(value: str) -> None:
    with pytest.raises(SettingsError, match="KEYAUTOMAT_METRICS_ALLOW"):
        load_settings(metrics_allow=value)


def test_a_blank_token_means_no_token() -> None:
    assert load_settings(metrics_token="  ").metrics_token is None
    with pytest.raises(SettingsError, match="KEYAUTOMAT_METRICS_TOKEN"):
        load_settings(metrics_token="two words")


def _gauges(facts: Facts, kinds: list[str]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {
        (sample.name, tuple(sample.labels.values())): sample.value
        for family in families(facts, kinds)
        for sample in family.samples
    }


def test_every_outbox_kind_has_a_series_in_every_state_and_its_age() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    facts = Facts(
        now,
        OutboxFacts({("webhook", "due"): 3}, {"webhook": now - timedelta(seconds=42)}),
        DeviceFacts(
            bound=4, online=3, unsynced_online=1, unsynced_offline=1, most_versions_behind=2
        ),
    )
    gauges = _gauges(facts, ["notification", "webhook"])
    assert gauges[("keyautomat_outbox_depth", ("webhook", "due"))] == 3
    assert gauges[("keyautomat_outbox_depth", ("webhook", "held"))] == 0
    assert gauges[("keyautomat_outbox_depth", ("notification", "scheduled"))] == 0
    assert gauges[("keyautomat_outbox_oldest_due_age_seconds", ("webhook",))] == 42
    assert gauges[("keyautomat_outbox_oldest_due_age_seconds", ("notification",))] == 0
    assert gauges[("keyautomat_devices_online", ())] == 3
    assert gauges[("keyautomat_devices_unsynced", ("online",))] == 1
    assert gauges[("keyautomat_device_sync_versions_behind_max", ())] == 2


def test_an_age_is_never_negative_when_a_row_is_due_after_the_reading() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    facts = Facts(now, OutboxFacts({}, {"webhook": now + timedelta(seconds=1)}), DeviceFacts())
    assert facts.outbox_age_seconds("webhook") == 0


def _count(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def _in_transaction(work: Callable[[Session], None], *, commit: bool) -> None:
    engine = create_engine("sqlite://")
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        work(session)
        if commit:
            session.commit()
        else:
            session.rollback()


def test_a_contract_and_a_handover_count_only_when_their_transaction_commits() -> None:
    before = _count("keyautomat_contracts_created_total", kind="mechanical")
    fetched = _count("keyautomat_handovers_total", event="fetched")

    def work(session: Session) -> None:
        metrics.contract_created(session, "mechanical")
        metrics.handover(session, "key-fetched")
        metrics.handover(session, "key-somewhere")  # not a handover: never counted

    _in_transaction(work, commit=False)
    assert _count("keyautomat_contracts_created_total", kind="mechanical") == before
    assert _count("keyautomat_handovers_total", event="fetched") == fetched
    _in_transaction(work, commit=True)
    assert _count("keyautomat_contracts_created_total", kind="mechanical") == before + 1
    assert _count("keyautomat_handovers_total", event="fetched") == fetched + 1


def test_a_request_label_takes_a_known_method_or_other() -> None:
    metrics.request_done("BREW", "/healthz", 405, 0.001)
    metrics.request_done("GET", "-", 0, 0.001)
    requests = "keyautomat_http_request_duration_seconds_count"
    assert _count(requests, method="other", route="/healthz", status="405")
    assert _count(requests, method="GET", route="-", status="-")


CHILD = """
from keyautomat import metrics
metrics.signature_failed("replayed")
metrics.webhook_attempted(True, 0.02)
"""

READER = """
from prometheus_client import generate_latest
from keyautomat import metrics
print(generate_latest(metrics.process_registry()).decode())
"""


def test_in_multiprocess_mode_a_scrape_adds_up_every_process(tmp_path: Path) -> None:
    env = {**os.environ, metrics.MULTIPROCESS_ENV: str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", READER], env=env, check=True, timeout=60, capture_output=True
    ).stdout.decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(out)
        for s in family.samples
    }
    assert samples[("keyautomat_signature_failures_total", (("reason", "replayed"),))] == 2
    delivered = (("outcome", "delivered"),)
    assert samples[("keyautomat_webhook_delivery_duration_seconds_count", delivered)] == 2
