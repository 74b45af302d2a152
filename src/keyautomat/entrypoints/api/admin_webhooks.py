"""Webhook subscriptions under ``/admin/webhooks`` (gaps.md G1), signed and scoped like V2.

The secret is answered exactly once, by create and by rotate-secret; every
other answer shows only its last four characters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import Field
from sqlalchemy.orm import Session

from keyautomat.domain.errors import NotFound
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import (
    ApiModel,
    InputDatetime,
    NonEmptyStr,
    Paginated,
    StrictBool,
    StrictStr,
    UtcDatetime,
)
from keyautomat.service_layer import webhooks
from keyautomat.service_layer.pagination import MAX_LIMIT, PageRequest, small_natural
from keyautomat.service_layer.webhook_delivery import TestReport

router = APIRouter(prefix="/webhooks", tags=["webhooks"])  # under /admin (admin.build_router)


class LastDelivery(ApiModel):
    id: str
    webhook_id: str
    event_type: str
    status: str
    attempts: int
    status_code: int | None
    error: str | None
    next_attempt_at: UtcDatetime | None


class Health(ApiModel):
    """What the subscription's live deliveries have shown (docs/webhooks.md, "Health")."""

    delivered: int  # deliveries that got a 2xx
    failed: int  # deliveries abandoned after their whole retry schedule
    last_success_at: UtcDatetime | None
    last_failure_at: UtcDatetime | None  # the last failed attempt
    # The first failed attempt after the last success; null while deliveries succeed.
    failing_since: UtcDatetime | None
    held: int  # deliveries kept aside while disabled


class Subscription(ApiModel):
    id: str
    name: str
    url: str
    organization_unit_id: str
    event_types: list[str]
    state: str  # pending, active, disabled
    secret_last4: str
    previous_secret_expires_at: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    activated_at: UtcDatetime | None
    disabled_at: UtcDatetime | None
    health: Health
    last_delivery: LastDelivery | None = None


class CreatedSubscription(Subscription):
    # Shown here and by rotate-secret only; it cannot be read back later.
    secret: str


class CreateSubscriptionDto(ApiModel):
    name: NonEmptyStr
    url: NonEmptyStr
    organization_unit_id: NonEmptyStr
    event_types: list[StrictStr] = Field(min_length=1)


class UpdateSubscriptionDto(ApiModel):
    name: NonEmptyStr | None = None
    url: NonEmptyStr | None = None
    event_types: list[StrictStr] | None = None


class TestDeliveryResult(ApiModel):
    event_type: str
    webhook_id: str
    success: bool
    status_code: int | None
    latency_ms: int
    error: str | None


class TestDeliveryReport(ApiModel):
    success: bool
    state: str
    results: list[TestDeliveryResult]


class Delivery(ApiModel):
    id: str
    webhook_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: UtcDatetime | None
    last_error: str | None
    created_at: UtcDatetime
    finished_at: UtcDatetime | None


class AttemptOut(ApiModel):
    id: str
    delivery_id: str | None
    webhook_id: str
    event_type: str
    url: str
    attempt: int
    test: bool
    attempted_at: UtcDatetime
    status_code: int | None
    latency_ms: int
    success: bool
    error: str | None


class DeliveryDetail(Delivery):
    body: str
    attempt_log: list[AttemptOut]


class RecoverDto(ApiModel):
    since: InputDatetime


class EnableDto(ApiModel):
    # true: send what was kept aside while disabled, in order; false: drop it.
    recover: StrictBool = False


class EnableResult(ApiModel):
    recovered: int
    dropped: int
    subscription: Subscription


class RecoverResult(ApiModel):
    count: int
    data: list[Delivery]


def _subscription(session: Session, sub: webhooks.Subscription) -> Subscription:
    last = webhooks.last_delivery(session, sub.id)
    last_out = None
    if last is not None:
        last_out = LastDelivery(
            id=str(last.id),
            webhook_id=last.webhook_id,
            event_type=last.event_type,
            status=last.status,
            attempts=last.attempts,
            status_code=webhooks.last_attempt_status(session, sub.id),
            error=last.last_error,
            next_attempt_at=last.next_attempt_at,
        )
    return Subscription(**_fields(sub), last_delivery=last_out)


