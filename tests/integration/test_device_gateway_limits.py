"""The gateway's limits: wrong installation pincodes back off per device and are held to a
rate for everybody (without locking a device with its token out), and a slow iLOQ system
never holds up another automat's traffic. In-process link, a manual clock, both engines."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from keyautomat import metrics
from keyautomat.adapters.device_links import InProcessLink
from keyautomat.adapters.device_protocol import CodeEntered, Hello, RejectReason, encode, up_topic
from keyautomat.adapters.orm_devices import device_leases
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.config import Settings
from keyautomat.entrypoints import device_gateway
from keyautomat.service_layer.clock import ManualClock
from keyautomat.simulator import blank_iloq_keys
from tests.conftest import Tenant
from tests.devices import (
    BIND_SECONDS,
    FAST_DEVICE_SETTINGS,
    Simulators,
    alarm_types,
    eventually,
    install,
)
from tests.integration.test_device_gateway import _add_pincode


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            **FAST_DEVICE_SETTINGS,
            "device_hello_failures_per_device": 3,
            "device_hello_failures_per_minute": 6,
            "device_programming_deadline_seconds": 1.0,
        }
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def container(settings: Settings, clock: ManualClock) -> Iterator[Container]:
    c = bootstrap(settings, clock=clock)
    yield c
    c.close()


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def _send_hello(container: Container, hw_id: str, code: str, token: str | None = None) -> None:
    link = container.device_link
    assert isinstance(link, InProcessLink)
    hello = Hello(installation_pincode=code, product="key20", locker_count=4)
    payload = encode("hello", hello, hw_id=hw_id, occurred_at=datetime.now(UTC), token=token)
    link.route(up_topic(container.settings.mqtt_topic_prefix, hw_id), payload)


def _wrong(code: str, n: int = 0) -> str:
    guess = f"{n:06d}"
    return guess if guess != code else f"{n + 1:06d}"


def _device_hellos_rate_limited() -> float:
    name = "keyautomat_rate_limited_requests_total"
    return metrics.REGISTRY.get_sample_value(name, {"surface": "device_hello"}) or 0.0


def test_wrong_codes_on_a_devices_topic_back_off_raise_an_alarm_and_leave_the_device_in(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    sim = sims.start(hw_id="SIM-GUESSED", locker_count=4, installation_pincode=code)
    sims.call(sim.wait_bound, BIND_SECONDS)
    stats = container.devices.stats
    rejected, backed_off = stats.rejected, stats.backed_off
    limited = _device_hellos_rate_limited()

    for n in range(10):
        _send_hello(container, sim.hw_id, _wrong(code, n))
    eventually(lambda: stats.rejected - rejected >= 10)
    # Three free failures, the fourth starts the back-off; the clock stands still, so
    # the other six are refused without a look at the database.
    assert stats.backed_off - backed_off == 6
    assert _device_hellos_rate_limited() - limited == 6  # in the metrics too
    assert alarm_types(container, automat["id"]).count("DEVICE_BIND_FAILURES") == 1

    # A hello with the device's token still gets in while its hwId is backed off.
    _send_hello(container, sim.hw_id, code, token=sim.token)
    sims.call(sim.raise_alarm, "DEVICE_MOVED")  # handled after the hello, in order
    sims.call(sim.wait_flushed, BIND_SECONDS)
    assert stats.backed_off - backed_off == 7
    assert stats.rejected - rejected == 10
    assert sim.last_rejection is None


def test_wrong_codes_from_many_devices_beyond_the_rate_refuse_pincodes_until_the_rate_drops(
    acme: Tenant, sims: Simulators, container: Container, clock: ManualClock
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    stats = container.devices.stats
    rejected, backed_off, alarms = stats.rejected, stats.backed_off, stats.hello_rate_alarms
    for n in range(9):
        _send_hello(container, f"GUESSER-{n}", _wrong(code, n))
    eventually(lambda: stats.rejected - rejected >= 9)
    # Six failures per minute reach the database; the rest are refused from memory,
    # and the alarm is raised once, not per refusal.
    assert stats.backed_off - backed_off == 3
    assert stats.hello_rate_alarms - alarms == 1

    # The right code from fresh hardware is refused while the rate is spent...
    sim = sims.start(hw_id="SIM-HONEST", locker_count=4, installation_pincode=code)
    eventually(lambda: sim.last_rejection)
    assert acme.api.get(f"/automats/{automat['id']}")["lifecycleState"] == "waitingForInstall"
    # ...and binds as soon as the guessing has left the window: no back-off to wait out.
    clock.advance(timedelta(seconds=60))
    sims.call(sim.go_offline)
    sims.call(sim.go_online)
    sims.call(sim.wait_bound, BIND_SECONDS)
    assert acme.api.get(f"/automats/{automat['id']}")["lifecycleState"] == "active"


def test_one_wrong_code_an_hour_never_keeps_another_tenants_installation_out(
    acme: Tenant, sims: Simulators, container: Container, clock: ManualClock
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    stats = container.devices.stats
    rejected = stats.rejected
    for n in range(40):  # far more than the shared rate and the free failures of a hwId
        clock.advance(timedelta(hours=1))
        _send_hello(container, f"GUESSER-{n % 3}", _wrong(code, n))
        eventually(lambda n=n: stats.rejected - rejected > n)  # type: ignore[misc]
    # Right after the latest wrong code, an honest installation still gets in.
    sim = sims.start(hw_id="SIM-HONEST-LATER", locker_count=4, installation_pincode=code)
    sims.call(sim.wait_bound, BIND_SECONDS)  # (the API's signatures would not survive 30 h)
    assert sim.last_rejection is None


def test_a_device_locked_out_says_hello_again_by_itself_once_it_has_waited(
    acme: Tenant, sims: Simulators, container: Container, clock: ManualClock
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    stats = container.devices.stats
    rejected = stats.rejected
    for n in range(6):  # everybody's rate (six a minute here) is spent
        _send_hello(container, f"GUESSER-{n}", _wrong(code, n))
    eventually(lambda: stats.rejected - rejected >= 6)
    sim = sims.start(
        hw_id="SIM-PATIENT", locker_count=4, installation_pincode=code, hello_retry_seconds=0.1
    )
    eventually(lambda: sim.last_rejection == RejectReason.LOCKED_OUT)
    assert sim.installation_pincode == code  # kept: nobody judged the code
    clock.advance(timedelta(seconds=60))
    sims.call(sim.wait_bound, BIND_SECONDS)  # without reconnecting: it said hello again by itself
    assert acme.api.get(f"/automats/{automat['id']}")["lifecycleState"] == "active"


def test_a_slow_iloq_system_does_not_delay_another_automats_events(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    gateway = container.devices
    slow_started = asyncio.Event()

    async def slow_programming(automat_id: str, code: CodeEntered, at: datetime) -> bool:
        slow_started.set()
        await asyncio.sleep(3600)  # an iLOQ server that never answers
        return True

    gateway.before_open = slow_programming
    first = install(acme, name="Slow")
    second = install(acme, name="Busy")
    # Two devices whose messages the gateway handles on the same worker.
    queues = max(1, gateway.worker_count)
    other = next(
        f"SIM-B{n}"
        for n in range(10_000)
        if zlib.crc32(f"SIM-B{n}".encode()) % queues == zlib.crc32(b"SIM-A") % queues
    )
    a = sims.start(hw_id="SIM-A", locker_count=2, installation_pincode=first["installationPincode"])
    b = sims.start(hw_id=other, locker_count=2, installation_pincode=second["installationPincode"])
    sims.call(a.wait_bound, BIND_SECONDS)
    sims.call(b.wait_bound, BIND_SECONDS)
    _add_pincode(container, first["id"], "4242", 0, purpose="default")
    eventually(lambda: a.pincodes)
    sims.call(a.stock, blank_iloq_keys(1))
    sims.call(a.wait_flushed, BIND_SECONDS)
    assert sims.call(a.enter_code, "4242") is True
    sims.call(slow_started.wait)

    sims.call(b.stock, blank_iloq_keys(2))
    sims.call(b.wait_flushed, 2.0)  # not held up behind the slow programming
    # The programming gives up at its deadline; the locker stays shut.
    eventually(lambda: not gateway._programming, timeout=5.0)
    assert not a.lockers[0].door_open


def test_one_automats_programmings_still_run_one_after_another(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    running: list[str] = []
    overlaps: list[list[str]] = []
    done: list[str] = []

    async def programming(automat_id: str, code: CodeEntered, at: datetime) -> bool:
        running.append(code.code)
        overlaps.append(list(running))
        await asyncio.sleep(0.2)
        running.remove(code.code)
        done.append(code.code)
        return False

    container.devices.before_open = programming
    automat = install(acme)
    sim = sims.start(
        hw_id="SIM-ORDER", locker_count=2, installation_pincode=automat["installationPincode"]
    )
    sims.call(sim.wait_bound, BIND_SECONDS)
    _add_pincode(container, automat["id"], "1111", 0, purpose="default")
    _add_pincode(container, automat["id"], "2222", 1, purpose="default")
    eventually(lambda: len(sim.pincodes) == 2)
    sims.call(sim.enter_code, "1111")
    sims.call(sim.enter_code, "2222")
    eventually(lambda: len(done) == 2, timeout=5.0)
    assert done == ["1111", "2222"]
    assert all(len(together) == 1 for together in overlaps)


def leased_hw_ids(container: Container) -> set[str]:
    return set(container.db.transaction(lambda s: s.scalars(select(device_leases.c.hw_id)).all()))


def test_hwids_that_send_junk_or_are_refused_are_left_holding_no_lease(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    """Someone with a broker login writing on made-up topics leaves nothing behind: junk is
    dropped before any lease is taken, a refused hwId's lease is given up at once, and a
    guess refused from memory takes none."""
    automat = install(acme)
    code = automat["installationPincode"]
    sim = sims.start(hw_id="SIM-REAL", locker_count=4, installation_pincode=code)
    sims.call(sim.wait_bound, BIND_SECONDS)
    stats = container.devices.stats
    rejected, malformed = stats.rejected, stats.malformed
    link = container.device_link
    assert isinstance(link, InProcessLink)
    prefix = container.settings.mqtt_topic_prefix
    for n in range(5):
        link.route(up_topic(prefix, f"JUNK-{n}"), b'{"not": "a message"}')
    for n in range(10):  # six reach the database (the rate), four are refused from memory
        _send_hello(container, f"GUESSER-{n}", _wrong(code, n))
    eventually(lambda: stats.rejected - rejected >= 10 and stats.malformed - malformed >= 5)
    # A refused hwId's lease is given up right after its refusal is counted.
    eventually(lambda: leased_hw_ids(container) == {"SIM-REAL"})


def test_a_gateway_task_that_ignores_its_cancel_does_not_hang_the_stop(
    container: Container, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(device_gateway, "STOP_WAIT_SECONDS", 0.2)
    gateway = container.devices
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    async def scenario() -> float:
        await gateway.start()
        task = asyncio.create_task(stubborn(), name="stubborn")
        gateway._tasks.append(task)
        await asyncio.sleep(0)
        started = time.monotonic()
        await gateway.stop()
        took = time.monotonic() - started
        release.set()
        task.cancel()
        await task
        return took

    assert asyncio.run(scenario()) < 2.0
    assert "gateway task stubborn did not stop" in caplog.text
