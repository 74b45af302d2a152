"""Webhooks end to end on both engines: admin API, publishing, signed delivery to a real receiver,
ordering and retries, the delivery log, secret rotation and SSRF refusal."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event
from starlette.testclient import TestClient

from keyautomat.adapters import webhook_sender
from keyautomat.adapters.webhook_sender import HttpWebhookSender
from keyautomat.bootstrap import Container
from keyautomat.client import ApiError, Client
from keyautomat.config import Settings
from keyautomat.domain import webhooks as wh
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import outbox, webhooks
from keyautomat.service_layer.clock import ManualClock
from tests.conftest import Tenant, make_tenant
from tests.integration.webhook_support import (
    ALL_TYPES,
    admin,
    drain,
    fetched,
    live,
    publish,
    subscribe,
)
from tests.webhook_receiver import Receiver, running_receiver


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # A local receiver on 127.0.0.1 over http: the on-premises switch of gaps.md G8.
    return Settings(
        database_url=database_url,
        secret_key=Fernet.generate_key().decode(),
        secret_key_file=tmp_path / "unused.key",
        rate_limit_per_second=0,
        db_threads=4,
        webhooks_allow_private=True,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def worker(container: Container, clock: ManualClock) -> OutboxWorker:
    return OutboxWorker(container.db, container.dispatcher, clock, worker_id="w1", batch_size=20)


# -- subscriptions --------------------------------------------------------------


def test_create_answers_the_secret_once_and_get_shows_only_its_last_four(
    acme: Tenant, http: TestClient, receiver: Receiver
) -> None:
    api = admin(acme, http)
    created = subscribe(api, receiver, acme.unit_id, ["key-status"], activate=False)
    assert created["secret"].startswith("whsec_")
    assert created["state"] == "pending"
    shown = api.get(f"/admin/webhooks/{created['id']}")
    assert "secret" not in shown
    assert shown["secretLast4"] == created["secret"][-4:]
    assert shown["eventTypes"] == ["key-status"]
    listed = api.get("/admin/webhooks")
    assert [s["id"] for s in listed["data"]] == [created["id"]]
    assert "secret" not in listed["data"][0]


def test_subscriptions_are_scoped_like_v2(
    container: Container, http: TestClient, acme: Tenant, receiver: Receiver
) -> None:
    other = make_tenant(container, http, name="Other Housing")
    created = subscribe(admin(acme, http), receiver, acme.unit_id, activate=False)
    with pytest.raises(ApiError) as err:
        admin(other, http).get(f"/admin/webhooks/{created['id']}")
    assert err.value.status_code == 404
    assert admin(other, http).get("/admin/webhooks")["data"] == []
    with pytest.raises(ApiError) as err:
        admin(other, http).post(
            "/admin/webhooks",
            {
                "name": "x",
                "url": receiver.url,
                "organizationUnitId": acme.unit_id,
                "eventTypes": ["key-status"],
            },
        )
    assert err.value.status_code == 400


def test_bad_input_is_refused_with_the_field_named(
    acme: Tenant, http: TestClient, receiver: Receiver
) -> None:
    api = admin(acme, http)
    body = {"name": "x", "url": receiver.url, "organizationUnitId": acme.unit_id}
    response = api.request("POST", "/admin/webhooks", {**body, "eventTypes": ["key-stolen"]})
    assert response.status_code == 400
    assert response.json()["message"][0].startswith("eventTypes: unknown event type")
    response = api.request(
        "POST", "/admin/webhooks", {**body, "url": "ftp://x/", "eventTypes": ["key-status"]}
    )
    assert response.status_code == 400
    assert response.json()["message"] == ["url: must be an https:// URL"]


def test_the_test_delivery_activates_only_when_every_type_got_a_2xx(
    container: Container, acme: Tenant, http: TestClient, receiver: Receiver, clock: ManualClock
) -> None:
    api = admin(acme, http)
    created = subscribe(api, receiver, acme.unit_id, activate=False)
    receiver.plan = lambda r: 500 if r.headers["webhook-event-type"] == "device-alarm" else None
    report = api.post(f"/admin/webhooks/{created['id']}/test")
    assert report["success"] is False
    assert report["state"] == "pending"
    by_type = {r["eventType"]: r for r in report["results"]}
    assert set(by_type) == set(ALL_TYPES)
    assert by_type["device-alarm"]["statusCode"] == 500
    assert by_type["key-status"]["success"] is True
    # Every test delivery verified with the library and used the placeholders.
    assert all(r.verified for r in receiver.received)
    assert {r.payload["data"]["deviceId"] for r in receiver.received} == {"000000"}
    # Nothing live is queued before activation.
    assert publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1)) == []

    receiver.plan = lambda r: None
    assert api.post(f"/admin/webhooks/{created['id']}/test")["state"] == "active"
    assert len(publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))) == 1


# -- publishing and delivery ----------------------------------------------------


def test_a_published_event_reaches_the_receiver_signed_and_byte_exact(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    subscribe(admin(acme, http), receiver, acme.unit_id)
    (webhook_id,) = publish(container, clock, acme.unit_id, "key-status", fetched("000111", 4))
    assert drain(worker) == 1
    delivery = receiver.accepted[-1]
    assert delivery.verified
    assert delivery.webhook_id == webhook_id
    assert webhook_id.startswith("msg_")
    assert delivery.headers["webhook-event-type"] == "key-status"
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.payload == {
        "specVersion": "1",
        "type": "key-status",
        "occurredAt": wh.format_time(clock.now() - timedelta(seconds=1)),
        "createdAt": wh.format_time(clock.now()),
        "organizationUnitId": acme.unit_id,
        "data": {
            "state": "key-fetched",
            "storageType": "device",
            "deviceId": "000111",
            "lockerIndex": 4,
            "keyId": "k-1",
            "contractId": "c-1",
            "contractObjectId": "c-1",
        },
    }


def test_events_of_descendant_units_are_delivered_and_others_are_not(
    container: Container,
    operator: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    child = make_tenant(container, http, name="Child", parent_id=operator.unit_id)
    sibling = make_tenant(container, http, name="Elsewhere")
    subscribe(admin(operator, http), receiver, operator.unit_id, ["key-status", "device-alarm"])
    publish(container, clock, child.unit_id, "key-status", fetched("000111", 1))
    publish(container, clock, sibling.unit_id, "key-status", fetched("000222", 1))
    code = wh.code_entered_data(code_type="right-access-code", code="1", device_id="000111")
    assert publish(container, clock, child.unit_id, "code-entered", code) == []
    drain(worker)
    assert [(p["organizationUnitId"], p["type"]) for p in live(receiver)] == [
        (child.unit_id, "key-status")
    ]


def test_removing_an_event_type_drops_its_queued_deliveries_at_once(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    api = admin(acme, http)
    sub = subscribe(api, receiver, acme.unit_id, ["key-status", "device-alarm"])
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    alarm = wh.device_alarm_data(
        alarm_type="DEVICE_MOVED",
        state="activated",
        device_id="000111",
        start=clock.now(),
        end=None,
        acknowledged=False,
    )
    publish(container, clock, acme.unit_id, "device-alarm", alarm)
    updated = api.patch(f"/admin/webhooks/{sub['id']}", {"eventTypes": ["device-alarm"]})
    assert updated["eventTypes"] == ["device-alarm"]
    assert updated["state"] == "active"
    drain(worker)
    assert [p["type"] for p in live(receiver)] == ["device-alarm"]
    assert publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1)) == []


def test_a_new_url_is_verified_first_and_refused_when_a_test_fails(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    api = admin(acme, http)
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    with running_receiver(secrets=list(receiver.secrets), plan=lambda r: 503) as broken:
        response = api.request("PATCH", f"/admin/webhooks/{sub['id']}", {"url": broken.url})
        assert response.status_code == 400
        assert "HTTP 503" in response.json()["message"][0]
        assert len(broken.received) == 1
    assert api.get(f"/admin/webhooks/{sub['id']}")["url"] == receiver.url

    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    with running_receiver(secrets=list(receiver.secrets)) as new_home:
        moved = api.patch(f"/admin/webhooks/{sub['id']}", {"url": new_home.url})
        assert moved["url"] == new_home.url
        drain(worker)  # the queued delivery goes to the new URL
        assert [p["data"]["deviceId"] for p in live(new_home)] == ["000111"]
    assert live(receiver) == []


def test_deleting_a_subscription_cancels_what_it_had_queued(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    api = admin(acme, http)
    sub = subscribe(api, receiver, acme.unit_id)
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    api.delete(f"/admin/webhooks/{sub['id']}")
    assert drain(worker) == 0
    assert live(receiver) == []
    with pytest.raises(ApiError):
        api.get(f"/admin/webhooks/{sub['id']}")


def test_a_subscription_belongs_to_its_unit_and_outlives_the_account_that_created_it(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    colleague = admin(acme, http).post(
        "/v2/serviceAccounts",
        {"organizationUnitId": acme.unit_id, "name": "Colleague", "role": "admin"},
    )
    creator = Client("http://testserver", colleague["id"], colleague["privateKey"], http=http)
    sub = subscribe(creator, receiver, acme.unit_id, ["key-status"])
    admin(acme, http).delete(f"/v2/serviceAccounts/{colleague['id']}")
    assert admin(acme, http).get(f"/admin/webhooks/{sub['id']}")["state"] == "active"
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    assert drain(worker) == 1
    assert [p["type"] for p in live(receiver)] == ["key-status"]


# -- ordering and retries -------------------------------------------------------


def test_a_failing_delivery_holds_its_lane_while_other_lanes_flow(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    subscribe(admin(acme, http), receiver, acme.unit_id, ["key-status"])
    failures = {"n": 3}

    def plan(r: Any) -> int | None:
        if r.payload["data"]["deviceId"] == "000111" and failures["n"] > 0:
            failures["n"] -= 1
            return 503
        return None

    receiver.plan = plan
    first = publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    publish(container, clock, acme.unit_id, "key-status", fetched("000222", 1))
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 2))
    publish(container, clock, acme.unit_id, "key-status", fetched("000222", 2))
    drain(worker)
    # Device 000222 flowed; 000111 waits behind its failed head.
    assert [(p["data"]["deviceId"], p["data"]["lockerIndex"]) for p in live(receiver)] == [
        ("000222", 1),
        ("000222", 2),
    ]
    for wait in (5, 15, 30):
        clock.advance(timedelta(seconds=wait))
        drain(worker)
    lane = [r for r in receiver.received if r.payload["data"]["deviceId"] == "000111"]
    # Three refusals and then the success, all with the same webhook-id, then the next one.
    assert [r.status for r in lane] == [503, 503, 503, 200, 200]
    assert {r.webhook_id for r in lane[:4]} == set(first)
    assert [r.payload["data"]["lockerIndex"] for r in lane] == [1, 1, 1, 1, 2]
    # Each attempt was signed afresh and verified.
    assert all(r.verified for r in lane)


def test_a_receiver_down_for_the_whole_schedule_fails_the_delivery_and_frees_the_lane(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    api = admin(acme, http)
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    receiver.plan = lambda r: 500
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 2))
    drain(worker)
    for wait in webhooks.RETRY_DELAYS:
        clock.advance(wait)
        drain(worker)
    deliveries = api.get(f"/admin/webhooks/{sub['id']}/deliveries")
    assert deliveries[0]["status"] == "failed"
    assert deliveries[0]["attempts"] == 20
    # The lane is free: the second delivery has had its first attempt.
    assert deliveries[1]["attempts"] >= 1
    shown = api.get(f"/admin/webhooks/{sub['id']}")
    assert shown["state"] == "active"
    assert shown["lastDelivery"]["statusCode"] == 500
    assert shown["lastDelivery"]["nextAttemptAt"] is not None
    detail = api.get(f"/admin/webhooks/{sub['id']}/deliveries/{deliveries[0]['id']}")
    assert [a["attempt"] for a in detail["attemptLog"]] == list(range(1, 21))
    assert all(a["statusCode"] == 500 and a["error"] == "HTTP 500" for a in detail["attemptLog"])
    assert all(a["latencyMs"] >= 0 for a in detail["attemptLog"])

    # Recovery sends the failed one again, with its webhook-id, once.
    receiver.plan = lambda r: None
    since = wh.format_time(clock.now() - timedelta(days=1))
    recovered = api.post(f"/admin/webhooks/{sub['id']}/recover", {"since": since})
    assert recovered["count"] == 1
    assert recovered["data"][0]["webhookId"] == deliveries[0]["webhookId"]
    assert api.post(f"/admin/webhooks/{sub['id']}/recover", {"since": since})["count"] == 0
    clock.advance(timedelta(hours=1))
    drain(worker)
    ids = [r.webhook_id for r in receiver.accepted if r.payload["data"]["deviceId"] == "000111"]
    assert ids == [deliveries[1]["webhookId"], deliveries[0]["webhookId"]]


def test_redelivering_one_delivery_sends_it_again_with_the_same_id(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    api = admin(acme, http)
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    drain(worker)
    (done,) = api.get(f"/admin/webhooks/{sub['id']}/deliveries")
    assert done["status"] == "done"
    again = api.post(f"/admin/webhooks/{sub['id']}/deliveries/{done['id']}/redeliver")
    assert again["webhookId"] == done["webhookId"]
    assert again["status"] == "pending"
    clock.advance(timedelta(minutes=1))  # the API stamps it with the system clock
    drain(worker)
    bodies = [r.body for r in receiver.accepted if r.webhook_id == done["webhookId"]]
    assert len(bodies) == 2
    assert bodies[0] == bodies[1]
    log = api.get(f"/admin/webhooks/{sub['id']}/attempts")
    assert [a["test"] for a in log].count(False) == 2


# -- secret rotation ------------------------------------------------------------


def test_after_rotation_both_secrets_sign_for_24_hours(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    api = admin(acme, http)
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    old_secret = receiver.secrets[0]
    rotated = api.post(f"/admin/webhooks/{sub['id']}/rotate-secret")
    assert rotated["secret"] != old_secret
    assert rotated["secretLast4"] == rotated["secret"][-4:]
    container.webhooks.clock = clock  # judge the 24 hours on the test's clock
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    drain(worker)
    signature = receiver.accepted[-1].headers["webhook-signature"]
    assert signature.count("v1,") == 2
    # A receiver that only knows the old secret still accepts it...
    receiver.secrets = [old_secret]
    receiver.received.clear()
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 2))
    drain(worker)
    assert receiver.received[-1].verified
    # ...until the overlap ends; then only the new one signs.
    clock.advance(timedelta(hours=25))
    receiver.secrets = [rotated["secret"]]
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 3))
    drain(worker)
    assert receiver.received[-1].verified
    assert receiver.received[-1].headers["webhook-signature"].count("v1,") == 1


# -- SSRF -------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "10.20.30.40", "169.254.169.254", "::1"])
def test_urls_resolving_to_private_addresses_are_refused_when_saved_without_echoing_the_address(
    container: Container, acme: Tenant, http: TestClient, address: str
) -> None:
    async def resolve(_host: str, _port: int) -> list[str]:
        return [address]

    container.webhooks.sender = HttpWebhookSender(allow_private=False, resolve=resolve)
    response = admin(acme, http).request(
        "POST",
        "/admin/webhooks",
        {
            "name": "x",
            "url": "https://hooks.example.com/in",
            "organizationUnitId": acme.unit_id,
            "eventTypes": ["key-status"],
        },
    )
    assert response.status_code == 400
    assert response.json()["message"] == [
        "url: host 'hooks.example.com' is not a publicly reachable address"
    ]
    assert address not in response.text


def test_a_host_that_rebinds_to_loopback_after_saving_is_refused_at_delivery(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    api = admin(acme, http)
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    answers = {"hooks.example.com": ["93.184.216.34"]}

    async def resolve(host: str, _port: int) -> list[str]:
        return answers[host]

    container.webhooks.sender = HttpWebhookSender(allow_private=False, resolve=resolve)
    # Saved while the name pointed at a public address (the test delivery cannot
    # reach it, so the row is moved into place behind the API's back)...
    container.db.transaction(
        lambda s: s.execute(
            webhooks.subs.update()
            .where(webhooks.subs.c.id == sub["id"])
            .values(url=f"https://hooks.example.com:{receiver.port}/hook")
        )
    )
    # ...then the name rebinds to the loopback receiver.
    answers["hooks.example.com"] = ["127.0.0.1"]
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    drain(worker)
    assert live(receiver) == []
    (attempt,) = [a for a in api.get(f"/admin/webhooks/{sub['id']}/attempts") if not a["test"]]
    assert attempt["error"] == (
        "refused: host 'hooks.example.com' is not a publicly reachable address"
    )
    assert attempt["statusCode"] is None


def test_the_connection_goes_to_the_vetted_address_with_the_original_host_header(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    async def resolve(host: str, _port: int) -> list[str]:
        assert host == "receiver.test"
        return ["127.0.0.1"]

    container.webhooks.sender = HttpWebhookSender(allow_private=True, resolve=resolve)
    api = admin(acme, http)
    created = api.post(
        "/admin/webhooks",
        {
            "name": "named",
            "url": f"http://receiver.test:{receiver.port}/hook",
            "organizationUnitId": acme.unit_id,
            "eventTypes": ["code-entered"],
        },
    )
    receiver.secrets.append(created["secret"])
    assert api.post(f"/admin/webhooks/{created['id']}/test")["success"] is True
    assert receiver.received[-1].headers["host"] == f"receiver.test:{receiver.port}"


def test_outbox_rows_of_webhooks_sit_in_per_source_lanes(
    container: Container, acme: Tenant, http: TestClient, receiver: Receiver, clock: ManualClock
) -> None:
    sub = subscribe(admin(acme, http), receiver, acme.unit_id)
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    manual = wh.key_status_data(
        state="key-returned", key_id="mk-9", contract_id="c", contract_object_id="c"
    )
    publish(container, clock, acme.unit_id, "key-status", manual)
    rows = container.db.transaction(lambda s: outbox.read(s, kinds=[webhooks.KIND]))
    assert [r.lane for r in rows] == [
        f"webhook:{sub['id']}:key-status:000111",
        f"webhook:{sub['id']}:key-status:mk-9",
    ]


def test_a_hanging_receiver_holds_back_only_its_own_deliveries(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    api = admin(acme, http)
    answer = threading.Event()
    with running_receiver() as hanging:
        subscribe(api, receiver, acme.unit_id, ["key-status"])
        subscribe(api, hanging, acme.unit_id, ["key-status"])
        # Live deliveries to the second receiver get no answer until the test says so.
        hanging.plan = lambda _r: None if answer.wait(30) else 503
        for locker in (1, 2, 3):
            publish(container, clock, acme.unit_id, "key-status", fetched("000111", locker))
        worker = OutboxWorker(container.db, container.dispatcher, clock, worker_id="w1")

        async def scenario() -> list[Any]:
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            try:
                await until(lambda: len(live(receiver)) == 3)
                meanwhile = live(hanging)
                answer.set()
                await until(lambda: len(live(hanging)) == 3)
            finally:
                answer.set()
                stop.set()
                await asyncio.wait_for(task, timeout=20)
                await container.webhooks.aclose()
            return meanwhile

        meanwhile = asyncio.run(scenario())
    # The healthy receiver got its lane in full while the other had not answered once...
    assert meanwhile == []
    assert [p["data"]["lockerIndex"] for p in live(receiver)] == [1, 2, 3]
    # ...and the hanging one still gets every event, in its lane's order.
    assert [p["data"]["lockerIndex"] for p in live(hanging)] == [1, 2, 3]


def test_deliveries_waiting_for_a_busy_receiver_leave_the_workers_places_to_the_others(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One request at a time per receiver and two places in the worker: the hanging
    # receiver's second lane waits for its turn without taking the healthy one's place.
    monkeypatch.setattr(webhook_sender, "MAX_CONNECTIONS_PER_RECEIVER", 1)
    api = admin(acme, http)
    answer = threading.Event()
    with running_receiver() as hanging:
        subscribe(api, receiver, acme.unit_id, ["key-status"])
        subscribe(api, hanging, acme.unit_id, ["key-status"])
        hanging.plan = lambda _r: None if answer.wait(30) else 503
        for device in ("000111", "000222", "000333"):
            publish(container, clock, acme.unit_id, "key-status", fetched(device, 1))
        worker = OutboxWorker(
            container.db, container.dispatcher, clock, worker_id="w1", max_in_flight=2
        )

        async def scenario() -> list[Any]:
            stop = asyncio.Event()
            task = asyncio.create_task(worker.run(stop))
            try:
                await until(lambda: len(live(receiver)) == 3)
                meanwhile = live(hanging)
                answer.set()
                await until(lambda: len(live(hanging)) == 3)
            finally:
                answer.set()
                stop.set()
                await asyncio.wait_for(task, timeout=20)
                await container.webhooks.aclose()
            return meanwhile

        meanwhile = asyncio.run(scenario())
    assert meanwhile == []
    rows = container.db.transaction(lambda s: outbox.read(s, kinds=[webhooks.KIND]))
    # Every delivery was made once: waiting for a turn was no attempt.
    assert [(r.status, r.attempts) for r in rows] == [("done", 1)] * 6


def test_a_webhook_row_without_a_subscription_fails_alone_and_the_batch_is_still_claimed(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    subscribe(admin(acme, http), receiver, acme.unit_id, ["key-status"])
    container.db.transaction(
        lambda s: outbox.enqueue(s, webhooks.KIND, {"eventType": "key-status"}, now=clock.now())
    )
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    drain(worker)
    assert [p["data"]["deviceId"] for p in live(receiver)] == ["000111"]
    bad, good = container.db.transaction(lambda s: outbox.read(s, kinds=[webhooks.KIND]))
    assert (good.status, bad.status, bad.attempts) == ("done", "pending", 1)
    assert bad.last_error == "KeyError: 'subscriptionId'"


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def test_a_batch_of_deliveries_costs_the_same_statements_whatever_its_size(
    container: Container,
    acme: Tenant,
    http: TestClient,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    api = admin(acme, http)
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    # Deliveries for locker 2 fail: they must not hold back the others of their batch.
    receiver.plan = lambda r: 503 if r.payload["data"]["lockerIndex"] == 2 else None
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    def one_pass(devices: list[str]) -> int:
        """Statements of one pass (claim, deliver, record) over one event per device."""
        for n, device in enumerate(devices):
            publish(container, clock, acme.unit_id, "key-status", fetched(device, 1 + n % 2))

        async def run() -> int:
            try:
                return await worker.run_once()
            finally:
                await container.webhooks.aclose()

        statements.clear()
        event.listen(container.db.engine, "before_cursor_execute", count)
        try:
            assert asyncio.run(run()) == len(devices)  # a device is a lane: all in one batch
        finally:
            event.remove(container.db.engine, "before_cursor_execute", count)
        return len(statements)

    assert one_pass(["000101", "000102"]) == one_pass([f"00020{n}" for n in range(6)])
    # Every attempt was logged and counted, the failed ones too.
    attempts = api.get(f"/admin/webhooks/{sub['id']}/attempts")
    live_attempts = [a for a in attempts if not a["test"]]
    assert sorted(a["statusCode"] for a in live_attempts) == [200] * 4 + [503] * 4
    health = api.get(f"/admin/webhooks/{sub['id']}")["health"]
    assert health["delivered"] == 4
    assert health["lastFailureAt"] is not None
    rows = container.db.transaction(lambda s: outbox.read(s, kinds=[webhooks.KIND]))
    assert sorted(r.status for r in rows) == ["done"] * 4 + ["pending"] * 4
