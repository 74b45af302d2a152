"""Helpers for device tests: simulated automats on the app's own event loop, and waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import select
from starlette.testclient import TestClient

from keyautomat.adapters.device_links import Link
from keyautomat.adapters.orm_devices import device_alarms
from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.simulator import SimulatedAutomat
from tests.conftest import Tenant

T = TypeVar("T")

FAST_DEVICE_SETTINGS: dict[str, Any] = {
    "device_ack_timeout_seconds": 0.5,
    "device_proximity_seconds": 1.0,
    "device_heartbeat_seconds": 0.2,
    "device_offline_after_seconds": 1.0,
    "device_sync_interval_seconds": 0.1,
}


def eventually(check: Callable[[], T], *, timeout: float = 5.0, interval: float = 0.01) -> T:
    """Poll ``check`` until it returns something truthy (or stops raising AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def install(
    tenant: Tenant, *, product: str = "key20", name: str = "Mainstreet 1"
) -> dict[str, Any]:
    automat: dict[str, Any] = tenant.api.post(
        "/automats/install",
        {
            "name": name,
            "address": "Mannerheimintie 1",
            "postalCode": "00100",
            "postalOffice": "Helsinki",
            "timezone": "Europe/Helsinki",
            "product": product,
        },
    )
    return automat


def alarm_types(container: Container, automat_id: str) -> list[str]:
    """The types of the automat's alarms, oldest first (the device's and the server's own)."""
    return container.db.transaction(
        lambda s: list(
            s.scalars(
                select(device_alarms.c.alarm_type)
                .where(device_alarms.c.automat_id == automat_id)
                .order_by(device_alarms.c.started_at, device_alarms.c.id)
            )
        )
    )


def admin_client(tenant: Tenant, http: TestClient) -> Client:
    """The tenant's signing client for ``/admin`` (outside ``/v2``)."""
    return Client("http://testserver", tenant.account_id, tenant.private_key, http=http)


class Simulators:
    """Runs simulated automats as tasks on the loop of the app under test."""

    def __init__(self, http: TestClient, container: Container, link: Link | None = None) -> None:
        assert http.portal is not None, "use inside the http fixture's lifespan"
        self.portal = http.portal
        self.container = container
        self.link = link or container.devices.link  # the link the gateway listens on
        self.running: list[tuple[SimulatedAutomat, Future[Any]]] = []

    def start(self, **kwargs: Any) -> SimulatedAutomat:
        kwargs.setdefault("prefix", self.container.settings.mqtt_topic_prefix)
        kwargs.setdefault("resend_seconds", 0.5)
        kwargs.setdefault("tick_seconds", 0.02)
        sim = SimulatedAutomat(link=self.link, **kwargs)
        self.running.append((sim, self.portal.start_task_soon(sim.run)))
        return sim

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func`` (sync or async) on the app's loop and return its result."""
        return self.portal.call(func, *args)

    def stop_all(self) -> None:
        for sim, future in self.running:
            self.portal.call(sim.stop)
            future.cancel()
        self.running.clear()
