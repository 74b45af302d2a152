"""Webhook subscriptions: their health and state, the delivery log with each delivery's
attempts, and test, redeliver, recover, enable, rotate the secret, create and delete
(docs/console.md, "Webhooks").

Admins only, as the API's ``/admin/webhooks``: a delivery's body carries pincodes. Every
change calls the use case the API's route calls (``service_layer/webhooks.py``, and
``webhook_delivery.WebhookService`` for what talks to a receiver).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from keyautomat.domain import webhooks as wh
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.entrypoints.console.forms import form_errors, wall_clock, zone_of
from keyautomat.entrypoints.console.strings import t
from keyautomat.entrypoints.console.web import (
    PREFIX,
    SignedIn,
    Submission,
    Submitted,
    console_of,
    notice_text,
    render,
    see_other,
)
from keyautomat.service_layer import console_views, notifications, webhooks
from keyautomat.service_layer.pagination import MAX_URL_DIGITS, PageRequest, small_natural
from keyautomat.service_layer.principal import Principal
from keyautomat.service_layer.webhook_delivery import TestReport
from keyautomat.service_layer.webhooks import Attempt, Delivery, Subscription

router = APIRouter(prefix="/webhooks", include_in_schema=False)

LOG_SIZE = 25
NOTICES = ("webhooks.redelivered", "webhooks.deleted")
FIELDS = {
    "name": "name",
    "url": "url",
    "eventTypes": "event_types",
    "organizationUnitId": "organization_unit_id",
    "since": "since",
}


def _number(value: str | None, what: str) -> int | None:
    if value in (None, ""):
        return None
    assert value is not None
    number = small_natural(value)
    if number is None:
        raise NotFound(what)
    return number


@router.get("")
async def subscription_list(request: Request, me: SignedIn) -> HTMLResponse:
    me.principal.require_admin()
    container = console_of(request).container
    page = PageRequest.parse(request.query_params.get("after"), None, default_limit=LOG_SIZE)
    found = await container.db.run(lambda s: webhooks.list_subscriptions(s, me.principal, page))
    return render(
        request,
        "webhooks.html",
        section="webhooks",
        page=found,
        request_page=page,
        notice=notice_text(request.query_params.get("notice"), NOTICES),
    )


# --- a new subscription (before "/{id}": "new" names none) ------------------------------


async def _new_form(
    request: Request,
    principal: Principal,
    values: dict[str, str],
    chosen: list[str],
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    principal.require_admin()
    container = console_of(request).container
    units, _ = await container.db.run(lambda s: console_views.install_choices(s, principal))
    return render(
        request,
        "webhook_new.html",
        status=status,
        section="webhooks",
        units=units,
        event_types=wh.EVENT_TYPES,
        values=values,
        chosen=chosen,
        errors=errors or {},
    )


@router.get("/new")
async def new_page(request: Request, me: SignedIn) -> HTMLResponse:
    return await _new_form(request, me.principal, {}, list(wh.EVENT_TYPES))


@router.post("/new")
async def create(request: Request, submitted: Submitted) -> Response:
    """The new subscription's secret is shown on this answer only."""
    principal = submitted.identity.principal
    principal.require_admin()
    container = console_of(request).container
    chosen = submitted.every("event_types", max_length=32)
    try:
        sub, secret = await container.webhooks.create(
            principal,
            name=submitted.required("name"),
            url=submitted.required("url", max_length=2000),
            organization_unit_id=submitted.required("organization_unit_id", max_length=24),
            event_types=chosen,
        )
    except InvalidInput as exc:
        values = {k: submitted.form.get(k, "") for k in ("name", "url", "organization_unit_id")}
        return await _new_form(
            request, principal, values, chosen, form_errors(exc, FIELDS), status=400
        )
    page = await _subscription_page(request, principal, sub.id)
    return _show(request, page, secret=secret)


# --- one subscription and its log -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionPage:
    subscription: Subscription
    deliveries: list[Delivery]
    more_before: int | None  # the id to page on from, when older deliveries exist
    timezone: str


async def _subscription_page(
    request: Request, principal: Principal, subscription_id: str
) -> SubscriptionPage:
    principal.require_admin()
    container = console_of(request).container
    before = _number(request.query_params.get("before"), "Delivery")

    def work(session: Session) -> SubscriptionPage:
        sub = webhooks.get_subscription(session, principal, subscription_id)
        rows = webhooks.list_deliveries(
            session,
            principal,
            subscription_id,
            before_id=before if before is not None else 10**MAX_URL_DIGITS,
            limit=LOG_SIZE + 1,
        )
        zone = notifications.load_settings(session, sub.organization_unit_id).timezone
        more = rows[LOG_SIZE - 1].id if len(rows) > LOG_SIZE else None
        return SubscriptionPage(sub, rows[:LOG_SIZE], more, zone)

    return await container.db.run(work)


