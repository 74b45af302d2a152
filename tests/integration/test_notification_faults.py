"""Notifications when things break: a mail server down, refusals, a worker killed mid-send."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from keyautomat.adapters.db import Database
from keyautomat.adapters.orm_notify import notifications
from keyautomat.bootstrap import Container
from keyautomat.domain.notifications import NotificationType
from keyautomat.service_layer import notifications as notify
from keyautomat.service_layer import outbox
from keyautomat.service_layer.clock import ManualClock, SystemClock
from keyautomat.service_layer.principal import Principal
from keyautomat.service_layer.wiring import Wiring
from tests.conftest import Tenant
from tests.integration.notify_support import (
    SmsGateway,
    SmtpServer,
    link_box,
    make_view,
    notification_worker,
    wired_database,
)

T = NotificationType


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gateway() -> Iterator[SmsGateway]:
    server = SmsGateway()
    yield server
    server.close()


def state(container: Container, unit: str) -> list[notify.NotificationRecord]:
    principal = Principal("sa", unit, f"/{unit}/", 0, "admin")
    return container.db.transaction(lambda s: notify.list_notifications(s, principal))


def created(container: Container, clock: ManualClock, unit: str, **contact: object) -> None:
    view = make_view(unit, clock.now(), **contact)  # type: ignore[arg-type]
    container.db.transaction(lambda s: notify.notify(s, view, T.CONTRACT_CREATED, now=clock.now()))


def test_mail_queued_while_the_smtp_server_is_down_is_delivered_once_it_is_back(
    container: Container, clock: ManualClock, acme: Tenant, smtp: SmtpServer, gateway: SmsGateway
) -> None:
    worker = notification_worker(container.db, clock, smtp.url, gateway.url)
    smtp.stop()
    created(container, clock, acme.unit_id, send_email=True)
    asyncio.run(worker.drain())
    [queued] = state(container, acme.unit_id)
    assert (queued.state, queued.attempts) == ("queued", 1)
    assert queued.reason is not None
    assert queued.reason.startswith("SMTP unavailable")

    smtp.start()
    asyncio.run(worker.drain())
    assert smtp.messages == []  # the retry waits for its back-off
    clock.advance(timedelta(minutes=1))
    asyncio.run(worker.drain())
    clock.advance(timedelta(hours=1))
    asyncio.run(worker.drain())
    assert len(smtp.messages) == 1
    [sent] = state(container, acme.unit_id)
    assert (sent.state, sent.attempts, sent.reason) == ("sent", 2, None)


def test_refused_addresses_fail_at_once_and_the_reason_is_kept(
    container: Container, clock: ManualClock, acme: Tenant, smtp: SmtpServer, gateway: SmsGateway
) -> None:
    worker = notification_worker(container.db, clock, smtp.url, gateway.url)
    smtp.mailbox.refuse.add("jane@example.com")
    gateway.status = 400
    created(container, clock, acme.unit_id, send_email=True, send_sms=True)
    asyncio.run(worker.drain())
    rows = {r.channel: r for r in state(container, acme.unit_id)}
    assert rows["email"].state == rows["sms"].state == "failed"
    assert rows["email"].attempts == rows["sms"].attempts == 1
    assert "550" in (rows["email"].reason or "")
    assert "400" in (rows["sms"].reason or "")


def test_a_refusal_that_quotes_the_recipient_is_kept_and_logged_without_the_address(
    container: Container,
    clock: ManualClock,
    acme: Tenant,
    smtp: SmtpServer,
    gateway: SmsGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Logs and the outbox's reasons hold no contact details (docs/operations.md, Logs)."""
    worker = notification_worker(container.db, clock, smtp.url, gateway.url)
    smtp.mailbox.refuse.add("jane@example.com")
    smtp.mailbox.quote_refused = True
    gateway.status = 400
    gateway.quote_refused = True
    created(container, clock, acme.unit_id, send_email=True, send_sms=True)
    with caplog.at_level(logging.DEBUG):
        asyncio.run(worker.drain())
    rows = {r.channel: r for r in state(container, acme.unit_id)}
    assert "<<recipient>>: no such user" in (rows["email"].reason or "")
    assert "<recipient> is barred" in (rows["sms"].reason or "")
    # Everything but the test's own mail server ("mail.log").
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")
    assert "failed: SMS gateway answered 400" in ours
    logged = ours + " ".join(r.reason or "" for r in rows.values())
    for detail in ("jane@example.com", "358401234567"):
        assert detail not in logged


