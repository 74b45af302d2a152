"""Helpers for device tests: simulated automats on the app's own event loop, and waiting."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from starlette.testclient import TestClient

from keyautomat.adapters.device_links import Link
from keyautomat.adapters.device_protocol import (
    Data,
    LockerInventory,
    LockerState,
    Message,
    decode_from_server,
    down_topic,
    encode,
    new_message_id,
    up_topic,
)
from keyautomat.adapters.orm_devices import device_alarms
from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.simulator import SimKey, SimulatedAutomat
from tests.conftest import Tenant
from tests.services import simulator_client_id

T = TypeVar("T")

# How long a test waits for a simulator's welcome, or for the server to acknowledge its
# events. Each takes milliseconds; the margin is for stalls a test has no part in: CI
# twice saw one of 5+ s on PostgreSQL just after a bind (2026-12-01, not yet explained;
# docs/performance/test-suite.md), where a 5 s wait failed a test with nothing wrong. A
# wait that succeeds costs no more.
BIND_SECONDS = 30.0

FAST_DEVICE_SETTINGS: dict[str, Any] = {
    "device_ack_timeout_seconds": 0.5,
    "device_proximity_seconds": 1.0,
    "device_heartbeat_seconds": 0.2,
    "device_offline_after_seconds": 1.0,
    "device_sync_interval_seconds": 0.1,
}


def eventually(
    check: Callable[[], T], *, timeout: float = BIND_SECONDS, interval: float = 0.01
) -> T:
    """Poll ``check`` until it returns something truthy (or stops raising AssertionError);
    as long as a bind may take on a loaded machine."""
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
        kwargs.setdefault("client_id", simulator_client_id(kwargs["hw_id"]))
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


def bound_key30(
    tenant: Tenant, sims: Simulators, keys: Sequence[SimKey]
) -> tuple[dict[str, Any], SimulatedAutomat]:
    """A key30 installed (the answer, with its installation pincode) and bound, with the
    mechanical ``keys`` registered and stocked in lockers 0, 1, ...; and its simulator."""
    automat = install(tenant, product="key30")
    for key in keys:
        tenant.api.post(
            "/mechanical/keys",
            {
                "id": key.id,
                "rfidHex": key.rfid,
                "away": True,
                "selectedStorage": {"automatId": automat["id"]},
            },
        )
    sim = sims.start(
        hw_id=f"SIM-{automat['id']}",
        product="key30",
        locker_count=4,
        installation_pincode=automat["installationPincode"],
    )
    sims.call(sim.stock, list(keys))
    sims.call(sim.wait_bound, BIND_SECONDS)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    last = keys[-1].id
    eventually(lambda: tenant.api.get(f"/mechanical/keys/{last}")["storage"] is not None)
    return automat, sim


# What a test publishes as a device: ``(type, data, token)``, sent now under a fresh id,
# or a payload made with ``encode`` (to choose the id or the time, or to send junk).
Outgoing = tuple[str, Data, str | None] | bytes


async def exchange(
    link: Link,
    prefix: str,
    hw_id: str,
    messages: Sequence[Outgoing],
    *,
    answers: int,
    listen: bool = True,
    timeout: float = 20.0,
) -> list[Message]:
    """Publish ``messages`` on ``hw_id``'s up topic as anyone with a broker login could, and
    collect what the server sends down until ``answers`` acks or refusals of them arrived
    (then half a second more for anything else)."""
    async with link.connect(f"other-{uuid.uuid4().hex[:8]}") as connection:
        if listen:
            await connection.subscribe(down_topic(prefix, hw_id))
        sent: set[str] = set()
        for outgoing in messages:
            if isinstance(outgoing, bytes):
                payload = outgoing
            else:
                type_, data, token = outgoing
                payload = encode(
                    type_, data, hw_id=hw_id, occurred_at=datetime.now(UTC), token=token
                )
            sent.add(str(json.loads(payload)["id"]))
            await connection.publish(up_topic(prefix, hw_id), payload)
        received: list[Message] = []
        if not listen:
            return received
        answered = 0
        stream = connection.messages()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                _topic, payload = await asyncio.wait_for(anext(stream), deadline - loop.time())
            except TimeoutError:
                break
            message = decode_from_server(payload)
            received.append(message)
            if message.type in ("rejected", "ack") and getattr(message.data, "ref", None) in sent:
                answered += 1
            if answered >= answers or message.type == "welcome":
                deadline = min(deadline, loop.time() + 0.5)
        return received


def as_device(
    sim: SimulatedAutomat, type_: str, data: Data, *, at: datetime | None = None
) -> bytes:
    """An event of ``sim``, with its credential, as its firmware would send it."""
    return encode(
        type_,
        data,
        hw_id=sim.hw_id,
        occurred_at=at or datetime.now(UTC),
        token=sim.token,
        message_id=new_message_id(),
    )


def answer_to(answers: list[Message], payload: bytes) -> tuple[str, str | None]:
    """The server's one answer to ``payload``: ``("ack", None)`` or ``("rejected", reason)``."""
    sent = id_of(payload)
    found = [
        (m.type, getattr(m.data, "reason", None))
        for m in answers
        if m.type in ("ack", "rejected") and getattr(m.data, "ref", None) == sent
    ]
    assert len(found) == 1, found
    return found[0]


def id_of(payload: bytes) -> str:
    return str(json.loads(payload)["id"])


def inventory_of(
    indices: Sequence[int], inside: dict[int, SimKey] | None = None
) -> LockerInventory:
    """A ``locker-inventory`` of the lockers ``indices``, with the keys ``inside`` them."""
    inside = inside or {}
    return LockerInventory(
        lockers=[
            LockerState(
                locker_index=i,
                key_inside=i in inside,
                key_id=inside[i].id if i in inside else None,
                key_name=inside[i].name if i in inside else None,
                rfid=inside[i].rfid if i in inside else None,
            )
            for i in indices
        ]
    )