def _show(
    request: Request,
    page: SubscriptionPage,
    *,
    secret: str | None = None,
    report: TestReport | None = None,
    message: str | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "webhook.html",
        status=status,
        section="webhooks",
        p=page,
        s=page.subscription,
        secret=secret,
        report=report,
        notice=message or notice_text(request.query_params.get("notice"), NOTICES),
        errors=errors or {},
    )


@router.get("/{subscription_id}")
async def subscription_detail(request: Request, subscription_id: str, me: SignedIn) -> Response:
    return _show(request, await _subscription_page(request, me.principal, subscription_id))


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    subscription: Subscription
    delivery: Delivery
    attempts: list[Attempt]
    body: str  # indented for reading
    timezone: str


@router.get("/{subscription_id}/deliveries/{delivery_id}")
async def delivery_detail(
    request: Request, subscription_id: str, delivery_id: str, me: SignedIn
) -> HTMLResponse:
    me.principal.require_admin()
    number = _number(delivery_id, "Delivery")
    assert number is not None
    container = console_of(request).container

    def work(session: Session) -> DeliveryPage:
        sub = webhooks.get_subscription(session, me.principal, subscription_id)
        delivery = webhooks.get_delivery(session, me.principal, subscription_id, number)
        log = webhooks.list_attempts(session, me.principal, subscription_id, delivery_id=number)
        zone = notifications.load_settings(session, sub.organization_unit_id).timezone
        body = json.dumps(json.loads(delivery.body), indent=2, ensure_ascii=False)
        return DeliveryPage(sub, delivery, log, body, zone)

    page = await container.db.run(work)
    return render(
        request,
        "webhook_delivery.html",
        section="webhooks",
        p=page,
        s=page.subscription,
        d=page.delivery,
        notice=notice_text(request.query_params.get("notice"), NOTICES),
    )


# --- changing one -----------------------------------------------------------------------


@router.post("/{subscription_id}/test")
async def test(request: Request, subscription_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    principal.require_admin()
    report = await console_of(request).container.webhooks.test(principal, subscription_id)
    page = await _subscription_page(request, principal, subscription_id)
    return _show(request, page, report=report)


@router.post("/{subscription_id}/rotate-secret")
async def rotate_secret(request: Request, subscription_id: str, submitted: Submitted) -> Response:
    """The new secret is shown on this answer only (never stored in clear, never again)."""
    principal = submitted.identity.principal
    principal.require_admin()
    container = console_of(request).container
    _, secret = await container.webhooks.rotate_secret(principal, subscription_id)
    page = await _subscription_page(request, principal, subscription_id)
    return _show(request, page, secret=secret)


@router.post("/{subscription_id}/enable")
async def enable(request: Request, subscription_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    principal.require_admin()
    container = console_of(request).container
    recover = submitted.form.get("recover") == "1"
    now = container.clock.now()
    done = await container.db.run(
        lambda s: webhooks.enable(s, principal, subscription_id, recover=recover, now=now)
    )
    page = await _subscription_page(request, principal, subscription_id)
    message = t("webhooks.enabled", recovered=done.recovered, dropped=done.dropped)
    return _show(request, page, message=message)


def _since(submitted: Submission) -> datetime:
    since = wall_clock(submitted, "since", zone_of(submitted))
    if since is None:
        raise InvalidInput("since", t("form.required"))
    return since


@router.post("/{subscription_id}/recover")
async def recover(request: Request, subscription_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    principal.require_admin()
    container = console_of(request).container
    now = container.clock.now()
    try:
        since = _since(submitted)
    except InvalidInput as exc:
        page = await _subscription_page(request, principal, subscription_id)
        return _show(request, page, errors=form_errors(exc, FIELDS), status=400)
    done = await container.db.run(
        lambda s: webhooks.recover(s, principal, subscription_id, since, now)
    )
    page = await _subscription_page(request, principal, subscription_id)
    return _show(request, page, message=t("webhooks.recovered", count=len(done)))


@router.post("/{subscription_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(
    request: Request, subscription_id: str, delivery_id: str, submitted: Submitted
) -> Response:
    principal = submitted.identity.principal
    principal.require_admin()
    number = _number(delivery_id, "Delivery")
    assert number is not None
    container = console_of(request).container
    now = container.clock.now()
    new = await container.db.run(
        lambda s: webhooks.redeliver(s, principal, subscription_id, number, now)
    )
    return see_other(
        f"{PREFIX}/webhooks/{subscription_id}/deliveries/{new.id}", notice="webhooks.redelivered"
    )


@router.post("/{subscription_id}/delete")
async def delete(request: Request, subscription_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    principal.require_admin()
    container = console_of(request).container
    now = container.clock.now()
    await container.db.run(
        lambda s: webhooks.delete_subscription(s, principal, subscription_id, now=now)
    )
    return see_other(f"{PREFIX}/webhooks", notice="webhooks.deleted")