def _fields(sub: webhooks.Subscription) -> dict[str, Any]:
    health = sub.health
    return {
        "id": sub.id,
        "name": sub.name,
        "url": sub.url,
        "organization_unit_id": sub.organization_unit_id,
        "event_types": sub.event_types,
        "state": sub.state,
        "secret_last4": sub.secret_last4,
        "previous_secret_expires_at": sub.previous_secret_expires_at,
        "created_at": sub.created_at,
        "updated_at": sub.updated_at,
        "activated_at": sub.activated_at,
        "disabled_at": health.disabled_at,
        "health": Health(
            delivered=health.delivered,
            failed=health.failed,
            last_success_at=health.last_success_at,
            last_failure_at=health.last_failure_at,
            failing_since=health.failing_since,
            held=sub.held,
        ),
    }


def _with_secret(sub: webhooks.Subscription, secret: str) -> CreatedSubscription:
    return CreatedSubscription(**_fields(sub), secret=secret)


def _delivery(d: webhooks.Delivery) -> Delivery:
    return Delivery(
        id=str(d.id),
        webhook_id=d.webhook_id,
        event_type=d.event_type,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_error=d.last_error,
        created_at=d.created_at,
        finished_at=d.finished_at,
    )


def _attempt(a: webhooks.Attempt) -> AttemptOut:
    return AttemptOut(
        id=str(a.id),
        delivery_id=None if a.delivery_id is None else str(a.delivery_id),
        webhook_id=a.webhook_id,
        event_type=a.event_type,
        url=a.url,
        attempt=a.attempt,
        test=a.is_test,
        attempted_at=a.attempted_at,
        status_code=a.status_code,
        latency_ms=a.latency_ms,
        success=a.success,
        error=a.error,
    )


def _delivery_id(value: str) -> int:
    number = small_natural(value)
    if number is None:
        raise NotFound("Delivery")
    return number


@router.post("", status_code=201)
async def create_subscription(
    body: CreateSubscriptionDto, caller: Caller, services: Services
) -> CreatedSubscription:
    sub, secret = await services.webhooks.create(
        caller,
        name=body.name,
        url=body.url,
        organization_unit_id=body.organization_unit_id,
        event_types=body.event_types,
    )
    return _with_secret(sub, secret)


@router.get("")
async def list_subscriptions(
    caller: Caller, services: Services, after: str | None = None, limit: str | None = None
) -> Paginated[Subscription]:
    page = PageRequest.parse(after, limit)

    def work(session: Session) -> Paginated[Subscription]:
        result = webhooks.list_subscriptions(session, caller, page)
        return Paginated[Subscription].of(result, [_subscription(session, s) for s in result.items])

    return await services.db.run(work)


@router.get("/{id}")
async def get_subscription(id: str, caller: Caller, services: Services) -> Subscription:  # noqa: A002
    return await services.db.run(
        lambda s: _subscription(s, webhooks.get_subscription(s, caller, id))
    )


@router.patch("/{id}")
async def update_subscription(
    id: str,  # noqa: A002
    body: UpdateSubscriptionDto,
    caller: Caller,
    services: Services,
) -> Subscription:
    sub = await services.webhooks.update(
        caller, id, name=body.name, event_types=body.event_types, url=body.url
    )
    return await services.db.run(lambda s: _subscription(s, sub))


