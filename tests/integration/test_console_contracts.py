"""The console's contract pages over HTTP: the list and its search, one contract and its
timeline, the forms (with CSRF), roles and scoping. The browser test of the same pages is
tests/e2e/test_console_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters import orm
from keyautomat.adapters.orm_devices import automat_events
from keyautomat.adapters.orm_mechanical import mechanical_contracts
from keyautomat.adapters.orm_notify import notifications
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.devices import AutomatEventType
from keyautomat.domain.model import OrgUnitType
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import devices
from tests.conftest import Tenant, make_tenant
from tests.console_support import add_user, console_client, sign_in
from tests.contract_helpers import RIGHT, default_contract, stocked_automat
from tests.integration.webhook_support import admin, drain, subscribe
from tests.webhook_receiver import Receiver, running_receiver

ZONE = ZoneInfo("Europe/Helsinki")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A local webhook receiver on 127.0.0.1 over http (gaps.md G8).
    return settings.model_copy(update={"webhooks_allow_private": True})


@pytest.fixture
def browser(container: Container) -> Iterator[TestClient]:
    with console_client(container) as client:
        yield client


@dataclass(frozen=True)
class Desk:
    """An operator signed in, and an active automat of the unit with keys to hand out."""

    automat_id: str
    csrf: str


@pytest.fixture
def desk(container: Container, browser: TestClient, acme: Tenant) -> Desk:
    automat_id, _ = stocked_automat(container, acme)
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    return Desk(automat_id, sign_in(browser, "op@acme.fi"))


def wall_clock(hours_from_now: float) -> str:
    """A time as a ``datetime-local`` field holds it, on Helsinki's wall clock."""
    moment = datetime.now(UTC) + timedelta(hours=hours_from_now)
    return moment.astimezone(ZONE).strftime("%Y-%m-%dT%H:%M")


def iloq_form(csrf: str, automat_id: str, **extra: str) -> dict[str, Any]:
    form: dict[str, Any] = {
        "csrf": csrf,
        "contract_type": "1",
        "access_right": [RIGHT],
        "start": wall_clock(-1),
        "end": wall_clock(47),
        "timezone": "Europe/Helsinki",
        "where": "automat",
        "automat_id": automat_id,
        "number_of_keys": "1",
        "contact_name": "Maija <b>Meikäläinen</b>",
        "contact_email": "maija@example.com",
        "contact_phone": "+358401234567",
        "contact_email_on": "1",
    }
    form.update(extra)
    return form


def created_id(answer: Any) -> str:
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    match = re.fullmatch(
        r"/console/contracts/iloq/([0-9a-f]{24})\?notice=contract.created", location
    )
    assert match is not None, location
    return match.group(1)


def create_with_form(browser: TestClient, csrf: str, automat_id: str, **extra: str) -> str:
    answer = browser.post(
        "/console/contracts/new/iloq",
        data=iloq_form(csrf, automat_id, **extra),
        follow_redirects=False,
    )
    return created_id(answer)


