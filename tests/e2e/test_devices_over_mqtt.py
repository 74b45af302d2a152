"""Automats over a real MQTT broker: a simulator process binds, reports, and hands out a key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from keyautomat.adapters.device_links import MqttLink
from keyautomat.adapters.orm_devices import automat_events, device_inbox
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.service_layer import devices
from keyautomat.simulator import blank_iloq_keys
from tests.conftest import Tenant
from tests.devices import FAST_DEVICE_SETTINGS, Simulators, admin_client, eventually, install
from tests.services import MQTT_HOST, MQTT_PORT, need

pytestmark = pytest.mark.mqtt
BROKER = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    need("MQTT", MQTT_HOST, MQTT_PORT)
    run = uuid.uuid4().hex[:10]
    return settings.model_copy(
        update={
            **FAST_DEVICE_SETTINGS,
            "device_ack_timeout_seconds": 2.0,
            "mqtt_url": BROKER,
            "mqtt_topic_prefix": f"test-{run}/keyautomat/v1",
            "mqtt_client_id": f"gw-{run}",
        }
    )


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container, link=MqttLink(BROKER))
    yield simulators
    simulators.stop_all()


def _events(container: Container, automat_id: str) -> list[tuple[str, datetime]]:
    return container.db.transaction(
        lambda s: [
            (r.type, r.occurred_at)
            for r in s.execute(
                select(automat_events.c.type, automat_events.c.occurred_at)
                .where(automat_events.c.automat_id == automat_id)
                .order_by(automat_events.c.id)
            )
        ]
    )


def _inbox_counts(container: Container, automat_id: str) -> dict[str, int]:
    return container.db.transaction(
        lambda s: {
            row.type: row.n
            for row in s.execute(
                select(device_inbox.c.type, func.count().label("n"))
                .where(device_inbox.c.automat_id == automat_id)
                .group_by(device_inbox.c.type)
            )
        }
    )


def _add_fetch_code(container: Container, automat_id: str, code: str, locker: int) -> None:
    now = datetime.now(UTC)
    container.db.transaction(
        lambda s: devices.add_pincode(
            s,
            automat_id,
            code=code,
            locker_index=locker,
            valid_from=now - timedelta(minutes=1),
            valid_until=now + timedelta(hours=1),
            purpose="fetch",
        )
    )


def test_a_simulator_process_binds_reports_lockers_and_hands_out_a_key_once(
    acme: Tenant, http: TestClient, container: Container
) -> None:
    automat = install(acme)
    automat_id = automat["id"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyautomat.entrypoints.cli",
            "simulate",
            "--broker",
            BROKER,
            "--automat",
            automat_id,
            "--installation-pincode",
            automat["installationPincode"],
            "--lockers",
            "30",
            "--product",
            "key20",
            "--hw-id",
            f"E2E-{uuid.uuid4().hex[:8]}",
            "--prefix",
            container.settings.mqtt_topic_prefix,
            "--resend-seconds",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:

        def reported() -> dict[str, Any]:
            body: dict[str, Any] = acme.api.get(f"/automats/{automat_id}")
            return body if len(body["lockers"]) == 30 else {}

        body = eventually(reported, timeout=20.0, interval=0.1)
        assert body["lifecycleState"] == "active"
        assert body["installationPincode"] is None
        assert sum(locker["isKeyInside"] for locker in body["lockers"]) == 15
        key = body["lockers"][0]["key"]

        _add_fetch_code(container, automat_id, "271828", 0)
        admin = admin_client(acme, http)

        def synced() -> bool:
            status = admin.get(f"/admin/automats/{automat_id}/device")
            return bool(status["online"] and status["syncedVersion"] == 1)

        eventually(synced, timeout=10.0, interval=0.05)
        result = acme.api.post(f"/automats/{automat_id}/sendPincode", {"pincode": "271828"})
        assert result == {"success": True, "reason": None}

        def key_taken() -> bool:
            locker = acme.api.get(f"/automats/{automat_id}")["lockers"][0]
            return locker["isKeyInside"] is False

        eventually(key_taken, timeout=10.0, interval=0.05)
        eventually(
            lambda: _inbox_counts(container, automat_id).get("locker-closed") == 1, timeout=10.0
        )
        assert [t for t, _ in _events(container, automat_id)] == ["code-entered", "key-removed"]
        counts = _inbox_counts(container, automat_id)
        assert counts["code-entered"] == 1
        assert counts["locker-opened"] == 1
        assert counts["key-removed"] == 1
        locker = acme.api.get(f"/automats/{automat_id}")["lockers"][0]
        assert locker["key"] == key  # the key stays assigned; it is just not inside
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert b'"event":"bound"' in out, err.decode()[-2000:]


def test_an_automat_cut_off_from_the_broker_delivers_its_events_once_with_original_times(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat = install(acme)
    sim = sims.start(
        hw_id=f"OFF-{uuid.uuid4().hex[:8]}",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
    )
    keys = blank_iloq_keys(2)
    sims.call(sim.stock, keys)
    sims.call(sim.wait_bound, 10.0)
    _add_fetch_code(container, automat["id"], "161803", 1)
    eventually(lambda: sim.pincodes, timeout=10.0)
    sims.call(sim.wait_flushed, 10.0)

    sims.call(sim.go_offline)
    entered_at = datetime.now(UTC)
    assert sims.call(sim.enter_code, "161803") is True
    assert _events(container, automat["id"]) == []
    sims.call(sim.go_online)
    sims.call(sim.wait_bound, 10.0)
    sims.call(sim.wait_flushed, 10.0)

    events = _events(container, automat["id"])
    assert [t for t, _ in events] == ["code-entered", "key-removed"]
    for _type, occurred_at in events:
        assert abs((occurred_at - entered_at).total_seconds()) < 0.5
    counts = _inbox_counts(container, automat["id"])
    assert counts["code-entered"] == 1
    assert counts["key-removed"] == 1
    lockers = acme.api.get(f"/automats/{automat['id']}")["lockers"]
    assert lockers[1]["isKeyInside"] is False


def test_send_pincode_over_mqtt_times_out_when_the_device_does_not_answer(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme)
    sim = sims.start(
        hw_id=f"MUTE-{uuid.uuid4().hex[:8]}",
        locker_count=2,
        installation_pincode=automat["installationPincode"],
    )
    sims.call(sim.wait_bound, 10.0)
    sim.mute = True
    result = acme.api.post(f"/automats/{automat['id']}/sendPincode", {"pincode": "1"})
    assert result == {"success": False, "reason": "TIMEOUT"}
