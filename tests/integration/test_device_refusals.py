"""Refusals over the in-process link: every refusal carries a reason from the protocol's
set, a malformed message is answered naming its field, and the simulated device does
what docs/device-protocol.md ("Refusals") says for each reason."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from keyautomat.adapters.device_links import InProcessLink
from keyautomat.adapters.device_protocol import (
    AlarmEvent,
    Empty,
    LockerEvent,
    Message,
    Rejected,
    RejectReason,
    decode_from_server,
    down_topic,
    encode,
    up_topic,
)
from keyautomat.adapters.orm_devices import device_inbox
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.simulator import SimulatedAutomat
from tests.conftest import Tenant
from tests.devices import BIND_SECONDS, FAST_DEVICE_SETTINGS, Simulators, eventually, install
from tests.integration.test_device_gateway import _add_pincode, _bound, _count
from tests.integration.test_device_gateway_limits import leased_hw_ids


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST_DEVICE_SETTINGS)


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def _link(container: Container) -> InProcessLink:
    link = container.device_link
    assert isinstance(link, InProcessLink)
    return link


async def _exchange(
    container: Container, hw_id: str, payloads: list[bytes], refusals: int
) -> list[Message]:
    """Publish ``payloads`` on ``hw_id``'s up topic, as anyone on the broker could, and
    collect what the server sends down until ``refusals`` ``rejected`` have arrived. The
    gateway handles one device's messages in order, so an answer to an earlier payload
    would arrive before the last refusal."""
    link = _link(container)
    prefix = container.settings.mqtt_topic_prefix
    async with link.connect(f"probe-{uuid.uuid4().hex[:8]}") as connection:
        await connection.subscribe(down_topic(prefix, hw_id))
        for payload in payloads:
            link.route(up_topic(prefix, hw_id), payload)
        received: list[Message] = []
        stream = connection.messages()
        while sum(m.type == "rejected" for m in received) < refusals:
            _topic, payload = await asyncio.wait_for(anext(stream), 5.0)
            received.append(decode_from_server(payload))
        return received


def _refusal(message: Message) -> Rejected:
    assert isinstance(message.data, Rejected)
    return message.data


def _last_refusal(sim: SimulatedAutomat) -> Rejected:
    assert sim.refusals
    return sim.refusals[-1]


def test_a_malformed_event_is_refused_naming_its_field_and_the_device_drops_it_from_its_queue(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat, sim = _bound(acme, sims)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    stats = container.devices.stats
    malformed, errors = stats.malformed, stats.errors
    # A firmware bug: a negative locker index, then an ordinary event behind it.
    bad = sims.call(sim.queue_event, "locker-opened", LockerEvent.model_construct(locker_index=-1))
    sims.call(sim.raise_alarm, "DEVICE_MOVED")

    sims.call(sim.wait_flushed, BIND_SECONDS)  # the bad event is dropped, not resent for ever
    refusal = _last_refusal(sim)
    assert (refusal.reason, refusal.ref, refusal.pointer) == (
        RejectReason.MALFORMED,
        bad,
        "/data/lockerIndex",
    )
    assert refusal.detail
    assert _count(container, device_inbox, automat["id"], message_id=bad) == 0
    assert _count(container, device_inbox, automat["id"], type="alarm-raised") == 1
    assert stats.malformed == malformed + 1
    assert stats.errors == errors
    assert sim.welcomed.is_set()  # the device carries on


def test_a_malformed_message_with_a_readable_id_is_answered_without_a_lease_and_one_without_is_not(
    container: Container, sims: Simulators
) -> None:
    hw_id = "JUNK-WITH-ID"
    stats = container.devices.stats
    unanswered = stats.unanswered
    now = datetime.now(UTC)
    no_id = json.dumps({"v": 1, "id": "x" * 65, "type": "heartbeat"}).encode()
    bad_time = {
        "v": 1,
        "id": "bad-time",
        "type": "heartbeat",
        "occurredAt": "2030-01-01T12:00:00",
        "hwId": hw_id,
    }
    other_device = encode("heartbeat", Empty(), hw_id="SOMEONE-ELSE", occurred_at=now)
    payloads = [b"not json", no_id, json.dumps(bad_time).encode(), other_device]

    answers = sims.call(_exchange, container, hw_id, payloads, 2)

    assert [m.type for m in answers] == ["rejected", "rejected"]
    first, second = (_refusal(m) for m in answers)
    assert (first.reason, first.ref, first.pointer) == (
        RejectReason.MALFORMED,
        "bad-time",
        "/occurredAt",
    )
    assert (second.reason, second.pointer) == (RejectReason.MALFORMED, "/hwId")
    assert stats.unanswered == unanswered + 2
    assert hw_id not in leased_hw_ids(container)  # no database work for junk


def test_a_message_from_an_unknown_device_is_refused_as_unauthenticated(
    container: Container, sims: Simulators
) -> None:
    now = datetime.now(UTC)
    payloads = [
        encode("heartbeat", Empty(), hw_id="NOBODY", occurred_at=now, token="forged"),
        encode(
            "alarm-raised", AlarmEvent(alarm_type="DEVICE_ERROR"), hw_id="NOBODY", occurred_at=now
        ),
    ]
    answers = sims.call(_exchange, container, "NOBODY", payloads, 2)
    assert {_refusal(m).reason for m in answers} == {RejectReason.UNAUTHENTICATED}


def test_a_replaced_device_wipes_its_codes_and_token_and_binds_again_only_with_a_new_code(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat, sim = _bound(acme, sims, hw_id="SIM-REPLACED")
    _add_pincode(container, automat["id"], "424242", 0, "default")
    eventually(lambda: sim.pincodes)
    replaced = acme.api.post(f"/automats/{automat['id']}/replace")
    sims.call(sim.go_offline)
    sims.call(sim.raise_alarm, "DEVICE_MOVED")  # queued while offline, as events are
    sims.call(sim.go_online)

    eventually(lambda: sim.last_rejection == RejectReason.REPLACED)
    assert (sim.token, sim.automat_id, sim.pincodes, dict(sim.outbox)) == (None, None, {}, {})
    assert not sim.welcomed.is_set()
    assert sims.call(sim.enter_code, "424242") is False  # its codes opened nothing more
    assert _count(container, device_inbox, automat["id"], type="alarm-raised") == 0

    # The installer gives the old hardware the automat's new code: it binds afresh.
    sims.call(sim.enter_installation_code, replaced["installationPincode"])
    sims.call(sim.wait_bound, BIND_SECONDS)
    eventually(lambda: [p.code for p in sim.pincodes.values()] == ["424242"])
    assert acme.api.get(f"/automats/{automat['id']}")["hwId"] == "SIM-REPLACED"


def test_an_uninstalled_automats_device_is_told_deactivated_and_wipes_its_codes(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat, sim = _bound(acme, sims)
    _add_pincode(container, automat["id"], "515151", 0, "default")
    eventually(lambda: sim.pincodes)
    acme.api.post(f"/automats/{automat['id']}/uninstall")
    sims.call(sim.raise_alarm, "DEVICE_ERROR")
    eventually(lambda: sim.last_rejection == RejectReason.DEACTIVATED)
    assert (sim.token, sim.pincodes, dict(sim.outbox)) == (None, {}, {})
    assert sims.call(sim.enter_code, "515151") is False


def test_hardware_replaced_while_offline_is_unauthenticated_once_the_new_one_bound_and_wipes_itself(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat, old = _bound(acme, sims, hw_id="SIM-OLD-HW")
    _add_pincode(container, automat["id"], "616161", 0, "default")
    eventually(lambda: old.pincodes)
    sims.call(old.go_offline)
    replaced = acme.api.post(f"/automats/{automat['id']}/replace")
    new = sims.start(
        hw_id="SIM-NEW-HW", locker_count=6, installation_pincode=replaced["installationPincode"]
    )
    sims.call(new.wait_bound, BIND_SECONDS)

    sims.call(old.go_online)  # says hello with a token that no longer names any automat
    eventually(lambda: old.last_rejection == RejectReason.UNAUTHENTICATED)
    assert (old.token, old.pincodes) == (None, {})
    assert sims.call(old.enter_code, "616161") is False
    assert new.welcomed.is_set()


def test_a_device_told_unauthenticated_for_an_event_says_hello_again_and_delivers_its_queue(
    acme: Tenant, sims: Simulators, container: Container
) -> None:
    automat, sim = _bound(acme, sims)
    sims.call(sim.wait_flushed, BIND_SECONDS)
    applied: list[str] = []
    container.devices.observers.append(lambda _automat, message: applied.append(message.id))
    sims.call(sim.raise_alarm, "DEVICE_LOW_POWER")
    sims.call(sim.wait_flushed, BIND_SECONDS)
    hellos = container.devices.stats.by_type.get("hello", 0)
    # Refused as unauthenticated (a server that lost the credential for a moment, say):
    # the device says hello again instead of giving up its automat.
    refusal = Rejected(reason=RejectReason.UNAUTHENTICATED, ref=applied[-1])
    prefix = container.settings.mqtt_topic_prefix
    now = datetime.now(UTC)
    _link(container).route(
        down_topic(prefix, sim.hw_id), encode("rejected", refusal, hw_id=sim.hw_id, occurred_at=now)
    )
    eventually(lambda: container.devices.stats.by_type.get("hello", 0) > hellos)
    sims.call(sim.wait_bound, BIND_SECONDS)
    sims.call(sim.clear_alarm, "DEVICE_LOW_POWER")
    sims.call(sim.wait_flushed, BIND_SECONDS)
    assert sim.token is not None
    assert _count(container, device_inbox, automat["id"], type="alarm-cleared") == 1


def test_a_wrong_installation_code_is_forgotten_until_the_installer_enters_one_again(
    acme: Tenant, sims: Simulators
) -> None:
    automat = install(acme)
    wrong = "000000" if automat["installationPincode"] != "000000" else "111111"
    sim = sims.start(hw_id="SIM-TYPO", installation_pincode=wrong)
    eventually(lambda: sim.last_rejection == RejectReason.WRONG_INSTALLATION_CODE)
    assert sim.installation_pincode is None  # not retried at every reconnection
    sims.call(sim.enter_installation_code, automat["installationPincode"])
    sims.call(sim.wait_bound, BIND_SECONDS)
    assert acme.api.get(f"/automats/{automat['id']}")["hwId"] == "SIM-TYPO"
