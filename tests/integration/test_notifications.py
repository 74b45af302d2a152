"""Notifications end to end: producer API → outbox → worker → real SMTP and SMS servers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from keyautomat.bootstrap import Container
from keyautomat.domain.notifications import (
    LANGUAGES,
    ContractKind,
    ContractType,
    ContractView,
    NotificationType,
)
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import notifications as notify
from keyautomat.service_layer.clock import ManualClock
from keyautomat.service_layer.notifications import Condition, SettingsOverride
from keyautomat.service_layer.principal import Principal
from tests.conftest import Tenant
from tests.integration.notify_support import (
    SmsGateway,
    SmtpServer,
    make_view,
    notification_worker,
)

T = NotificationType
IMMEDIATE = (
    T.CONTRACT_CREATED,
    T.CONTRACT_UPDATED,
    T.CONTRACT_SIGNATURE_REQUESTED,
)
KEY_EVENTS = (T.CONTRACT_KEY_FETCHED, T.CONTRACT_KEY_RETURNED)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gateway() -> Iterator[SmsGateway]:
    server = SmsGateway()
    yield server
    server.close()


@pytest.fixture
def worker(
    container: Container, clock: ManualClock, smtp: SmtpServer, gateway: SmsGateway
) -> OutboxWorker:
    return notification_worker(container.db, clock, smtp.url, gateway.url)


@pytest.fixture
def unit(acme: Tenant) -> str:
    return acme.unit_id


def drain(worker: OutboxWorker) -> int:
    return asyncio.run(worker.drain())


def records(container: Container, unit: str, **filters: object) -> list[notify.NotificationRecord]:
    principal = Principal("sa", unit, f"/{unit}/", 0, "admin")
    return container.db.transaction(
        lambda s: notify.list_notifications(s, principal, **filters)  # type: ignore[arg-type]
    )


def create(container: Container, clock: ManualClock, view: ContractView) -> None:
    """What the contract code does when it creates a contract."""

    def work(session: Session) -> None:
        notify.notify(session, view, T.CONTRACT_CREATED, now=clock.now())
        notify.schedule_reminders(session, view, now=clock.now())

    container.db.transaction(work)


def test_every_type_in_every_language_is_delivered_by_smtp_and_the_sms_gateway(
    container: Container,
    clock: ManualClock,
    unit: str,
    worker: OutboxWorker,
    smtp: SmtpServer,
    gateway: SmsGateway,
) -> None:
    views = {
        lang: make_view(unit, clock.now(), contract_id=f"c-{lang}", language=lang)
        for lang in LANGUAGES
    }

    def work(session: Session) -> None:
        now = clock.now()
        for view in views.values():
            for type_ in IMMEDIATE:
                notify.notify(session, view, type_, now=now)
            for type_ in KEY_EVENTS:
                notify.notify(session, view, type_, now=now, key_id="key-1")
            notify.schedule_reminders(session, view, now=now)

    container.db.transaction(work)
    drain(worker)
    assert len(smtp.messages) == len(gateway.received) == 5 * len(LANGUAGES)

    clock.advance(timedelta(days=6))  # past every start reminder, end reminder and end
    drain(worker)

    assert len(smtp.messages) == len(gateway.received) == 8 * len(LANGUAGES)
    assert {m["To"] for m in smtp.messages} == {"jane@example.com"}
    assert {s["to"] for s in gateway.received} == {"+358401234567"}
    subjects = {m["Subject"] for m in smtp.messages}
    assert len(subjects) == 8 * len(LANGUAGES)  # every type and language has its own words
    for message in smtp.messages:
        assert message.is_multipart()
        kinds = {part.get_content_type() for part in message.iter_parts()}
        assert kinds == {"text/plain", "text/html"}
        assert message["Message-ID"].endswith("@example.com>")
    assert all(len(s["text"]) <= 306 for s in gateway.received)
    states = {r.state for r in records(container, unit, limit=1000)}
    assert states == {"sent"}


def test_each_event_is_sent_once_even_when_the_device_reports_it_again(
    container: Container, clock: ManualClock, unit: str, worker: OutboxWorker, smtp: SmtpServer
) -> None:
    view = make_view(unit, clock.now(), send_email=True)

    def fetched(session: Session) -> list[int]:
        return notify.notify(session, view, T.CONTRACT_KEY_FETCHED, now=clock.now(), key_id="key-1")

    assert len(container.db.transaction(fetched)) == 1
    assert container.db.transaction(fetched) == []
    drain(worker)
    assert len(smtp.messages) == 1


def test_channels_follow_the_resolution_rule_and_missing_addresses_are_skipped(
    container: Container, clock: ManualClock, unit: str
) -> None:
    def rows_for(**kw: object) -> set[tuple[str, str]]:
        view = make_view(unit, clock.now(), **kw)  # type: ignore[arg-type]

        def work(session: Session) -> list[int]:
            return notify.notify(session, view, T.CONTRACT_CREATED, now=clock.now())

        ids = container.db.transaction(work)
        found = records(container, unit, contract_id=view.contract_id)
        assert [r.id for r in found] == ids
        return {(r.type, r.channel) for r in found}

    created = "contractCreated"
    assert rows_for(contract_id="a", send_sms=True) == {(created, "sms")}
    assert rows_for(contract_id="b", send_sms=True, send_email=True) == {
        (created, "sms"),
        (created, "email"),
    }
    assert rows_for(contract_id="c") == {(created, "sms"), (created, "email")}  # matrix all on
    assert rows_for(contract_id="d", notifications={}, send_sms=True) == set()
    assert rows_for(contract_id="e", send_sms=False) == set()
    assert rows_for(contract_id="f", send_sms=True, send_email=True, phone=None) == {
        (created, "email")
    }
    assert rows_for(contract_id="g", notifications={created: {"email": True}}, send_sms=True) == {
        (created, "email")
    }


def test_organization_defaults_in_force_when_sending_decide_scheduled_messages(
    container: Container, clock: ManualClock, unit: str, worker: OutboxWorker, smtp: SmtpServer
) -> None:
    # The start reminder is off by factory default: its rows wait, then resolve to "skipped".
    first = make_view(unit, clock.now(), contract_id="first", send_email=True)
    create(container, clock, first)
    clock.advance(timedelta(days=2, minutes=1))  # the start reminder's moment
    drain(worker)
    assert not any("Reminder" in m["Subject"] for m in smtp.messages)
    [skipped] = records(container, unit, contract_id="first", type_="contractStartReminder")
    assert skipped.state == "skipped"
    assert skipped.reason is not None

    # The organization turns it on; a contract scheduled before that change gets it.
    second = make_view(unit, clock.now(), contract_id="second", send_email=True)
    create(container, clock, second)
    container.db.transaction(
        lambda s: notify.set_override(
            s,
            unit,
            SettingsOverride(defaults={"contractStartReminder": {"email": True}}),
            now=clock.now(),
        )
    )
    clock.advance(timedelta(days=2, minutes=1))
    drain(worker)
    [sent] = records(container, unit, contract_id="second", type_="contractStartReminder")
    assert sent.state == "sent"


def test_reminders_fire_at_their_lead_times_from_the_organization_settings(
    container: Container, clock: ManualClock, unit: str, worker: OutboxWorker, smtp: SmtpServer
) -> None:
    container.db.transaction(
        lambda s: notify.set_override(
            s,
            unit,
            SettingsOverride(
                start_reminder_lead=timedelta(hours=2), end_reminder_lead=timedelta(hours=6)
            ),
            now=clock.now(),
        )
    )
    view = make_view(
        unit, clock.now(), notifications={t: {"email": True} for t in notify.SCHEDULED_NAMES}
    )
    assert view.end is not None
    create(container, clock, view)
    expected = [
        (view.start - timedelta(hours=2), "contractStartReminder"),
        (view.end - timedelta(hours=6), "contractEndReminder"),
        (view.end, "contractKeysNotReturned"),
    ]
    sent: list[str] = []
    for moment, type_ in expected:
        clock.set(moment - timedelta(seconds=1))
        drain(worker)
        assert len(smtp.messages) == len(sent)  # not a second early
        clock.set(moment)
        drain(worker)
        sent.append(type_)
        assert len(smtp.messages) == len(sent)
    assert [r.type for r in records(container, unit, state="sent")] == sent


def test_a_changed_contract_reschedules_and_a_deleted_one_cancels_its_reminders(
    container: Container, clock: ManualClock, unit: str, worker: OutboxWorker, smtp: SmtpServer
) -> None:
    view = make_view(unit, clock.now(), notifications={"contractEndReminder": {"email": True}})
    assert view.end is not None
    create(container, clock, view)
    later_end = view.end + timedelta(days=1)
    later = _with_end(view, later_end)
    container.db.transaction(lambda s: notify.reschedule(s, later, now=clock.now()))

    clock.set(view.end - timedelta(hours=23))  # the old reminder's moment has passed
    drain(worker)
    assert smtp.messages == []
    clock.set(later_end - timedelta(hours=24))
    drain(worker)
    assert len(smtp.messages) == 1
    states = sorted(r.state for r in records(container, unit, type_="contractEndReminder"))
    assert states == ["cancelled", "sent"]

    other = make_view(unit, clock.now(), contract_id="doomed", send_email=True)
    create(container, clock, other)
    assert container.db.transaction(lambda s: notify.cancel_reminders(s, "doomed")) == 3
    clock.advance(timedelta(days=30))
    drain(worker)
    assert len(smtp.messages) == 2  # the first one, and doomed's contractCreated
    assert {r.state for r in records(container, unit, contract_id="doomed")} == {
        "sent",
        "cancelled",
    }


def test_a_reminder_whose_condition_no_longer_holds_is_skipped_when_it_fires(
    container: Container,
    clock: ManualClock,
    unit: str,
    worker: OutboxWorker,
    gateway: SmsGateway,
) -> None:
    asked: list[str] = []

    def keys_out(session: Session, view: ContractView, type_: NotificationType) -> Condition:
        asked.append(type_.value)
        if type_ is T.CONTRACT_END_REMINDER:
            return Condition(holds=False, reason="every key is back")
        return Condition(holds=True, missing_key_ids=("key-2",))

    container.wiring.condition_checkers[ContractKind.MECHANICAL.value] = keys_out
    view = make_view(
        unit,
        clock.now(),
        notifications={
            "contractEndReminder": {"sms": True},
            "contractKeysNotReturned": {"sms": True},
        },
    )
    create(container, clock, view)
    clock.advance(timedelta(days=10))
    drain(worker)
    # One batch delivers both rows concurrently, in either order.
    assert sorted(asked) == ["contractEndReminder", "contractKeysNotReturned"]
    [sms] = gateway.received
    assert "Garage" in sms["text"]
    assert "Flat A12" not in sms["text"]
    [skipped] = records(container, unit, type_="contractEndReminder")
    assert (skipped.state, skipped.reason) == ("skipped", "every key is back")


def test_fetch_contracts_get_no_end_reminders_and_return_contracts_no_fetch_notice(
    container: Container, clock: ManualClock, unit: str
) -> None:
    fetch = make_view(unit, clock.now(), contract_id="f", contract_type=ContractType.FETCH)
    back = make_view(unit, clock.now(), contract_id="r", contract_type=ContractType.RETURN)

    def work(session: Session) -> None:
        notify.schedule_reminders(session, fetch, now=clock.now())
        notify.notify(session, back, T.CONTRACT_KEY_FETCHED, now=clock.now(), key_id="key-1")

    container.db.transaction(work)
    assert {r.type for r in records(container, unit)} == {"contractStartReminder"}


def _with_end(view: ContractView, end: datetime) -> ContractView:
    from dataclasses import replace

    return replace(view, end=end)