def test_an_operator_creates_an_iloq_contract_with_the_form_and_finds_it_in_the_list(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    automat_id, key_ids = stocked_automat(container, acme)
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    csrf = sign_in(browser, "op@acme.fi")
    form = browser.get("/console/contracts/new/iloq")
    assert form.status_code == 200
    assert "Main door" in form.text  # the picker lists the system's rights
    contract_id = create_with_form(browser, csrf, automat_id)
    stored = acme.api.get(f"/iloq/keycontracts/{contract_id}")
    assert stored["accessRightIds"] == [RIGHT]
    assert stored["contact"]["name"] == "Maija <b>Meikäläinen</b>"
    assert stored["keys"][0]["id"] in key_ids
    listing = browser.get("/console/contracts").text
    assert contract_id in listing
    assert "Maija &lt;b&gt;Meikäläinen&lt;/b&gt;" in listing  # escaped, never markup
    assert "<b>Meikäläinen" not in listing
    page = browser.get(f"/console/contracts/iloq/{contract_id}")
    assert page.status_code == 200
    assert "Contract created" in page.text
    assert "Message contractCreated by email to maija@example.com" in page.text
    # The operator may show the code (behind a disclosure); the time is Helsinki's.
    assert stored["keys"][0]["storageInfo"]["pincode"] in page.text
    assert "Times are shown in Europe/Helsinki." in page.text


def test_the_form_names_the_refused_field_and_creates_nothing(
    container: Container, browser: TestClient, acme: Tenant, desk: Desk
) -> None:
    automat_id, csrf = desk.automat_id, desk.csrf
    cases = {
        "end": {"end": wall_clock(-3)},
        "contact_email": {"contact_email": "not an address"},
        "access_right": {"access_right": "made-up-right"},
        "start": {"start": "yesterday"},
        "timezone": {"timezone": "Mars/Base"},
    }
    for field, change in cases.items():
        answer = browser.post(
            "/console/contracts/new/iloq", data=iloq_form(csrf, automat_id, **change)
        )
        assert answer.status_code == 400, field
        assert f'id="e-{field}"' in answer.text, field
    full = browser.post(
        "/console/contracts/new/iloq",
        data=iloq_form(csrf, automat_id, number_of_keys="9"),
    )
    assert full.status_code == 409
    assert "No automat has 9 keys available" in full.text
    assert acme.api.get("/iloq/keycontracts")["data"] == []


def test_a_viewer_reads_but_never_sees_or_finds_a_pincode_and_cannot_create(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme)
    created = acme.api.post("/iloq/keycontracts", default_contract(automat_id))
    code = created["keys"][0]["storageInfo"]["pincode"]
    add_user(container, acme.unit_id, "viewer@acme.fi", ConsoleRole.VIEWER)
    csrf = sign_in(browser, "viewer@acme.fi")
    page = browser.get(f"/console/contracts/iloq/{created['id']}")
    assert page.status_code == 200
    assert code not in page.text
    assert "hidden from viewers" in page.text
    assert created["id"] not in browser.get("/console/contracts", params={"q": code}).text
    assert browser.get("/console/contracts/new/iloq").status_code == 200  # reading is fine
    answer = browser.post("/console/contracts/new/iloq", data=iloq_form(csrf, automat_id))
    assert answer.status_code == 403
    answer = browser.post(f"/console/contracts/iloq/{created['id']}/delete", data={"csrf": csrf})
    assert answer.status_code == 403
    assert len(acme.api.get("/iloq/keycontracts")["data"]) == 1


def test_a_form_without_the_csrf_token_changes_nothing(
    container: Container, browser: TestClient, acme: Tenant, desk: Desk
) -> None:
    automat_id = desk.automat_id
    form = iloq_form("forged", automat_id)
    assert browser.post("/console/contracts/new/iloq", data=form).status_code == 403
    assert acme.api.get("/iloq/keycontracts")["data"] == []


def test_a_child_units_user_gets_404_for_a_parents_contract(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient
) -> None:
    automat_id, _ = stocked_automat(container, acme)
    created = acme.api.post("/iloq/keycontracts", default_contract(automat_id))
    child = make_tenant(
        container, http, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    add_user(container, child.unit_id, "east@acme.fi", ConsoleRole.OPERATOR)
    csrf = sign_in(browser, "east@acme.fi")
    assert created["id"] not in browser.get("/console/contracts").text
    assert browser.get(f"/console/contracts/iloq/{created['id']}").status_code == 404
    edit = browser.post(f"/console/contracts/iloq/{created['id']}/delete", data={"csrf": csrf})
    assert edit.status_code == 404
    assert browser.get("/console/contracts/elsewhere/x").status_code == 404


def test_the_list_filters_by_period_and_searches_guests_keys_and_codes(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=3)
    now = datetime.now(UTC)

    def contract(name: str, phone: str, start_hours: float) -> dict[str, Any]:
        start, end = now + timedelta(hours=start_hours), now + timedelta(hours=start_hours + 5)
        body = default_contract(
            automat_id,
            start=start.isoformat().replace("+00:00", "Z"),
            end=end.isoformat().replace("+00:00", "Z"),
            contact={
                "name": name,
                "email": f"{name.split(maxsplit=1)[0].lower()}@example.com",
                "phoneNumber": phone,
            },
        )
        created: dict[str, Any] = acme.api.post("/iloq/keycontracts", body)
        return created

    ongoing = contract("Åsa Öberg", "+358401234567", -1)
    future = contract("Bob Builder", "+358409999999", 24)
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    sign_in(browser, "op@acme.fi")

    def found(**params: Any) -> set[str]:
        page = browser.get("/console/contracts", params=params).text
        return {c["id"] for c in (ongoing, future) if c["id"] in page}

    assert found() == {ongoing["id"], future["id"]}
    assert found(period="future") == {future["id"]}
    assert found(period="ongoing") == {ongoing["id"]}
    assert found(period=["ongoing", "future"]) == {ongoing["id"], future["id"]}
    assert found(period="ended") == set()
    assert found(q="bob") == {future["id"]}
    assert found(q="Åsa Öberg") == {ongoing["id"]}
    assert found(q="BOB@EXAMPLE") == {future["id"]}
    assert found(q="040 123 4567") == {ongoing["id"]}
    assert found(q=future["keys"][0]["id"]) == {future["id"]}
    assert found(q=ongoing["keys"][0]["storageInfo"]["pincode"]) == {ongoing["id"]}
    assert found(q="name") == set()  # the contact's field names are not its values
    assert found(q="%") == set()
    assert browser.get("/console/contracts", params={"q": "x" * 101}).status_code == 400


def test_editing_the_period_and_contact_and_deleting_go_through_the_apis_rules(
    container: Container, browser: TestClient, acme: Tenant, desk: Desk
) -> None:
    automat_id, csrf = desk.automat_id, desk.csrf
    contract_id = create_with_form(browser, csrf, automat_id)
    base = f"/console/contracts/iloq/{contract_id}"
    form = browser.get(f"{base}/edit")
    assert form.status_code == 200
    assert "maija@example.com" in form.text
    change = {
        "csrf": csrf,
        "start": wall_clock(-1),
        "end": wall_clock(71),
        "timezone": "Europe/Helsinki",
        "contact_name": "Matti",
        "contact_email": "matti@example.com",
    }
    refused = browser.post(f"{base}/edit", data={**change, "end": ""})
    assert refused.status_code == 400
    assert "is required for default contracts" in refused.text
    saved = browser.post(f"{base}/edit", data=change, follow_redirects=False)
    assert saved.status_code == 303
    stored = acme.api.get(f"/iloq/keycontracts/{contract_id}")
    assert stored["contact"]["email"] == "matti@example.com"
    end = datetime.fromisoformat(stored["end"].replace("Z", "+00:00"))
    assert abs(end - (datetime.now(UTC) + timedelta(hours=71))) < timedelta(minutes=2)
    deleted = browser.post(f"{base}/delete", data={"csrf": csrf})
    assert "The contract is deleted." in deleted.text
    assert acme.api.get("/iloq/keycontracts")["data"] == []
    assert browser.get(base).status_code == 404


def test_a_message_is_sent_again_as_it_was_written(
    container: Container, browser: TestClient, acme: Tenant, desk: Desk
) -> None:
    automat_id, csrf = desk.automat_id, desk.csrf
    contract_id = create_with_form(browser, csrf, automat_id)

    def messages(session: Session) -> list[Any]:
        return list(
            session.execute(
                select(notifications.c.outbox_id, notifications.c.type, notifications.c.recipient)
                .where(
                    notifications.c.contract_id == contract_id,
                    notifications.c.type == "contractCreated",
                )
                .order_by(notifications.c.outbox_id)
            ).all()
        )

    (first,) = container.db.transaction(messages)
    base = f"/console/contracts/iloq/{contract_id}"
    resend = {"csrf": csrf, "message_id": str(first.outbox_id)}
    queued = browser.post(f"{base}/resend", data=resend)
    assert queued.status_code == 400  # it goes on its own
    assert "is still queued" in queued.text
    drain(OutboxWorker(container.db, container.dispatcher, container.clock, worker_id="w1"))
    page = browser.post(f"{base}/resend", data=resend)
    assert "The message is queued to be sent again." in page.text
    _, second = container.db.transaction(messages)
    assert (second.type, second.recipient) == (first.type, first.recipient)
    payloads = container.db.transaction(
        lambda s: [
            s.scalar(select(orm.outbox.c.payload).where(orm.outbox.c.id == i))
            for i in (first.outbox_id, second.outbox_id)
        ]
    )
    assert payloads[0] == payloads[1]
    # Another contract's message, or none, is not found through this contract.
    answer = browser.post(f"{base}/resend", data={"csrf": csrf, "message_id": "999999"})
    assert answer.status_code == 404


def test_the_timeline_shows_the_code_the_fetch_and_the_webhooks_in_the_automats_time(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient
) -> None:
    with running_receiver() as receiver:
        _timeline_with_webhooks(container, browser, acme, http, receiver)


def _timeline_with_webhooks(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient, receiver: Receiver
) -> None:
    subscribe(admin(acme, http), receiver, acme.unit_id)
    automat_id, _ = stocked_automat(container, acme)
    created = acme.api.post("/iloq/keycontracts", default_contract(automat_id))
    key = created["keys"][0]
    code_at = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)  # 12:30 in Helsinki (EET)

    def device_events(session: Session) -> None:
        stored = SqlContractStore(session).load(created["id"])
        assert stored is not None
        pincode_id = stored.keys[0].pincode_id
        now = datetime.now(UTC)
        devices.record_event(
            session,
            automat_id,
            AutomatEventType.CODE_ENTERED,
            code_at,
            now,
            locker_index=0,
            code=key["storageInfo"]["pincode"],
            data={"pincodeId": pincode_id},
        )
        SqlContractStore(session).set_key(created["id"], 0, opened_at=code_at)
        devices.record_event(
            session,
            automat_id,
            AutomatEventType.KEY_REMOVED,
            code_at + timedelta(minutes=1),
            now,
            locker_index=0,
            key_id=key["id"],
        )

    container.db.transaction(device_events)
    linked = container.db.transaction(
        lambda s: s.scalar(
            select(func.count()).where(automat_events.c.contract_id == created["id"])
        )
    )
    assert linked == 2
    add_user(container, acme.unit_id, "anna@acme.fi")
    sign_in(browser, "anna@acme.fi")
    page = browser.get(f"/console/contracts/iloq/{created['id']}").text
    assert "2026-01-05 12:30 EET" in page
    assert "Code entered at the automat" in page
    assert "Key fetched" in page
    assert key["storageInfo"]["pincode"] not in page.split("Timeline")[1]  # the typed code
    assert "Webhook contract-update" in page
    assert "Webhook key-status (key-fetched)" in page
    assert "Webhook code-entered" in page
    assert "PMS: queued" in page


def mechanical_form(csrf: str, **extra: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "csrf": csrf,
        "public_id": "booking #1 2?",
        "key": ["m"],
        "start": wall_clock(-1),
        "end": wall_clock(24),
        "timezone": "Europe/Helsinki",
        "contact_name": "John Doe",
        "contact_email": "john@example.com",
        "user_verification": "0",
    }
    form.update(extra)
    return form


def test_staff_hand_a_manual_key_over_and_take_it_back_on_a_mechanical_contracts_page(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    acme.api.post(
        "/mechanical/keys",
        {
            "id": "m",
            "name": "Flat 3 <A>",
            "selectedStorage": {"manualStorageInfo": "Desk"},
            "away": False,
        },
    )
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    csrf = sign_in(browser, "op@acme.fi")
    refused = browser.post(
        "/console/contracts/new/mechanical", data=mechanical_form(csrf, public_id="a/b")
    )
    assert refused.status_code == 400
    assert 'id="e-public_id"' in refused.text
    answer = browser.post(
        "/console/contracts/new/mechanical", data=mechanical_form(csrf), follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    base = answer.headers["location"].split("?")[0]
    assert base == "/console/contracts/mechanical/booking%20%231%202%3F"
    page = browser.get(base)
    assert page.status_code == 200
    assert "Flat 3 &lt;A&gt;" in page.text
    handed = browser.post(f"{base}/handover", data={"csrf": csrf, "key_id": "m"})
    assert "The key is recorded as handed over." in handed.text
    back = browser.post(f"{base}/return", data={"csrf": csrf, "key_id": "m"})
    assert "The key is recorded as returned." in back.text
    assert "Key fetched" in back.text
    assert "Key returned" in back.text
    again = browser.post(f"{base}/return", data={"csrf": csrf, "key_id": "m"})
    assert again.status_code == 400
    assert "has not been handed over" in again.text


def test_a_stored_signature_is_shown_escaped_and_only_as_a_raster_image(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    acme.api.post(
        "/mechanical/keys",
        {"id": "m", "selectedStorage": {"manualStorageInfo": "Desk"}, "away": False},
    )
    body = {
        "id": "signed",
        "start": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "contact": {"name": "John"},
        "keys": [{"id": "m"}],
        "userVerification": "1",
    }
    created = acme.api.post("/mechanical/keycontracts", body)
    add_user(container, acme.unit_id, "viewer@acme.fi", ConsoleRole.VIEWER)
    sign_in(browser, "viewer@acme.fi")
    page = f"/console/contracts/mechanical/{created['id']}"
    assert "awaited" in browser.get(page).text
    svg = "data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+"
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="

    def signed_with(data: str) -> None:
        container.db.transaction(
            lambda s: s.execute(
                mechanical_contracts.update().values(
                    signed_at=datetime.now(UTC),
                    signature_name='<img src=x onerror="alert(1)">',
                    signature_data=data,
                )
            )
        )

    for data, shown in ((svg, False), (png, True)):
        signed_with(data)
        text = browser.get(page).text
        assert '<img src=x onerror="alert(1)">' not in text
        assert "&lt;img src=x onerror=" in text
        assert (f'src="{data}"' in text) is shown
        assert "svg" not in text.split("Signature")[1].split("</section>")[0]
