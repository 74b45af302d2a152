"""Overdue keys on both engines, the worker on a clock the test moves: the staff are told
once per contract (manual-storage keys at the end, automat keys after the unit's delay),
the guest too if the unit enables it, nobody about a key that is back; the dashboard
lists what is still out (docs/contracts.md, "Overdue keys")."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from keyautomat.adapters.orm_notify import notifications
from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.contracts import progress
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.model import Role
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import console_views
from keyautomat.service_layer.clock import ManualClock
from keyautomat.service_layer.principal import Principal
from tests.conftest import Tenant
from tests.contract_helpers import iso, stocked_automat
from tests.devices import admin_client
from tests.integration.notify_support import SmtpServer

DESK = "desk@acme.example"
GUEST = {"name": "Anna Guest", "email": "anna@example.com", "sendEmail": True}
MECHANICAL = "/mechanical/keycontracts"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(settings: Settings, smtp: SmtpServer) -> Settings:
    return settings.model_copy(update={"smtp_url": smtp.url, "email_from": "keys@example.com"})


@pytest.fixture
def worker(container: Container, clock: ManualClock) -> OutboxWorker:
    return OutboxWorker(container.db, container.dispatcher, clock, worker_id="w1", batch_size=50)


@pytest.fixture
def admin(acme: Tenant, http: TestClient) -> Client:
    return admin_client(acme, http)


def configure(admin: Client, acme: Tenant, **settings: Any) -> dict[str, Any]:
    path = f"/admin/organizationunits/{acme.unit_id}/notification-settings"
    answer: dict[str, Any] = admin.call("PUT", path, {"adminEmail": DESK, **settings})
    return answer


def drain(worker: OutboxWorker) -> None:
    asyncio.run(worker.drain())


def count(container: Container, type_: str, contract_id: str | None = None) -> int:
    n = notifications
    where = [n.c.type == type_]
    if contract_id is not None:
        where.append(n.c.contract_id == contract_id)
    found = container.db.transaction(
        lambda s: s.scalar(select(func.count()).select_from(n).where(*where))
    )
    return int(found or 0)


def desk_mail(smtp: SmtpServer) -> list[Any]:
    return [m for m in smtp.messages if m["To"] == DESK]


def period(clock: ManualClock) -> tuple[datetime, datetime]:
    now = clock.now()
    return now - timedelta(hours=1), now + timedelta(hours=1)


def iloq_key_out(container: Container, acme: Tenant, clock: ManualClock) -> tuple[str, datetime]:
    """An iLOQ default contract whose key its user took out (through the contract core, as the
    automat's event would); its id and end."""
    automat_id, _ = stocked_automat(container, acme, keys=1)
    start, end = period(clock)
    created = acme.api.post(
        "/iloq/keycontracts",
        {
            "input": {
                "contractType": 1,
                "accessRightIds": ["fdef8481-98ad-42b8-b4b6-4eade261e281"],
                "numberOfKeys": 1,
                "keyAutomatId": automat_id,
                "start": iso(start),
                "end": iso(end),
                "contact": GUEST,
            }
        },
    )
    contract_id = str(created["id"])
    at_the_key(
        container,
        contract_id,
        lambda store, kind, c, k: progress.fetched(store, kind, c, k, clock.now()),
    )
    return contract_id, end


def at_the_key(container: Container, contract_id: str, step: Any) -> None:
    """``step(store, kind, contract, key)`` on the contract's first key, in a transaction: what
    the automat's event (or staff) would make the contract core do."""
    kind = container.contract_kinds["iloq"]

    def work(session: Any) -> None:
        store = SqlContractStore(session)
        contract = store.load(contract_id)
        assert contract is not None
        step(store, kind, contract, contract.key_at(0))

    container.db.transaction(work)


def test_a_manual_key_not_back_at_the_end_tells_the_staff_once_with_whom_to_call(
    container: Container,
    acme: Tenant,
    admin: Client,
    clock: ManualClock,
    worker: OutboxWorker,
    smtp: SmtpServer,
) -> None:
    configure(admin, acme)
    acme.api.post(
        "/mechanical/keys",
        {
            "id": "flat-12",
            "name": "Flat 12",
            "selectedStorage": {"manualStorageInfo": "Desk"},
            "away": False,
        },
    )
    start, end = period(clock)
    acme.api.post(
        MECHANICAL,
        {
            "id": "stay-1",
            "start": iso(start),
            "end": iso(end),
            "contact": {**GUEST, "phoneNumber": "+358401234567"},
            "keys": [{"id": "flat-12"}],
        },
    )
    admin.post(f"/admin{MECHANICAL}/stay-1/keys/flat-12/handover", {})

    clock.set(end + timedelta(seconds=1))
    drain(worker)
    drain(worker)
    (mail,) = desk_mail(smtp)
    assert mail["Subject"] == "Keys of contract stay-1 not returned"
    body = mail.get_content()
    assert "- Flat 12 (Desk)" in body
    assert "Contact: Anna Guest, +358401234567, anna@example.com" in body
    # An hour later nothing more: the later stage is about automat keys, and this unit
    # does not remind its guests.
    clock.advance(timedelta(hours=2))
    drain(worker)
    assert len(desk_mail(smtp)) == 1
    assert count(container, "keysOverdue") == 1


def test_an_automat_key_is_overdue_after_the_units_delay_and_its_guest_is_reminded_once(
    container: Container,
    acme: Tenant,
    admin: Client,
    clock: ManualClock,
    worker: OutboxWorker,
    smtp: SmtpServer,
) -> None:
    shown = configure(admin, acme, overdueAfterMinutes=30, guestOverdueReminders=True)
    assert shown["effective"]["overdueAfterMinutes"] == 30
    assert shown["effective"]["guestOverdueReminders"] is True
    contract_id, end = iloq_key_out(container, acme, clock)

    clock.set(end + timedelta(seconds=1))
    drain(worker)
    assert count(container, "contractKeysNotReturned", contract_id) == 1  # the one at the end
    assert desk_mail(smtp) == []
    clock.set(end + timedelta(minutes=29))
    drain(worker)
    assert desk_mail(smtp) == []

    clock.set(end + timedelta(minutes=31))
    drain(worker)
    drain(worker)
    (mail,) = desk_mail(smtp)
    assert mail["Subject"] == f"Keys of contract {contract_id} not returned"
    assert "A1, locker 0" in mail.get_content()
    assert count(container, "keysOverdue") == 1
    assert count(container, "contractKeysNotReturned", contract_id) == 2  # reminded once more
    guest = [m for m in smtp.messages if m["To"] == GUEST["email"]]
    assert [m["Subject"] for m in guest].count("Keys not returned") == 2


def test_a_key_back_before_it_is_overdue_is_told_to_nobody(
    container: Container,
    acme: Tenant,
    admin: Client,
    clock: ManualClock,
    worker: OutboxWorker,
    smtp: SmtpServer,
) -> None:
    configure(admin, acme, guestOverdueReminders=True)
    contract_id, end = iloq_key_out(container, acme, clock)
    clock.set(end + timedelta(seconds=1))
    drain(worker)
    at_the_key(
        container,
        contract_id,
        lambda store, kind, c, k: progress.returned(store, kind, c, k, clock.now(), 0),
    )
    clock.set(end + timedelta(hours=2))
    drain(worker)
    assert count(container, "keysOverdue") == 0
    assert desk_mail(smtp) == []
    assert count(container, "contractKeysNotReturned", contract_id) == 1  # only at the end


def test_the_dashboard_lists_the_keys_still_out_longest_overdue_first(
    container: Container, acme: Tenant, clock: ManualClock, worker: OutboxWorker
) -> None:
    contract_id, end = iloq_key_out(container, acme, clock)
    clock.set(end + timedelta(seconds=1))
    drain(worker)
    viewer = Principal("viewer", acme.unit_id, f"/{acme.unit_id}/", 1, Role.ADMIN)
    (line,) = container.db.transaction(lambda s: console_views.overdue_keys(s, viewer))
    assert (line.contract_id, line.kind, line.end) == (contract_id, "iloq", end)
    assert (line.automat_name, line.locker_index, line.next_waiting) == ("A1", 0, False)
    assert line.contact_name == "Anna Guest"
    outsider = Principal("other", "elsewhere", "/elsewhere/", 1, Role.ADMIN)
    assert container.db.transaction(lambda s: console_views.overdue_keys(s, outsider)) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"overdueAfterMinutes": -1}, "overdueAfterMinutes"),
        ({"overdueAfterMinutes": "60"}, "overdueAfterMinutes"),
        ({"guestOverdueReminders": "yes"}, "guestOverdueReminders"),
    ],
)
def test_bad_overdue_settings_are_refused_naming_the_field(
    acme: Tenant, admin: Client, body: dict[str, Any], field: str
) -> None:
    path = f"/admin/organizationunits/{acme.unit_id}/notification-settings"
    refused = admin.request("PUT", path, body)
    assert refused.status_code == 400
    assert any(m.startswith(field) for m in refused.json()["message"])
