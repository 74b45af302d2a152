"""What webhook tests share: signed admin calls, subscribing a receiver, publishing, draining."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.domain import webhooks as wh
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import webhooks
from keyautomat.service_layer.clock import ManualClock
from tests.conftest import Tenant
from tests.webhook_receiver import Receiver

ALL_TYPES = list(wh.EVENT_TYPES)


def admin(tenant: Tenant, http: TestClient) -> Client:
    return Client("http://testserver", tenant.account_id, tenant.private_key, http=http)


def subscribe(
    api: Client,
    receiver: Receiver,
    unit_id: str,
    types: list[str] | None = None,
    *,
    activate: bool = True,
) -> dict[str, Any]:
    created: dict[str, Any] = api.post(
        "/admin/webhooks",
        {
            "name": "PMS",
            "url": receiver.url,
            "organizationUnitId": unit_id,
            "eventTypes": types or ALL_TYPES,
        },
    )
    receiver.secrets.append(created["secret"])
    if activate:
        assert api.post(f"/admin/webhooks/{created['id']}/test")["state"] == "active"
    return created


def publish(
    container: Container,
    clock: ManualClock,
    unit_id: str,
    event_type: str,
    data: dict[str, Any],
) -> list[str]:
    now = clock.now()
    return container.db.transaction(
        lambda s: webhooks.publish(
            s,
            organization_unit_id=unit_id,
            event_type=event_type,
            data=data,
            occurred_at=now - timedelta(seconds=1),
            now=now,
        )
    )


def fetched(device: str, locker: int, key: str = "k-1") -> dict[str, Any]:
    return wh.key_status_data(
        state="key-fetched",
        device_id=device,
        locker_index=locker,
        key_id=key,
        contract_id="c-1",
        contract_object_id="c-1",
    )


def drain(worker: OutboxWorker) -> int:
    async def run() -> int:
        try:
            return await worker.drain()
        finally:
            for route in worker.dispatcher.routes.values():
                owner = getattr(route.handler, "__self__", None)
                if owner is not None:
                    await owner.aclose()

    return asyncio.run(run())


def live(receiver: Receiver) -> list[Any]:
    """Accepted live deliveries (test deliveries carry device 000000)."""
    return [p for p in receiver.payloads() if p["data"].get("deviceId") != "000000"]