@router.delete("/{id}", status_code=204, response_class=Response)
async def delete_subscription(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    now = services.clock.now()
    await services.db.run(lambda s: webhooks.delete_subscription(s, caller, id, now=now))
    return Response(status_code=204)


@router.post("/{id}/test")
async def test_subscription(id: str, caller: Caller, services: Services) -> TestDeliveryReport:  # noqa: A002
    report: TestReport = await services.webhooks.test(caller, id)
    return TestDeliveryReport(
        success=report.success,
        state=report.subscription.state,
        results=[
            TestDeliveryResult(
                event_type=r.event_type,
                webhook_id=r.webhook_id,
                success=r.success,
                status_code=r.status_code,
                latency_ms=r.latency_ms,
                error=r.error,
            )
            for r in report.results
        ],
    )


@router.post("/{id}/rotate-secret")
async def rotate_secret(id: str, caller: Caller, services: Services) -> CreatedSubscription:  # noqa: A002
    sub, secret = await services.webhooks.rotate_secret(caller, id)
    return _with_secret(sub, secret)


@router.get("/{id}/deliveries")
async def list_deliveries(
    id: str,  # noqa: A002
    caller: Caller,
    services: Services,
    status: str | None = None,
    after: Annotated[str | None, Query(description="id of the last delivery seen")] = None,
    limit: Annotated[str | None, Query(description="1-100, default 100")] = None,
) -> list[Delivery]:
    page = PageRequest.parse(after, limit, default_limit=MAX_LIMIT)
    rows = await services.db.run(
        lambda s: webhooks.list_deliveries(
            s, caller, id, status=status, after_id=page.offset, limit=page.limit
        )
    )
    return [_delivery(d) for d in rows]


@router.get("/{id}/deliveries/{delivery_id}")
async def get_delivery(
    id: str,  # noqa: A002
    delivery_id: str,
    caller: Caller,
    services: Services,
) -> DeliveryDetail:
    number = _delivery_id(delivery_id)

    def work(session: Session) -> DeliveryDetail:
        d = webhooks.get_delivery(session, caller, id, number)
        log = webhooks.list_attempts(session, caller, id, delivery_id=number)
        return DeliveryDetail(
            **_delivery(d).model_dump(),
            body=d.body,
            attempt_log=[_attempt(a) for a in log],
        )

    return await services.db.run(work)


@router.post("/{id}/deliveries/{delivery_id}/redeliver", status_code=202)
async def redeliver(
    id: str,  # noqa: A002
    delivery_id: str,
    caller: Caller,
    services: Services,
) -> Delivery:
    number = _delivery_id(delivery_id)
    now = services.clock.now()
    return _delivery(
        await services.db.run(lambda s: webhooks.redeliver(s, caller, id, number, now))
    )


@router.post("/{id}/recover", status_code=202)
async def recover(
    id: str,  # noqa: A002
    body: RecoverDto,
    caller: Caller,
    services: Services,
) -> RecoverResult:
    now = services.clock.now()
    since: datetime = body.since
    rows = await services.db.run(lambda s: webhooks.recover(s, caller, id, since, now))
    return RecoverResult(count=len(rows), data=[_delivery(d) for d in rows])


@router.post("/{id}/enable")
async def enable(
    id: str,  # noqa: A002
    caller: Caller,
    services: Services,
    body: EnableDto | None = None,
) -> EnableResult:
    """Re-enable a disabled subscription; ``recover`` sends what it missed, in order."""
    recover = body.recover if body is not None else False
    now = services.clock.now()

    def work(session: Session) -> EnableResult:
        done = webhooks.enable(session, caller, id, recover=recover, now=now)
        return EnableResult(
            recovered=done.recovered,
            dropped=done.dropped,
            subscription=_subscription(session, done.subscription),
        )

    return await services.db.run(work)


@router.get("/{id}/attempts")
async def list_attempts(
    id: str,  # noqa: A002
    caller: Caller,
    services: Services,
    after: Annotated[str | None, Query(description="id of the last attempt seen")] = None,
    limit: Annotated[str | None, Query(description="1-100, default 100")] = None,
) -> list[AttemptOut]:
    page = PageRequest.parse(after, limit, default_limit=MAX_LIMIT)
    rows = await services.db.run(
        lambda s: webhooks.list_attempts(s, caller, id, after_id=page.offset, limit=page.limit)
    )
    return [_attempt(a) for a in rows]
