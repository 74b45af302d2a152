"""Webhook health on both engines: a receiver failing too long gets its subscription disabled
and the unit's admins one email (real SMTP on loopback); re-enabling with or without recovery;
counters; attempt-log retention; the admin-only enable endpoint and its input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.domain import webhooks as wh
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import admin_notices, notifications, outbox, webhooks
from keyautomat.service_layer.clock import ManualClock
from keyautomat.service_layer.delivery import Hold
from tests.conftest import Tenant, make_tenant
from tests.integration.notify_support import SmtpServer
from tests.integration.webhook_support import admin, drain, fetched, publish, subscribe
from tests.webhook_receiver import Receiver, running_receiver

ADMIN_EMAIL = "ops@acme.example"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(settings: Settings, smtp: SmtpServer) -> Settings:
    # The receiver is on loopback (gaps.md G8); email goes to the SMTP server.
    return settings.model_copy(
        update={
            "webhooks_allow_private": True,
            "smtp_url": smtp.url,
            "email_from": "keys@example.com",
        }
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def worker(container: Container, clock: ManualClock) -> OutboxWorker:
    # Deliveries, their health and the retention run on the test's clock; the API (which
    # checks request signatures against it) stays on the system clock.
    container.webhooks.clock = clock
    return OutboxWorker(container.db, container.dispatcher, clock, worker_id="w1", batch_size=20)


@pytest.fixture
def api(acme: Tenant, http: TestClient) -> Client:
    api = admin(acme, http)
    settings_path = f"/admin/organizationunits/{acme.unit_id}/notification-settings"
    api.call("PUT", settings_path, {"adminEmail": ADMIN_EMAIL})
    return api


def retry_through_the_schedule(worker: OutboxWorker, clock: ManualClock) -> None:
    """Attempt what is due, then step through every wait of the retry schedule."""
    drain(worker)
    for wait in webhooks.RETRY_DELAYS:
        clock.advance(wait)
        drain(worker)


def shown(api: Client, sub: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = api.get(f"/admin/webhooks/{sub['id']}")
    return result


def notices(container: Container) -> list[outbox.OutboxRow]:
    rows = container.db.transaction(lambda s: outbox.read(s, kinds=[notifications.KIND]))
    return [r for r in rows if admin_notices.NOTICE in r.payload]


def fail_until_disabled(
    container: Container,
    clock: ManualClock,
    worker: OutboxWorker,
    receiver: Receiver,
    unit_id: str,
    *,
    also: list[dict[str, Any]] | None = None,
) -> None:
    """The receiver answers 500: one delivery fails its whole schedule, five days pass, and
    the next one's exhaustion disables the subscription. ``also`` is published halfway
    through that last schedule, so it is still retrying at the disabling."""
    receiver.plan = lambda r: 500
    publish(container, clock, unit_id, "key-status", fetched("000111", 90))
    retry_through_the_schedule(worker, clock)
    clock.advance(timedelta(days=5))
    publish(container, clock, unit_id, "key-status", fetched("000111", 91))
    drain(worker)
    half = len(webhooks.RETRY_DELAYS) // 2
    for step, wait in enumerate(webhooks.RETRY_DELAYS):
        if step == half:
            for data in also or []:
                publish(container, clock, unit_id, "key-status", data)
        clock.advance(wait)
        drain(worker)


# -- disabling --------------------------------------------------------------------


def test_a_receiver_failing_past_the_threshold_is_disabled_and_the_admins_get_one_email(
    container: Container,
    api: Client,
    acme: Tenant,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
    smtp: SmtpServer,
) -> None:
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    receiver.plan = lambda r: 500
    start = clock.now()
    # An event a day, each failing through its whole schedule (about six hours).
    for day in range(5):
        clock.set(start + timedelta(days=day))
        publish(container, clock, acme.unit_id, "key-status", fetched("000111", day))
        retry_through_the_schedule(worker, clock)
        assert shown(api, sub)["state"] == "active"
    clock.set(start + timedelta(days=5))
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 5))
    drain(worker)
    # Failing for five days now, but this delivery still has retries left.
    assert shown(api, sub)["state"] == "active"
    assert notices(container) == []
    for wait in webhooks.RETRY_DELAYS:
        clock.advance(wait)
        drain(worker)

    disabled = shown(api, sub)
    assert disabled["state"] == "disabled"
    assert disabled["disabledAt"] == wh.format_time(clock.now())
    assert disabled["health"] == {
        "delivered": 0,
        "failed": 6,
        "lastSuccessAt": None,
        "lastFailureAt": wh.format_time(clock.now()),
        "failingSince": wh.format_time(start),
        "held": 0,
    }
    (notice,) = notices(container)
    assert notice.payload["notice"] == "webhookSubscriptionDisabled"
    assert notice.payload["recipient"] == ADMIN_EMAIL
    assert notice.status == "done"  # the same drain mailed it
    (mail,) = smtp.messages
    assert mail["To"] == ADMIN_EMAIL
    assert mail["Subject"] == 'Webhook subscription "PMS" disabled'
    text = mail.get_content()
    assert sub["id"] in text
    assert f"/admin/webhooks/{sub['id']}/enable" in text
    assert "HTTP 500" in text
    listed = api.get("/admin/notifications?type=webhookSubscriptionDisabled")["data"]
    assert [(n["recipient"], n["status"], n["contractId"]) for n in listed] == [
        (ADMIN_EMAIL, "sent", None)
    ]

    # New events are kept, not sent; nothing more is mailed.
    attempts_before = len(receiver.received)
    held = [
        publish(container, clock, acme.unit_id, "key-status", fetched(device, 1))[0]
        for device in ("000111", "000222")
    ]
    clock.advance(timedelta(days=2))
    drain(worker)
    assert len(receiver.received) == attempts_before
    assert shown(api, sub)["health"]["held"] == 2
    kept = api.get(f"/admin/webhooks/{sub['id']}/deliveries?status=held")
    assert [(d["webhookId"], d["attempts"], d["nextAttemptAt"]) for d in kept] == [
        (held[0], 0, None),
        (held[1], 0, None),
    ]
    assert len(notices(container)) == 1
    assert len(smtp.messages) == 1


def test_re_enabling_with_recover_delivers_what_it_missed_in_order(
    container: Container,
    api: Client,
    acme: Tenant,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    fail_until_disabled(
        container, clock, worker, receiver, acme.unit_id, also=[fetched("000222", 1)]
    )
    assert shown(api, sub)["state"] == "disabled"
    # The other lane's delivery was retrying at the disabling: it was put aside too.
    (retrying,) = api.get(f"/admin/webhooks/{sub['id']}/deliveries?status=held")
    assert retrying["attempts"] > 0
    # A redelivery asked for while disabled is put aside as well, without an attempt.
    failed = api.get(f"/admin/webhooks/{sub['id']}/deliveries?status=failed")
    again = api.post(f"/admin/webhooks/{sub['id']}/deliveries/{failed[0]['id']}/redeliver")
    attempts_before = len(receiver.received)
    drain(worker)
    assert len(receiver.received) == attempts_before
    missed = [retrying["webhookId"], again["webhookId"]]
    for locker in (2, 3, 4):
        missed += publish(container, clock, acme.unit_id, "key-status", fetched("000222", locker))
    missed += publish(container, clock, acme.unit_id, "key-status", fetched("000333", 1))
    assert shown(api, sub)["health"]["held"] == 6

    receiver.plan = lambda r: None
    clock.advance(timedelta(hours=1))
    enabled = api.post(f"/admin/webhooks/{sub['id']}/enable", {"recover": True})
    assert (enabled["recovered"], enabled["dropped"]) == (6, 0)
    assert enabled["subscription"]["state"] == "active"
    assert enabled["subscription"]["disabledAt"] is None
    assert enabled["subscription"]["health"]["failingSince"] is None
    assert enabled["subscription"]["health"]["held"] == 0
    after = publish(container, clock, acme.unit_id, "key-status", fetched("000222", 5))
    drain(worker)

    got = [(r.webhook_id, r.payload["data"]) for r in receiver.accepted]
    assert set(missed + after) <= {webhook_id for webhook_id, _ in got}
    lane = [data["lockerIndex"] for _, data in got if data["deviceId"] == "000222"]
    assert lane == [1, 2, 3, 4, 5]  # the retrying one, the missed ones, then the new one
    assert shown(api, sub)["health"]["delivered"] == 7


def test_re_enabling_without_recover_drops_what_it_missed_and_a_new_disabling_mails_again(
    container: Container,
    api: Client,
    acme: Tenant,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
    smtp: SmtpServer,
) -> None:
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    fail_until_disabled(container, clock, worker, receiver, acme.unit_id)
    dropped = publish(container, clock, acme.unit_id, "key-status", fetched("000111", 7))

    receiver.plan = lambda r: None
    enabled = api.post(f"/admin/webhooks/{sub['id']}/enable", {"recover": False})
    assert (enabled["recovered"], enabled["dropped"]) == (0, 1)
    assert api.post(f"/admin/webhooks/{sub['id']}/enable")["dropped"] == 0  # already active
    new = publish(container, clock, acme.unit_id, "key-status", fetched("000111", 8))
    drain(worker)
    ids = [p.webhook_id for p in receiver.accepted if p.payload["data"]["deviceId"] != "000000"]
    assert ids == new
    (cancelled,) = api.get(f"/admin/webhooks/{sub['id']}/deliveries?status=cancelled")
    assert cancelled["webhookId"] == dropped[0]
    assert len(smtp.messages) == 1

    # Failing for long again is a new disabling, with its own one email.
    fail_until_disabled(container, clock, worker, receiver, acme.unit_id)
    assert shown(api, sub)["state"] == "disabled"
    assert len(notices(container)) == 2
    assert len(smtp.messages) == 2


def test_a_delivery_held_while_an_admin_enables_the_subscription_is_queued_again(
    container: Container,
    api: Client,
    acme: Tenant,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    fail_until_disabled(container, clock, worker, receiver, acme.unit_id)
    failed = api.get(f"/admin/webhooks/{sub['id']}/deliveries?status=failed")
    again = api.post(f"/admin/webhooks/{sub['id']}/deliveries/{failed[-1]['id']}/redeliver")
    (claimed,) = container.db.transaction(
        lambda s: outbox.claim(
            s,
            worker_id="w1",
            now=clock.now(),
            lease=timedelta(minutes=2),
            limit=1,
            kinds=[webhooks.KIND],
        )
    )
    # The worker's handler sees the subscription disabled...
    with pytest.raises(Hold) as held:
        asyncio.run(container.webhooks.handle(claimed))
    # ...an admin enables it before the worker records that...
    receiver.plan = lambda r: None
    api.post(f"/admin/webhooks/{sub['id']}/enable", {"recover": True})
    record = held.value.record
    assert record is not None

    def record_hold(session: Any) -> None:
        outbox.mark_held(session, claimed.id, "w1", error=held.value.reason)
        record(session)

    container.db.transaction(record_hold)
    # ...and the row goes back to the queue instead of staying aside for good.
    drain(worker)
    assert [r.webhook_id for r in receiver.accepted][-1] == again["webhookId"]


# The race is PostgreSQL's: on SQLite one worker process delivers.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_exhausting_deliveries_at_once_disable_it_once_and_mail_once(
    container: Container,
    api: Client,
    acme: Tenant,
    receiver: Receiver,
    clock: ManualClock,
    smtp: SmtpServer,
) -> None:
    container.webhooks.clock = clock
    container.webhooks.disable_after = timedelta(seconds=1)
    workers = [
        OutboxWorker(container.db, container.dispatcher, clock, worker_id=name, batch_size=3)
        for name in ("w1", "w2")
    ]
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    receiver.plan = lambda r: 500
    for device in range(12):
        publish(container, clock, acme.unit_id, "key-status", fetched(f"{device:06d}", 1))

    async def both_until_idle() -> None:
        try:
            while sum(await asyncio.gather(*(w.run_once() for w in workers))):
                pass
        finally:
            await container.webhooks.aclose()

    asyncio.run(both_until_idle())
    for wait in webhooks.RETRY_DELAYS:
        clock.advance(wait)
        asyncio.run(both_until_idle())

    health = shown(api, sub)
    assert health["state"] == "disabled"
    assert health["health"]["failed"] >= 1
    assert health["health"]["failed"] + health["health"]["held"] == 12
    assert len(notices(container)) == 1
    assert len(smtp.messages) == 1


# -- counters -----------------------------------------------------------------------


def test_counters_show_deliveries_and_the_last_success_and_failure(
    container: Container,
    api: Client,
    acme: Tenant,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
) -> None:
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])
    fresh = shown(api, sub)["health"]
    assert fresh == {
        "delivered": 0,
        "failed": 0,
        "lastSuccessAt": None,
        "lastFailureAt": None,
        "failingSince": None,
        "held": 0,
    }  # test deliveries do not count
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 1))
    publish(container, clock, acme.unit_id, "key-status", fetched("000222", 1))
    drain(worker)
    first_success = clock.now()

    clock.advance(timedelta(minutes=1))
    receiver.plan = lambda r: 503 if r.payload["data"]["deviceId"] == "000333" else None
    publish(container, clock, acme.unit_id, "key-status", fetched("000333", 1))
    drain(worker)
    first_failure = clock.now()
    health = shown(api, sub)["health"]
    assert (health["delivered"], health["failed"]) == (2, 0)  # still retrying
    assert health["lastSuccessAt"] == wh.format_time(first_success)
    assert health["failingSince"] == wh.format_time(first_failure)
    for wait in webhooks.RETRY_DELAYS:
        clock.advance(wait)
        drain(worker)
    last_failure = clock.now()
    health = shown(api, sub)["health"]
    assert (health["delivered"], health["failed"]) == (2, 1)
    assert health["lastFailureAt"] == wh.format_time(last_failure)

    clock.advance(timedelta(minutes=1))
    publish(container, clock, acme.unit_id, "key-status", fetched("000111", 2))
    drain(worker)
    listed = api.get("/admin/webhooks")["data"][0]
    assert listed["state"] == "active"
    assert listed["health"] == {
        "delivered": 3,
        "failed": 1,
        "lastSuccessAt": wh.format_time(clock.now()),
        "lastFailureAt": wh.format_time(last_failure),
        "failingSince": None,
        "held": 0,
    }


# -- retention ----------------------------------------------------------------------


def test_the_worker_prunes_old_attempts_in_small_batches_and_leaves_recent_ones(
    container: Container,
    api: Client,
    acme: Tenant,
    receiver: Receiver,
    clock: ManualClock,
    worker: OutboxWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"])  # one test attempt
    for locker in (1, 2, 3, 4):
        publish(container, clock, acme.unit_id, "key-status", fetched("000111", locker))
    drain(worker)
    clock.advance(timedelta(days=25))
    for locker in (5, 6):
        publish(container, clock, acme.unit_id, "key-status", fetched("000111", locker))
    drain(worker)
    assert len(api.get(f"/admin/webhooks/{sub['id']}/attempts")) == 7

    batches: list[int] = []
    prune = webhooks.prune_attempts

    def counted(session: Any, *, before: datetime, limit: int) -> int:
        pruned = prune(session, before=before, limit=limit)
        batches.append(pruned)
        return pruned

    monkeypatch.setattr(webhooks, "prune_attempts", counted)
    container.webhooks.prune_batch = 2
    clock.advance(timedelta(days=6))  # the first five are 31 days old, the others 6
    assert asyncio.run(worker.run_chores()) == len(container.dispatcher.chores)
    assert batches == [2, 2, 1]  # each batch its own short transaction
    kept = api.get(f"/admin/webhooks/{sub['id']}/attempts")
    assert [a["attemptedAt"] for a in kept] == [wh.format_time(clock.now() - timedelta(days=6))] * 2
    # The counters do not come from the log: pruning leaves them alone.
    assert shown(api, sub)["health"]["delivered"] == 6
    # The chore runs again only after its interval.
    assert asyncio.run(worker.run_chores()) == 0
    clock.advance(timedelta(minutes=5))
    due_again = [
        c for c in container.dispatcher.chores.values() if c.interval <= timedelta(minutes=5)
    ]
    assert "webhook-attempt-retention" in {c.name for c in due_again}
    assert asyncio.run(worker.run_chores()) == len(due_again)


# -- the admin API --------------------------------------------------------------------


def test_enabling_is_for_admins_only_and_bad_input_names_the_field(
    container: Container,
    http: TestClient,
    api: Client,
    acme: Tenant,
    acme_pms: Tenant,
    receiver: Receiver,
) -> None:
    sub = subscribe(api, receiver, acme.unit_id, ["key-status"], activate=False)
    path = f"/admin/webhooks/{sub['id']}/enable"
    integration = admin(acme_pms, http)
    for method, target in (("POST", path), ("GET", f"/admin/webhooks/{sub['id']}")):
        refused = integration.request(
            method, target, {"recover": True} if method == "POST" else None
        )
        assert refused.status_code == 403
        assert refused.json()["message"] == "Forbidden"

    for body, message in (
        ({"recover": "yes"}, "recover: "),
        ({"recover": 1}, "recover: "),
        ({"recover": None}, "recover: "),
    ):
        response = api.request("POST", path, body)
        assert response.status_code == 400, body
        assert response.json()["message"][0].startswith(message), response.json()
    pending = api.request("POST", path, {"recover": True})
    assert pending.status_code == 400
    assert pending.json()["message"] == [
        "id: the subscription is pending: a successful test delivery "
        "(POST /admin/webhooks/{id}/test) activates it"
    ]
    assert shown(api, sub)["state"] == "pending"
    assert api.request("POST", "/admin/webhooks/" + "0" * 24 + "/enable", {}).status_code == 404
    other = make_tenant(container, http, name="Other Housing")
    assert admin(other, http).request("POST", path, {}).status_code == 404

    settings_path = f"/admin/organizationunits/{acme.unit_id}/notification-settings"
    bad = api.request("PUT", settings_path, {"adminEmail": "not an address"})
    assert bad.status_code == 400
    assert bad.json()["message"] == ["adminEmail: is not a valid email address"]
    kept = api.get(settings_path)
    assert kept["override"]["adminEmail"] == ADMIN_EMAIL
    assert kept["effective"]["adminEmail"] == ADMIN_EMAIL


def test_a_notice_goes_to_the_reply_to_desk_when_no_admin_email_is_set_and_nowhere_without(
    container: Container, http: TestClient, clock: ManualClock
) -> None:
    parent = make_tenant(container, http, name="Parent")
    child = make_tenant(container, http, name="Child", parent_id=parent.unit_id)
    settings_path = f"/admin/organizationunits/{parent.unit_id}/notification-settings"

    def notice(occasion: str) -> int | None:
        return container.db.transaction(
            lambda s: admin_notices.queue(
                s,
                organization_unit_id=child.unit_id,
                notice=admin_notices.WEBHOOK_DISABLED,
                occasion=occasion,
                facts={},
                now=clock.now(),
            )
        )

    assert notice("a") is None  # no address anywhere up the tree
    admin(parent, http).call("PUT", settings_path, {"replyTo": "desk@parent.example"})
    assert notice("b") is not None
    admin(parent, http).call(
        "PUT", settings_path, {"replyTo": "desk@parent.example", "adminEmail": "IT@Parent.Example"}
    )
    assert notice("c") is not None
    assert notice("c") is None  # once per occasion
    assert [n.payload["recipient"] for n in notices(container)] == [
        "desk@parent.example",
        "IT@parent.example",
    ]
