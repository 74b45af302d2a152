"""Automats over a real MQTT broker: a simulator process binds, reports, and hands out a key."""

from __future__ import annotations

import asyncio
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
from keyautomat.adapters.device_protocol import (
    Empty,
    Hello,
    Rejected,
    RejectReason,
)
from keyautomat.adapters.orm_devices import (
    automat_events,
    device_inbox,
    device_links,
)
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.service_layer import devices
from keyautomat.simulator import blank_iloq_keys
from tests.conftest import Tenant
from tests.devices import (
    BIND_SECONDS,
    Simulators,
    admin_client,
    alarm_types,
    eventually,
    exchange,
    install,
)
from tests.e2e.mqtt_support import BROKER, over_mqtt, simulators_on_the_broker

pytestmark = pytest.mark.mqtt


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return over_mqtt(settings)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    yield from simulators_on_the_broker(http, container)


def _events(container: Container, automat_id: str) -> list[tuple[str, datetime]]:
    return container.db.transaction(
        lambda s: [
            (r.type, r.occurred_at)
            for r in s.execute(
                select(automat_events.c.type, automat_events.c.occurred_at)
                .where(
                    automat_events.c.automat_id == automat_id,
                    # The server's own alarms (every bind raises one) are not reports.
                    automat_events.c.type != "device-alarm",
                )
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
    sims.call(sim.wait_bound, BIND_SECONDS)
    _add_fetch_code(container, automat["id"], "161803", 1)
    eventually(lambda: sim.pincodes, timeout=10.0)
    sims.call(sim.wait_flushed, BIND_SECONDS)

    sims.call(sim.go_offline)
    entered_at = datetime.now(UTC)
    assert sims.call(sim.enter_code, "161803") is True
    assert _events(container, automat["id"]) == []
    sims.call(sim.go_online)
    sims.call(sim.wait_bound, BIND_SECONDS)
    sims.call(sim.wait_flushed, BIND_SECONDS)

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
    sims.call(sim.wait_bound, BIND_SECONDS)
    sim.mute = True
    result = acme.api.post(f"/automats/{automat['id']}/sendPincode", {"pincode": "1"})
    assert result == {"success": False, "reason": "TIMEOUT"}


def _hello(code: str | None) -> Hello:
    return Hello(installation_pincode=code, product="key20", locker_count=4)


def test_200_wrong_codes_then_the_right_one_on_an_active_automats_topic_get_no_token_and_no_sync(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    hw_id = f"TAKE-{uuid.uuid4().hex[:8]}"
    sim = sims.start(hw_id=hw_id, locker_count=4, installation_pincode=code)
    sims.call(sim.wait_bound, BIND_SECONDS)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    _add_fetch_code(container, automat["id"], "271828", 0)
    eventually(lambda: sim.pincodes, timeout=10.0)
    # The device has acknowledged its pincodes: the server owes its topic no sync.
    eventually(lambda: _in_sync(container, automat["id"]), timeout=10.0)
    token_before = _token_hash(container, automat["id"])

    wrong = [f"{n:06d}" for n in range(300) if f"{n:06d}" != code][:200]
    attack = [("hello", _hello(guess), None) for guess in [*wrong, code]]
    answers = asyncio.run(
        exchange(MqttLink(BROKER), container.settings.mqtt_topic_prefix, hw_id, attack, answers=201)
    )

    types = [m.type for m in answers]
    assert "welcome" not in types
    assert "sync" not in types
    refusals = [m.data for m in answers if isinstance(m.data, Rejected)]
    assert len(refusals) == 201
    # Wrong until the hwId backs off, locked out after: the answer never depends on the code.
    assert {r.reason for r in refusals} == {
        RejectReason.WRONG_INSTALLATION_CODE,
        RejectReason.LOCKED_OUT,
    }
    assert (refusals[-1].reason, refusals[-1].detail) == (refusals[-2].reason, refusals[-2].detail)
    assert _token_hash(container, automat["id"]) == token_before
    assert container.devices.stats.backed_off > 0  # most guesses never reached the database
    assert "DEVICE_BIND_FAILURES" in alarm_types(container, automat["id"])
    # The real device carries on with its token.
    sims.call(sim.raise_alarm, "DEVICE_MOVED")
    sims.call(sim.wait_flushed, BIND_SECONDS)
    assert sim.last_rejection is None


def test_a_device_that_lost_its_welcome_binds_again_with_its_code_until_it_speaks_with_its_token(
    acme: Tenant, container: Container, http: TestClient
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    prefix = container.settings.mqtt_topic_prefix
    hw_id = f"LOST-{uuid.uuid4().hex[:8]}"
    # The first hello binds, but its welcome is lost (nobody listens).
    asyncio.run(
        exchange(
            MqttLink(BROKER),
            prefix,
            hw_id,
            [("hello", _hello(code), None)],
            answers=0,
            listen=False,
        )
    )
    eventually(
        lambda: acme.api.get(f"/automats/{automat['id']}")["lifecycleState"] == "active",
        timeout=10.0,
    )

    again = asyncio.run(
        exchange(MqttLink(BROKER), prefix, hw_id, [("hello", _hello(code), None)], answers=1)
    )
    [welcome] = [m.data for m in again if m.type == "welcome"]
    token = getattr(welcome, "device_token", None)
    assert token is not None
    assert any(m.type == "sync" and getattr(m.data, "full", False) for m in again)

    # Its first message with the token makes the code useless.
    asyncio.run(
        exchange(
            MqttLink(BROKER),
            prefix,
            hw_id,
            [("heartbeat", Empty(), token)],
            answers=0,
            listen=False,
        )
    )
    eventually(lambda: _bind_code_forgotten(container, automat["id"]), timeout=10.0)
    late = asyncio.run(
        exchange(MqttLink(BROKER), prefix, hw_id, [("hello", _hello(code), None)], answers=1)
    )
    assert [m.type for m in late] == ["rejected"]


def _in_sync(container: Container, automat_id: str) -> bool:
    link = container.db.transaction(
        lambda s: s.execute(
            select(device_links.c.desired_version, device_links.c.synced_version).where(
                device_links.c.automat_id == automat_id
            )
        ).one()
    )
    return bool(link.desired_version == link.synced_version)


def _token_hash(container: Container, automat_id: str) -> str | None:
    value: str | None = container.db.transaction(
        lambda s: s.scalar(
            select(device_links.c.token_hash).where(device_links.c.automat_id == automat_id)
        )
    )
    return value


def _bind_code_forgotten(container: Container, automat_id: str) -> bool:
    stored = container.db.transaction(
        lambda s: s.scalar(
            select(device_links.c.bind_pincode_hash).where(device_links.c.automat_id == automat_id)
        )
    )
    return stored is None


def test_guessing_installation_codes_over_the_broker_gets_one_answer_and_binds_nothing(
    acme: Tenant, container: Container
) -> None:
    key20 = install(acme)
    key30 = install(acme, product="key30")
    prefix = container.settings.mqtt_topic_prefix
    hw_id = f"GUESS-{uuid.uuid4().hex[:8]}"
    wrong = [
        f"{n:06d}"
        for n in range(40)
        if f"{n:06d}" not in {key20["installationPincode"], key30["installationPincode"]}
    ][:30]
    # The right code of the key30 offered as a key20 must not confirm the code, nor name
    # the automat; nor may the right code of the key20 once this hwId is backed off.
    guesses = [*wrong, key30["installationPincode"], key20["installationPincode"]]
    attack = [("hello", _hello(code), None) for code in guesses]

    answers = asyncio.run(exchange(MqttLink(BROKER), prefix, hw_id, attack, answers=len(attack)))

    assert "welcome" not in [m.type for m in answers]
    refusals = [m.data.reason for m in answers if isinstance(m.data, Rejected)]
    assert len(refusals) == len(attack)
    assert set(refusals) == {RejectReason.WRONG_INSTALLATION_CODE, RejectReason.LOCKED_OUT}
    assert refusals[-3] == refusals[-2] == refusals[-1]  # the right codes answered as a wrong one
    assert container.devices.stats.backed_off > 0
    for automat in (key20, key30):
        assert acme.api.get(f"/automats/{automat['id']}")["lifecycleState"] != "active"


def test_keypad_lockouts_over_the_broker_raise_an_alarm_each(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat = install(acme)
    sim = sims.start(
        hw_id=f"KEYPAD-{uuid.uuid4().hex[:8]}",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
        max_failures=2,
        lockout_seconds=0.05,
    )
    sims.call(sim.wait_bound, BIND_SECONDS)
    for _ in range(2):
        eventually(lambda: not sims.call(lambda: sim.locked_out), timeout=5.0)
        for _ in range(2):
            assert sims.call(sim.enter_code, "0000") is False
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(
        lambda: alarm_types(container, automat["id"]).count(devices.KEYPAD_LOCKED_ALARM) == 2,
        timeout=10.0,
    )
