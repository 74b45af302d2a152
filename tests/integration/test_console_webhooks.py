"""The console's webhook pages over HTTP: a subscription created with its secret shown once,
the test delivery, the delivery log with each delivery's attempts, redeliver, recover,
enable, rotate; admins only, scoped like the API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from keyautomat.adapters import orm
from keyautomat.adapters.orm_webhooks import webhook_subscriptions
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.model import OrgUnitType
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer.clock import SystemClock
from tests.conftest import Tenant, make_tenant
from tests.console_support import add_user, console_client, sign_in
from tests.contract_helpers import default_contract, stocked_automat
from tests.integration.webhook_support import admin, drain, subscribe
from tests.webhook_receiver import Receiver, running_receiver

_SECRET = re.compile(r'<code class="mono secret-value" id="secret">(whsec_[^<]+)</code>')
_DELIVERY = re.compile(r'href="(/console/webhooks/[0-9a-f]{24}/deliveries/(\d+))"')


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A local receiver on 127.0.0.1 over http (gaps.md G8).
    return settings.model_copy(update={"webhooks_allow_private": True})


@pytest.fixture
def browser(container: Container) -> Iterator[TestClient]:
    with console_client(container) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


def secret_of(html: str) -> str | None:
    match = _SECRET.search(html)
    return match.group(1) if match else None


def test_an_admin_subscribes_sees_the_secret_once_and_the_test_activates_it(
    container: Container, browser: TestClient, acme: Tenant, receiver: Receiver
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    form = {
        "csrf": csrf,
        "name": "PMS <prod>",
        "url": receiver.url,
        "organization_unit_id": acme.unit_id,
        "event_types": ["key-status", "contract-update"],
    }
    refused = browser.post("/console/webhooks/new", data={**form, "url": "ftp://x"})
    assert refused.status_code == 400
    assert 'id="e-url"' in refused.text
    created = browser.post("/console/webhooks/new", data=form)
    secret = secret_of(created.text)
    assert secret is not None
    assert "PMS &lt;prod&gt;" in created.text
    (sub,) = admin(acme, browser).get("/admin/webhooks")["data"]
    page = f"/console/webhooks/{sub['id']}"
    shown = browser.get(page).text
    assert secret_of(shown) is None  # once only
    assert secret not in shown
    assert f"ends in {secret[-4:]}" in shown
    receiver.secrets.append(secret)
    tested = browser.post(f"{page}/test", data={"csrf": csrf})
    assert "Every test delivery got a 2xx answer." in tested.text
    assert admin(acme, browser).get(f"/admin/webhooks/{sub['id']}")["state"] == "active"
    rotated = browser.post(f"{page}/rotate-secret", data={"csrf": csrf})
    new_secret = secret_of(rotated.text)
    assert new_secret is not None
    assert new_secret != secret
    assert secret_of(browser.get(page).text) is None


def test_the_delivery_log_shows_attempts_and_a_failed_delivery_is_delivered_again(
    container: Container, browser: TestClient, acme: Tenant, receiver: Receiver
) -> None:
    sub = subscribe(admin(acme, browser), receiver, acme.unit_id, ["contract-update"])
    automat_id, _ = stocked_automat(container, acme)
    failing = True
    receiver.plan = lambda _r: 500 if failing else None
    contract = acme.api.post("/iloq/keycontracts", default_contract(automat_id))
    worker = OutboxWorker(container.db, container.dispatcher, SystemClock(), worker_id="w1")
    drain(worker)
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    page = browser.get(f"/console/webhooks/{sub['id']}").text
    assert "contract-update" in page
    link, delivery_id = _DELIVERY.findall(page)[0]
    delivery = browser.get(link).text
    assert "HTTP status" in delivery
    assert "500" in delivery
    assert contract["id"] in delivery  # the body, as sent
    assert contract["keys"][0]["storageInfo"]["pincode"] in delivery  # admins only
    # Give up on it, as the worker would after its last attempt, then send it again.
    container.db.transaction(
        lambda s: s.execute(
            update(orm.outbox).where(orm.outbox.c.id == int(delivery_id)).values(status="failed")
        )
    )
    failing = False
    again = browser.post(f"{link}/redeliver", data={"csrf": csrf})
    assert "The delivery is queued again." in again.text
    assert f"/deliveries/{delivery_id}" not in str(again.url)
    drain(worker)
    assert any(
        r.payload["data"].get("contractObjectId") == contract["id"] for r in receiver.accepted
    )


def test_recover_queues_failed_deliveries_and_enable_releases_what_a_disabled_one_held(
    container: Container, browser: TestClient, acme: Tenant, receiver: Receiver
) -> None:
    sub = subscribe(admin(acme, browser), receiver, acme.unit_id, ["contract-update"])
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    page = f"/console/webhooks/{sub['id']}"
    since = (datetime.now(UTC) - timedelta(hours=1)).astimezone(ZoneInfo("Europe/Helsinki"))
    recovered = browser.post(
        f"{page}/recover",
        data={
            "csrf": csrf,
            "since": since.strftime("%Y-%m-%dT%H:%M"),
            "timezone": "Europe/Helsinki",
        },
    )
    assert "0 failed deliveries are queued again." in recovered.text
    bad = browser.post(
        f"{page}/recover", data={"csrf": csrf, "since": "soon", "timezone": "Europe/Helsinki"}
    )
    assert bad.status_code == 400
    assert 'id="e-since"' in bad.text
    container.db.transaction(
        lambda s: s.execute(
            update(webhook_subscriptions)
            .where(webhook_subscriptions.c.id == sub["id"])
            .values(state="disabled", disabled_at=datetime.now(UTC))
        )
    )
    assert "Enable and send what was held" in browser.get(page).text
    enabled = browser.post(f"{page}/enable", data={"csrf": csrf, "recover": "1"})
    assert "The subscription is enabled (0 sent, 0 dropped)." in enabled.text
    assert admin(acme, browser).get(f"/admin/webhooks/{sub['id']}")["state"] == "active"


def test_only_admins_open_webhooks_and_another_units_subscription_is_404(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient, receiver: Receiver
) -> None:
    sub = subscribe(admin(acme, browser), receiver, acme.unit_id, activate=False)
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    csrf = sign_in(browser, "op@acme.fi")
    assert "/console/webhooks" not in browser.get("/console/").text  # no link for operators
    assert browser.get("/console/webhooks").status_code == 403
    assert browser.get(f"/console/webhooks/{sub['id']}").status_code == 403
    assert (
        browser.post(f"/console/webhooks/{sub['id']}/test", data={"csrf": csrf}).status_code == 403
    )
    browser.cookies.clear()
    child = make_tenant(
        container, http, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    add_user(container, child.unit_id, "east@acme.fi")
    csrf = sign_in(browser, "east@acme.fi")
    assert sub["name"] not in browser.get("/console/webhooks").text
    assert browser.get(f"/console/webhooks/{sub['id']}").status_code == 404
    answer = browser.post(f"/console/webhooks/{sub['id']}/delete", data={"csrf": csrf})
    assert answer.status_code == 404
    assert admin(acme, browser).get(f"/admin/webhooks/{sub['id']}")["id"] == sub["id"]
