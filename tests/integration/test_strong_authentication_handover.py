"""Strong authentication end to end: a "2" contract's code at a simulated key30 automat, the
message's link, a login at a real OpenID Connect provider on loopback, and the key
(docs/strong-authentication.md). Nothing is mocked: the notification goes through the
worker to the development sink, the webhooks to a real receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.simulator import SimulatedAutomat
from tests.conftest import Tenant
from tests.contract_helpers import period
from tests.devices import BIND_SECONDS, FAST_DEVICE_SETTINGS, Simulators, admin_client, eventually
from tests.integration.test_mechanical_handover import ROOM, _automat, _key, _synced
from tests.integration.webhook_support import live, subscribe
from tests.oidc_support import (
    CONTACT,
    GUEST,
    PROVIDER_WARNINGS,
    STRANGER,
    Browser,
    Provider,
    link_token,
)
from tests.webhook_receiver import Receiver, running_receiver

pytestmark = PROVIDER_WARNINGS
PATH = "/mechanical/keycontracts"


@pytest.fixture
def settings(settings: Settings, tmp_path: Any) -> Settings:
    return Settings(
        **{
            **settings.model_dump(),
            **FAST_DEVICE_SETTINGS,
            "public_url": "http://testserver/v2",
            "strong_auth_allow_private": True,
            "webhooks_allow_private": True,
            "notify_sink_dir": tmp_path / "sink",
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def _sent(container: Container) -> list[dict[str, Any]]:
    sink = container.settings.notify_sink_dir / "notifications.jsonl"
    return [json.loads(line) for line in sink.read_text().splitlines()]


def _deliver(sims: Simulators, container: Container) -> None:
    worker = OutboxWorker(container.db, container.dispatcher, container.clock)
    sims.call(worker.drain)


def _opens(sims: Simulators, sim: SimulatedAutomat, code: str) -> bool:
    opened: bool = sims.call(sim.enter_code, code)
    return opened


def test_the_code_opens_the_locker_only_after_the_guest_proved_who_they_are(
    container: Container,
    acme: Tenant,
    http: TestClient,
    sims: Simulators,
    provider: Provider,
    receiver: Receiver,
) -> None:
    admin = admin_client(acme, http)
    subscribe(admin, receiver, acme.unit_id, ["contract-update", "key-status"])
    admin.call(
        "PUT",
        f"/admin/organizationunits/{acme.unit_id}/strong-authentication",
        {"enabled": True, "provider": provider.settings()},
    )
    automat_id, sim = _automat(acme, sims)
    start, end = period()
    created = acme.api.post(
        PATH,
        {
            "start": start,
            "end": end,
            "contact": CONTACT,
            "keys": [{"id": ROOM.id}],
            "userVerification": "2",
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]

    # Before the identity is proved the code is not on the automat and opens nothing.
    sims.call(sim.wait_flushed, BIND_SECONDS)
    assert not _synced(sims, sim, code)
    assert not _opens(sims, sim, code)
    _deliver(sims, container)
    [message] = _sent(container)  # contractSignatureRequested, to the contact's email
    assert message["to"] == "John.Doe@example.com"
    assert code not in message["text"]
    link = f"http://testserver/identify/{link_token(message['text'])}"

    browser = Browser(http)
    try:
        # Somebody else with the link proves nothing.
        stranger = browser.log_in(browser.open_link(link), STRANGER)
        assert stranger.status_code == 403
        sims.call(sim.wait_flushed, BIND_SECONDS)
        assert not _synced(sims, sim, code)
        assert not _opens(sims, sim, code)

        confirmed = browser.log_in(browser.open_link(link), GUEST)
        assert confirmed.status_code == 200
        assert code in confirmed.text
        assert "Room 101" in confirmed.text or ROOM.id in confirmed.text
    finally:
        browser.close()

    eventually(lambda: _synced(sims, sim, code))
    assert _opens(sims, sim, code)
    sims.call(sim.take_key, 0)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    eventually(lambda: _key(acme, created["id"])["status"] == "key-fetched")

    _deliver(sims, container)
    updates = [e["data"] for e in live(receiver) if e["type"] == "contract-update"]
    # One at creation, one when the identity was proved (the code now works).
    assert len(updates) == 2
    assert updates[-1]["contractId"] == created["id"]
    assert updates[-1]["pincode"] == code
    assert updates[-1]["deviceId"] == automat_id
    fetched = [e["data"] for e in live(receiver) if e["type"] == "key-status"]
    assert [f["state"] for f in fetched] == ["key-fetched"]
