"""The console's notification page over HTTP: a unit's defaults and lead times through the
API's settings use case, and the message log with each message's state; admins only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.model import OrgUnitType
from tests.conftest import Tenant, make_tenant
from tests.console_support import add_user, console_client, sign_in
from tests.contract_helpers import default_contract, stocked_automat
from tests.devices import admin_client


@pytest.fixture
def browser(container: Container) -> Iterator[TestClient]:
    with console_client(container) as client:
        yield client


def test_an_admin_overrides_a_units_defaults_and_lead_times_and_a_child_inherits_them(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient
) -> None:
    child = make_tenant(
        container, http, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    form = {
        "csrf": csrf,
        "d.contractCreated.sms": "off",
        "d.contractKeyFetched.email": "on",
        "start_lead": "90",
        "sender_name": "Acme <desk>",
    }
    refused = browser.post(
        f"/console/notifications/settings/{acme.unit_id}", data={**form, "timezone": "Mars/Base"}
    )
    assert refused.status_code == 400
    assert 'id="e-timezone"' in refused.text
    bad_lead = browser.post(
        f"/console/notifications/settings/{acme.unit_id}", data={**form, "start_lead": "-5"}
    )
    assert 'id="e-start_lead"' in bad_lead.text
    saved = browser.post(f"/console/notifications/settings/{acme.unit_id}", data=form)
    assert "The settings are saved." in saved.text
    assert "Acme &lt;desk&gt;" in saved.text
    api = admin_client(acme, http)
    shown = api.get(f"/admin/organizationunits/{acme.unit_id}/notification-settings")
    assert shown["override"]["startReminderLeadMinutes"] == 90
    assert shown["override"]["defaults"]["contractCreated"] == {"sms": False, "email": None}
    inherited = api.get(f"/admin/organizationunits/{child.unit_id}/notification-settings")
    assert inherited["effective"]["senderName"] == "Acme <desk>"
    page = browser.get("/console/notifications", params={"unit": child.unit_id}).text
    assert "90 minutes now" in page
    assert browser.get("/console/notifications", params={"unit": "nope"}).status_code == 404


def test_the_message_log_shows_each_messages_state_and_links_its_contract(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme)
    contact = {"name": "Maija", "email": "maija@example.com", "sendEmail": True}
    created = acme.api.post("/iloq/keycontracts", default_contract(automat_id, contact=contact))
    add_user(container, acme.unit_id, "anna@acme.fi")
    sign_in(browser, "anna@acme.fi")
    page = browser.get("/console/notifications").text
    assert "contractCreated" in page
    assert "email: maija@example.com" in page
    assert f"/console/contracts/iloq/{created['id']}" in page
    queued = browser.get("/console/notifications", params={"state": "sent"}).text
    assert "maija@example.com" not in queued  # none has gone yet


def test_only_admins_open_notifications_and_a_parents_unit_is_404(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient
) -> None:
    child = make_tenant(
        container, http, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    csrf = sign_in(browser, "op@acme.fi")
    assert browser.get("/console/notifications").status_code == 403
    answer = browser.post(
        f"/console/notifications/settings/{acme.unit_id}", data={"csrf": csrf, "start_lead": "1"}
    )
    assert answer.status_code == 403
    browser.cookies.clear()
    add_user(container, child.unit_id, "east@acme.fi")
    csrf = sign_in(browser, "east@acme.fi")
    assert browser.get("/console/notifications", params={"unit": acme.unit_id}).status_code == 404
    answer = browser.post(
        f"/console/notifications/settings/{acme.unit_id}", data={"csrf": csrf, "start_lead": "1"}
    )
    assert answer.status_code == 404
