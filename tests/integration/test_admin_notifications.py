"""The admin view of notifications and the organization notification settings, over HTTP."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.domain.model import OrgUnitType
from keyautomat.domain.notifications import NotificationType
from keyautomat.service_layer import notifications as notify
from tests.conftest import Tenant, make_tenant
from tests.integration.notify_support import make_view


def admin(tenant: Tenant, http: TestClient) -> Client:
    return Client("http://testserver", tenant.account_id, tenant.private_key, http=http)


def seed(container: Container, unit: str, contract_id: str) -> None:
    now = container.clock.now()
    view = make_view(unit, now, contract_id=contract_id, send_sms=True, send_email=True)

    def work(session: Session) -> None:
        notify.notify(session, view, NotificationType.CONTRACT_CREATED, now=now)
        notify.schedule_reminders(session, view, now=now)

    container.db.transaction(work)


def test_an_admin_lists_the_state_of_each_notification_in_its_subtree_only(
    container: Container, http: TestClient, acme: Tenant
) -> None:
    child = make_tenant(
        container, http, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.AREA
    )
    stranger = make_tenant(container, http, name="Other Org")
    seed(container, acme.unit_id, "top")
    seed(container, child.unit_id, "east")
    seed(container, stranger.unit_id, "theirs")

    response = admin(acme, http).request("GET", "/admin/notifications?limit=100")
    assert response.status_code == 200, response.text
    body = response.json()
    contracts = {n["contractId"] for n in body["data"]}
    assert contracts == {"top", "east"}
    first = body["data"][0]
    assert first["status"] == "queued"
    assert first["attempts"] == 0
    assert first["channel"] in {"sms", "email"}
    assert first["dueAt"].endswith("Z")

    east = admin(child, http).request("GET", "/admin/notifications?contractId=top").json()
    assert east["data"] == []  # a child unit does not see its parent's messages
    theirs = admin(acme, http).request("GET", "/admin/notifications?contractId=theirs").json()
    assert theirs["data"] == []


def test_the_list_filters_by_contract_and_status_and_pages_by_cursor(
    container: Container, http: TestClient, acme: Tenant
) -> None:
    seed(container, acme.unit_id, "one")
    seed(container, acme.unit_id, "two")
    client = admin(acme, http)
    created = client.request("GET", "/admin/notifications?contractId=one&type=contractCreated")
    assert {n["channel"] for n in created.json()["data"]} == {"sms", "email"}

    first = client.request("GET", "/admin/notifications?contractId=two&limit=3").json()
    assert first["hasNext"] is True
    rest = client.request(
        "GET", f"/admin/notifications?contractId=two&limit=100&after={first['after']}"
    ).json()
    ids = [n["id"] for n in first["data"] + rest["data"]]
    assert len(ids) == len(set(ids)) == 8  # created + 3 scheduled, on two channels

    container.db.transaction(lambda s: notify.cancel_reminders(s, "two"))
    cancelled = client.request("GET", "/admin/notifications?contractId=two&status=cancelled")
    assert len(cancelled.json()["data"]) == 6

    bad = client.request("GET", "/admin/notifications?status=lost")
    assert bad.status_code == 400
    assert bad.json()["message"][0].startswith("status: must be one of")


def test_organization_settings_are_inherited_and_overridden_per_unit(
    container: Container, http: TestClient, acme: Tenant
) -> None:
    child = make_tenant(
        container, http, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.AREA
    )
    client = admin(acme, http)
    path = f"/admin/organizationunits/{acme.unit_id}/notification-settings"
    put = client.request(
        "PUT",
        path,
        {
            "defaults": {"contractStartReminder": {"sms": True}},
            "startReminderLeadMinutes": 120,
            "timezone": "Europe/Stockholm",
            "senderName": "Acme Keys",
        },
    )
    assert put.status_code == 200, put.text
    child_view = client.request(
        "GET", f"/admin/organizationunits/{child.unit_id}/notification-settings"
    ).json()
    effective = child_view["effective"]
    assert effective["defaults"]["contractStartReminder"] == {"sms": True, "email": False}
    assert effective["startReminderLeadMinutes"] == 120
    assert effective["endReminderLeadMinutes"] == 24 * 60
    assert effective["timezone"] == "Europe/Stockholm"
    assert child_view["override"]["timezone"] is None

    org = container.db.transaction(lambda s: notify.load_settings(s, child.unit_id))
    assert org.start_reminder_lead == timedelta(hours=2)
    assert org.sender_name == "Acme Keys"

    bad = client.request("PUT", path, {"timezone": "Mars/Olympus"})
    assert bad.status_code == 400
    assert bad.json()["message"] == ["timezone: must be an IANA time zone such as Europe/Helsinki"]
    hidden = admin(child, http).request("GET", path)
    assert hidden.status_code == 404


def test_only_admins_change_notification_settings(
    http: TestClient, acme: Tenant, acme_pms: Tenant
) -> None:
    integration = acme_pms
    path = f"/admin/organizationunits/{integration.unit_id}/notification-settings"
    response = admin(integration, http).request("PUT", path, {"senderName": "Me"})
    assert response.status_code == 403
