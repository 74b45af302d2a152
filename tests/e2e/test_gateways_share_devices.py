"""Several gateway processes on one broker and one PostgreSQL database (issue 13 item 3):
each device is handled by the one gateway holding its lease, and an API process that does
not hold a device hands its sendPincode and cancelSendPincode to the gateway that does.

Each "process" here is a container of its own (engine, pool, event loop, MQTT client) on
the same database and broker; tests/e2e/test_processes.py runs real subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from keyautomat.adapters.device_links import MqttLink
from keyautomat.adapters.orm_devices import device_commands, device_leases
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app
from keyautomat.service_layer.clock import SystemClock
from tests.conftest import Tenant
from tests.contract_helpers import iso
from tests.devices import Simulators, eventually
from tests.e2e.mqtt_support import BROKER, over_mqtt, simulators_on_the_broker
from tests.iloq_helpers import bound_automat, first_key, seed_system

pytestmark = [
    pytest.mark.mqtt,
    # Processes meet through PostgreSQL's LISTEN/NOTIFY; SQLite runs one process.
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return over_mqtt(settings, device_offline_after_seconds=30.0)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    yield from simulators_on_the_broker(http, container)


def another_gateway_process(settings: Settings, name: str) -> tuple[Container, TestClient]:
    """A second process on the same database and broker, with a client id of its own."""
    other = bootstrap(
        settings.model_copy(update={"mqtt_client_id": f"{settings.mqtt_client_id}-{name}"}),
        clock=SystemClock(),
    )
    return other, TestClient(create_app(other), base_url="http://other")


def lease_holder(container: Container, hw_id: str) -> str | None:
    return container.db.transaction(
        lambda s: s.scalar(select(device_leases.c.gateway_id).where(device_leases.c.hw_id == hw_id))
    )


def iloq_contract(tenant: Tenant, automat_id: str, right: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    created: dict[str, Any] = tenant.api.post(
        "/iloq/keycontracts",
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [right],
                "numberOfKeys": 1,
                "keyAutomatId": automat_id,
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=1)),
            }
        },
    )
    return created


def test_only_the_lease_holder_handles_a_device_and_a_stopped_gateway_hands_it_on(
    settings: Settings, container: Container, acme: Tenant, sims: Simulators
) -> None:
    system = seed_system(container, acme.unit_id)
    automat_id, sim, _stock = bound_automat(acme, sims)
    first = container.devices
    assert lease_holder(container, sim.hw_id) == first.gateway_id
    other, other_http = another_gateway_process(settings, "second")
    try:
        with other_http:
            second = other.devices
            # The second gateway hears the device's heartbeats and leaves them alone.
            eventually(lambda: second.stats.not_held >= 3)
            assert second.stats.applied == 0

            sims.call(first.stop)  # a clean stop gives the device up at once
            eventually(lambda: lease_holder(container, sim.hw_id) == second.gateway_id)

            # The API of the first process has no gateway now: sendPincode is routed.
            created = iloq_contract(acme, automat_id, system.front_door)
            code = created["keys"][0]["storageInfo"]["pincode"]
            sent = acme.api.post(f"/automats/{automat_id}/sendPincode", {"pincode": code})
            assert sent == {"success": True, "reason": None}
            eventually(lambda: first_key(acme, created["id"])["status"] == "key-fetched")
            assert second.stats.routed == 1
    finally:
        other.close()


@pytest.fixture
def http(container: Container, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """This process's API; with the parameter "api-only", ``serve --no-gateway``."""
    run_gateway = getattr(request, "param", "all-in-one") != "api-only"
    app = create_app(container, run_gateway=run_gateway)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def gateway_process(settings: Settings) -> Iterator[Container]:
    """The gateway process: ``keyautomat gateway``."""
    other, other_http = another_gateway_process(settings, "gateway")
    try:
        with other_http:
            yield other
    finally:
        other.close()


@pytest.mark.parametrize("http", ["api-only"], indirect=True)
def test_an_api_process_without_a_gateway_sends_and_cancels_prompts_through_the_gateway(
    http: TestClient, gateway_process: Container, container: Container, acme: Tenant
) -> None:
    simulators = Simulators(http, container, link=MqttLink(BROKER))
    try:
        automat_id, sim, _stock = bound_automat(acme, simulators)
        assert lease_holder(container, sim.hw_id) == gateway_process.devices.gateway_id
        send = f"/automats/{automat_id}/sendPincode"
        prompt = {"pincode": "2468", "proximityCheck": True}
        assert acme.api.post(send, prompt) == {"success": True, "reason": None}
        assert simulators.call(lambda: sim.prompt is not None and sim.prompt.code == "2468")
        # The prompt pending in the gateway process makes the automat busy for this one.
        assert acme.api.post(send, {"pincode": "1357"}) == {
            "success": False,
            "reason": "AUTOMAT_BUSY",
        }
        acme.api.post(f"/automats/{automat_id}/cancelSendPincode", {"pincode": "2468"})
        eventually(lambda: simulators.call(lambda: sim.prompt is None))
        assert gateway_process.devices.stats.routed == 3
    finally:
        simulators.stop_all()


@pytest.mark.parametrize("http", ["api-only"], indirect=True)
def test_a_command_no_gateway_takes_up_answers_timeout_and_leaves_nothing_to_run_later(
    http: TestClient, settings: Settings, container: Container, acme: Tenant
) -> None:
    simulators = Simulators(http, container, link=MqttLink(BROKER))
    other, other_http = another_gateway_process(settings, "leaving")
    try:
        with other_http:
            automat_id, _sim, _stock = bound_automat(acme, simulators)
        # The gateway stopped; the automat still counts as online for a while.
        sent = acme.api.post(f"/automats/{automat_id}/sendPincode", {"pincode": "2468"})
        assert sent == {"success": False, "reason": "TIMEOUT"}
        left = container.db.transaction(lambda s: s.scalars(select(device_commands.c.id)).all())
        assert left == []
    finally:
        simulators.stop_all()
        other.close()