def test_a_gateway_that_keeps_failing_is_tried_four_times_over_ten_minutes(
    container: Container, clock: ManualClock, acme: Tenant, smtp: SmtpServer, gateway: SmsGateway
) -> None:
    worker = notification_worker(container.db, clock, smtp.url, gateway.url)
    gateway.status = 503
    created(container, clock, acme.unit_id, send_sms=True)
    start = clock.now()
    for _ in range(6):
        asyncio.run(worker.drain())
        clock.advance(timedelta(minutes=1))
    assert len(gateway.received) == 3  # at 0, +1 and +4 minutes
    clock.set(start + timedelta(minutes=10))
    asyncio.run(worker.drain())
    [failed] = state(container, acme.unit_id)
    assert (failed.state, failed.attempts) == ("failed", 4)
    assert "gave up after 4 attempts" in (failed.reason or "")
    assert len(gateway.received) == 4


def test_a_message_whose_worker_dies_mid_delivery_is_sent_by_the_next_worker(
    container: Container, clock: ManualClock, acme: Tenant, smtp: SmtpServer, gateway: SmsGateway
) -> None:
    first = notification_worker(container.db, clock, smtp.url, gateway.url, worker_id="first")
    second = notification_worker(container.db, clock, smtp.url, gateway.url, worker_id="second")
    created(container, clock, acme.unit_id, send_sms=True)
    gateway.hold = True

    async def die_mid_delivery() -> None:
        task = asyncio.create_task(first.run_once())
        arrived = await asyncio.get_running_loop().run_in_executor(None, gateway.arrived.wait, 10)
        assert arrived
        task.cancel()  # the process is killed while the gateway is answering
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(die_mid_delivery())
    gateway.hold = False
    gateway.release.set()
    [row] = state(container, acme.unit_id)
    assert row.state == "sending"

    assert asyncio.run(second.drain()) == 0  # the dead worker's lease still holds it
    clock.advance(timedelta(minutes=2, seconds=1))
    assert asyncio.run(second.drain()) == 1
    [row] = state(container, acme.unit_id)
    assert (row.state, row.attempts) == ("sent", 2)
    # At least once, under one stable id the gateway can deduplicate on.
    assert len(gateway.received) == 2
    assert len({sms["id"] for sms in gateway.received}) == 1
    assert gateway.headers[0]["Idempotency-Key"] == gateway.received[0]["id"]


ROWS = 300  # the outbox test already races 1,000 generic rows; these add the handler


def test_two_workers_send_each_notification_exactly_once(
    postgres_url: str, smtp: SmtpServer, gateway: SmsGateway
) -> None:
    clock = SystemClock()
    setup = wired_database(postgres_url, threads=2)
    box = link_box(setup)

    def fill(session: Session) -> None:
        now = clock.now()
        for i in range(ROWS):
            view = make_view("race-unit", now, contract_id=f"race-{i}", send_sms=True)
            notify.notify(session, view, T.CONTRACT_CREATED, now=now)

    setup.transaction(fill)

    def run_worker(name: str) -> None:
        db = Database(postgres_url, threads=4, info={"wiring": Wiring(link_box=box)})
        worker = notification_worker(db, clock, smtp.url, gateway.url, worker_id=name)

        def pending(session: Session) -> bool:
            return bool(outbox.read(session, kinds=[notify.KIND], status="pending", limit=1))

        async def until_empty() -> None:
            while await worker.run_once() or await db.run(pending):
                await asyncio.sleep(0)

        asyncio.run(until_empty())
        db.close()

    try:
        threads = [threading.Thread(target=run_worker, args=(n,)) for n in ("w1", "w2")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        ids = [sms["id"] for sms in gateway.received]
        assert len(ids) == ROWS
        assert len(set(ids)) == ROWS  # nobody got the same message twice
        done = setup.transaction(
            lambda s: outbox.read(s, kinds=[notify.KIND], status="done", limit=ROWS + 1)
        )
        assert len(done) == ROWS
    finally:
        setup.transaction(lambda s: s.execute(delete(notifications)))
        setup.transaction(lambda s: s.execute(delete(outbox.t)))
        setup.close()
