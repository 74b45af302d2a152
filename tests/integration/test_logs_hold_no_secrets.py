"""A whole handover logged at DEBUG leaves no pincode, token, signature or contact detail in
the log (docs/operations.md, "Logs")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.simulator import SimKey
from tests.conftest import Tenant
from tests.contract_helpers import period
from tests.devices import BIND_SECONDS, FAST_DEVICE_SETTINGS, Simulators, bound_key30, eventually
from tests.integration.log_capture import Captured, captured_logs

ROOM = SimKey("room-7-key", "Room 7", rfid="1a00e7")
NAME = "Ellen Ripley"
EMAIL = "ellen.ripley@example.com"
PHONE = "+358401234567"
EVERY_MESSAGE = {
    kind: {"sms": True, "email": True}
    for kind in ("contractCreated", "contractKeyFetched", "contractKeyReturned")
}


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={**FAST_DEVICE_SETTINGS, "notify_sink_dir": tmp_path / "sink"}
    )


@pytest.fixture
def logs() -> Iterator[Captured]:
    with captured_logs("debug") as captured:
        yield captured


@pytest.fixture
def signatures(http: TestClient) -> list[str]:
    """Every x-signature the test's requests carry."""
    sent: list[str] = []

    def keep(request: httpx2.Request) -> None:
        if "x-signature" in request.headers:
            sent.append(request.headers["x-signature"])

    http.event_hooks["request"].append(keep)
    return sent


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def test_a_handover_logged_at_debug_holds_no_secret_and_no_personal_data(
    logs: Captured,
    container: Container,
    acme: Tenant,
    sims: Simulators,
    signatures: list[str],
) -> None:
    automat, sim = bound_key30(acme, sims, [ROOM])
    start, end = period()
    contact = {"name": NAME, "email": EMAIL, "phoneNumber": PHONE, "notifications": EVERY_MESSAGE}
    created = acme.api.post(
        "/mechanical/keycontracts",
        {"start": start, "end": end, "contact": contact, "keys": [{"id": ROOM.id}]},
    )
    path = f"/mechanical/keycontracts/{created['id']}"
    pincode = created["keys"][0]["storageInfo"]["pincode"]
    eventually(
        lambda: any(p.code == pincode for p in sims.call(lambda: list(sim.pincodes.values())))
    )
    assert sims.call(sim.enter_code, pincode)
    sims.call(sim.take_key, 0)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(lambda: acme.api.get(path)["keys"][0]["status"] == "key-fetched")
    sims.call(sim.insert_key, 0, ROOM)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(lambda: acme.api.get(path)["keys"][0]["status"] == "key-returned")
    asyncio.run(OutboxWorker(container.db, container.dispatcher, container.clock).drain())

    # The messages went out (to the development sink) with what the log must not hold.
    sent = (container.settings.notify_sink_dir / "notifications.jsonl").read_text()
    assert all(value in sent for value in (pincode, EMAIL, PHONE))
    log = logs.text()
    lines = [json.loads(line) for line in log.splitlines()]
    assert any(line["logger"] == "keyautomat.access" for line in lines)
    assert any("bound to automat" in line["message"] for line in lines)
    assert any("notification (sms) written" in line["message"] for line in lines)
    secrets = {
        "the pincode": pincode,
        "the installation pincode": automat["installationPincode"],
        "the device token": sim.token,
        "the contact's name": NAME,
        "the contact's email": EMAIL,
        "the contact's phone": PHONE,
        "the contact's phone without +": PHONE.lstrip("+"),
        "the private key": acme.private_key.splitlines()[1],
    }
    assert signatures
    secrets.update({f"signature {i}": s for i, s in enumerate(signatures)})
    leaked = {what: value for what, value in secrets.items() if value and value in log}
    assert leaked == {}
