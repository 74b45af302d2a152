"""Webhook subscriptions, the publishing API that producers call, and the delivery log.

Producers (contracts, the device gateway) call :func:`publish` in the same
transaction as their change. It stores one outbox row of kind ``webhook`` per
active subscription of the event's unit or an ancestor that wants the event
type, each in the ordering lane ``(subscription, event type, source)`` of
spec/webhooks.md §7. The body is serialised once, here, and every attempt sends
exactly those bytes; the ``webhook-id`` is fixed here too, so every retry and
every redelivery carries the same one.

Everything in this module takes a ``Session`` and never commits. The parts
that talk to receivers (test deliveries, the outbox handler) live in
``webhook_delivery.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.orm_webhooks import webhook_attempts, webhook_subscriptions
from keyautomat.domain import webhooks as wh
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.ids import new_object_id
from keyautomat.service_layer import outbox
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal, in_scope

KIND = "webhook"
PENDING = "pending"
ACTIVE = "active"

# Waits before attempts 2..20 (spec/webhooks.md §6): 20 attempts over about 5 h 54 min.
RETRY_DELAYS: tuple[timedelta, ...] = (
    *(timedelta(seconds=s) for s in (5, 15, 30, 60, 120, 300, 600, 900, 1200)),
    *(timedelta(minutes=30) for _ in range(10)),
)
# How long a rotated-out secret keeps signing next to its successor.
ROTATION_OVERLAP = timedelta(hours=24)

subs = webhook_subscriptions
attempts_t = webhook_attempts
ob = orm.outbox


# The statements of publish(), run with every producer's change: built once, with
# bind parameters, so a call pays for executing them and not for building them.
_UNIT_PATH = select(orm.organization_units.c.path).where(
    orm.organization_units.c.id == bindparam("unit_id")
)
_ACTIVE_SUBSCRIPTIONS = (
    select(subs.c.id, subs.c.event_types)
    .where(
        subs.c.organization_unit_id.in_(bindparam("lineage", expanding=True)),
        subs.c.state == ACTIVE,
    )
    .order_by(subs.c.id)
)


def ref_of(subscription_id: str, event_type: str) -> str:
    return f"webhook:{subscription_id}:{event_type}"


def lane_of(subscription_id: str, event_type: str, source: str) -> str:
    return f"webhook:{subscription_id}:{event_type}:{source}"


def _refs_prefix(subscription_id: str) -> str:
    return f"webhook:{subscription_id}:"


# -- publishing ----------------------------------------------------------------


def publish(
    session: Session,
    *,
    organization_unit_id: str,
    event_type: str,
    data: dict[str, Any],
    occurred_at: datetime,
    now: datetime,
) -> list[str]:
    """Queue the event for every active subscription that wants it; returns the webhook ids.

    Call it inside the transaction of the change the event reports. ``data`` is
    one of the shapes built by ``domain.webhooks`` (``key_status_data``, …).
    """
    path = session.scalar(_UNIT_PATH, {"unit_id": organization_unit_id})
    if path is None:
        raise NotFound("Organization unit")
    # The unit and its ancestors: a subscription covers its unit's whole subtree.
    lineage = [part for part in path.split("/") if part]
    rows = session.execute(_ACTIVE_SUBSCRIPTIONS, {"lineage": lineage}).all()
    targets = [r.id for r in rows if event_type in json.loads(r.event_types)]
    if not targets:
        return []
    body = wh.serialise(
        wh.envelope(
            event_type=event_type,
            organization_unit_id=organization_unit_id,
            data=data,
            occurred_at=occurred_at,
            created_at=now,
        )
    )
    source = wh.source_key(data, organization_unit_id)
    ids = []
    for subscription_id in targets:
        webhook_id = wh.new_webhook_id(now)
        outbox.enqueue(
            session,
            KIND,
            _payload(subscription_id, webhook_id, event_type, body),
            now=now,
            lane=lane_of(subscription_id, event_type, source),
            ref=ref_of(subscription_id, event_type),
        )
        ids.append(webhook_id)
    return ids


def _payload(subscription_id: str, webhook_id: str, event_type: str, body: str) -> dict[str, Any]:
    return {
        "subscriptionId": subscription_id,
        "webhookId": webhook_id,
        "eventType": event_type,
        "body": body,
    }


# -- subscriptions -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    organization_unit_id: str
    name: str
    url: str
    event_types: list[str]
    state: str
    secret_last4: str
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None


def _subscription(row: Any) -> Subscription:
    return Subscription(
        row.id,
        row.organization_unit_id,
        row.name,
        row.url,
        json.loads(row.event_types),
        row.state,
        row.secret_last4,
        row.previous_secret_expires_at,
        row.created_at,
        row.updated_at,
        row.activated_at,
    )


def _scoped(session: Session, principal: Principal, subscription_id: str) -> Any:
    row = session.execute(
        select(subs).where(
            subs.c.id == subscription_id, in_scope(subs.c.organization_unit_id, principal)
        )
    ).first()
    if row is None:
        raise NotFound("Webhook subscription")
    return row


def get_subscription(session: Session, principal: Principal, subscription_id: str) -> Subscription:
    return _subscription(_scoped(session, principal, subscription_id))


def list_subscriptions(
    session: Session, principal: Principal, page: PageRequest
) -> Page[Subscription]:
    rows = session.execute(
        select(subs)
        .where(in_scope(subs.c.organization_unit_id, principal))
        .order_by(subs.c.created_at, subs.c.id)
        .offset(page.offset)
        .limit(page.limit + 1)
    ).all()
    items = [_subscription(r) for r in rows[: page.limit]]
    return Page(items, page.offset + len(items), page.limit, len(rows) > page.limit)


def create_subscription(
    session: Session,
    principal: Principal,
    *,
    name: str,
    url: str,
    organization_unit_id: str,
    event_types: list[str],
    secrets: SecretBox,
    now: datetime,
) -> tuple[Subscription, str]:
    """A ``pending`` subscription and its secret, in plain text for the one time it is shown."""
    unit = principal.scoped_unit(session, organization_unit_id, "organizationUnitId")
    types = wh.validate_event_types(event_types)
    secret = wh.new_secret()
    subscription_id = new_object_id(now.timestamp())
    session.execute(
        insert(subs).values(
            id=subscription_id,
            organization_unit_id=unit.id,
            name=name,
            url=url,
            event_types=json.dumps(types),
            state=PENDING,
            secret_encrypted=secrets.encrypt(secret),
            secret_last4=secret[-4:],
            created_at=now,
            updated_at=now,
        )
    )
    return get_subscription(session, principal, subscription_id), secret


def update_subscription(
    session: Session,
    principal: Principal,
    subscription_id: str,
    *,
    now: datetime,
    name: str | None = None,
    event_types: list[str] | None = None,
    url: str | None = None,
) -> Subscription:
    """Apply a change; a URL must have passed its test deliveries before it gets here."""
    current = _subscription(_scoped(session, principal, subscription_id))
    values: dict[str, Any] = {"updated_at": now}
    if name is not None:
        values["name"] = name
    if url is not None:
        values["url"] = url
    if event_types is not None:
        types = wh.validate_event_types(event_types)
        values["event_types"] = json.dumps(types)
        # Removed types stop at once: their queued deliveries are dropped (spec §1.2).
        for removed in set(current.event_types) - set(types):
            outbox.cancel(session, ref=ref_of(subscription_id, removed), kinds=[KIND])
    session.execute(update(subs).where(subs.c.id == subscription_id).values(values))
    return get_subscription(session, principal, subscription_id)


def delete_subscription(session: Session, principal: Principal, subscription_id: str) -> None:
    current = _subscription(_scoped(session, principal, subscription_id))
    for event_type in wh.EVENT_TYPES:
        outbox.cancel(session, ref=ref_of(current.id, event_type), kinds=[KIND])
    session.execute(delete(attempts_t).where(attempts_t.c.subscription_id == current.id))
    session.execute(delete(subs).where(subs.c.id == current.id))


def activate(session: Session, subscription_id: str, now: datetime) -> None:
    session.execute(
        update(subs)
        .where(subs.c.id == subscription_id, subs.c.state == PENDING)
        .values(state=ACTIVE, activated_at=now, updated_at=now)
    )


def rotate_secret(
    session: Session,
    principal: Principal,
    subscription_id: str,
    *,
    secrets: SecretBox,
    now: datetime,
) -> tuple[Subscription, str]:
    """Issue a new secret; the current one keeps signing alongside it for 24 hours."""
    row = _scoped(session, principal, subscription_id)
    secret = wh.new_secret()
    session.execute(
        update(subs)
        .where(subs.c.id == row.id)
        .values(
            secret_encrypted=secrets.encrypt(secret),
            secret_last4=secret[-4:],
            previous_secret_encrypted=row.secret_encrypted,
            previous_secret_expires_at=now + ROTATION_OVERLAP,
            updated_at=now,
        )
    )
    return get_subscription(session, principal, subscription_id), secret


@dataclass(frozen=True, slots=True)
class Target:
    """What a delivery needs at the moment of sending: current URL, types and secrets."""

    subscription_id: str
    organization_unit_id: str
    url: str
    state: str
    event_types: list[str]
    secrets_encrypted: list[str]


def load_target(session: Session, subscription_id: str, now: datetime) -> Target | None:
    row = session.execute(select(subs).where(subs.c.id == subscription_id)).first()
    if row is None:
        return None
    keys = [row.secret_encrypted]
    if (
        row.previous_secret_encrypted is not None
        and row.previous_secret_expires_at is not None
        and row.previous_secret_expires_at > now
    ):
        keys.append(row.previous_secret_encrypted)
    return Target(
        row.id, row.organization_unit_id, row.url, row.state, json.loads(row.event_types), keys
    )


def scoped_target(
    session: Session, principal: Principal, subscription_id: str, now: datetime
) -> Target:
    _scoped(session, principal, subscription_id)
    target = load_target(session, subscription_id, now)
    assert target is not None
    return target


# -- the delivery log ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    delivery_id: int | None
    webhook_id: str
    event_type: str
    url: str
    attempt: int
    is_test: bool
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    success: bool
    error: str | None


def record_attempt(
    session: Session,
    *,
    subscription_id: str,
    delivery_id: int | None,
    webhook_id: str,
    event_type: str,
    url: str,
    attempt: int,
    attempted_at: datetime,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
) -> None:
    # A subscription deleted while its delivery was in flight leaves nothing to log against.
    exists = session.scalar(select(subs.c.id).where(subs.c.id == subscription_id))
    if exists is None:
        return
    session.execute(
        insert(attempts_t).values(
            subscription_id=subscription_id,
            outbox_id=delivery_id,
            webhook_id=webhook_id,
            event_type=event_type,
            url=url,
            attempt=attempt,
            is_test=delivery_id is None,
            attempted_at=attempted_at,
            status_code=status_code,
            latency_ms=latency_ms,
            success=status_code is not None and 200 <= status_code < 300,
            error=None if error is None else error[:2000],
        )
    )


def list_attempts(
    session: Session,
    principal: Principal,
    subscription_id: str,
    *,
    delivery_id: int | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Attempt]:
    """Attempts of one subscription (or one of its deliveries), oldest first."""
    _scoped(session, principal, subscription_id)
    stmt = select(attempts_t).where(
        attempts_t.c.subscription_id == subscription_id, attempts_t.c.id > after_id
    )
    if delivery_id is not None:
        stmt = stmt.where(attempts_t.c.outbox_id == delivery_id)
    rows = session.execute(stmt.order_by(attempts_t.c.id).limit(limit)).all()
    return [
        Attempt(
            r.id,
            r.outbox_id,
            r.webhook_id,
            r.event_type,
            r.url,
            r.attempt,
            r.is_test,
            r.attempted_at,
            r.status_code,
            r.latency_ms,
            r.success,
            r.error,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to one subscription (an outbox row): its state and schedule."""

    id: int
    webhook_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None
    body: str


def _delivery(row: Any) -> Delivery:
    payload = json.loads(row.payload)
    waiting = row.status == outbox.PENDING
    return Delivery(
        row.id,
        payload["webhookId"],
        payload["eventType"],
        row.status,
        row.attempts,
        row.due_at if waiting else None,
        row.last_error,
        row.created_at,
        row.finished_at,
        payload["body"],
    )


def _deliveries_of(subscription_id: str) -> Any:
    return select(ob).where(
        ob.c.kind == KIND, ob.c.ref.startswith(_refs_prefix(subscription_id), autoescape=True)
    )


def list_deliveries(
    session: Session,
    principal: Principal,
    subscription_id: str,
    *,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Delivery]:
    _scoped(session, principal, subscription_id)
    stmt = _deliveries_of(subscription_id).where(ob.c.id > after_id)
    if status is not None:
        stmt = stmt.where(ob.c.status == status)
    rows = session.execute(stmt.order_by(ob.c.id).limit(limit)).all()
    return [_delivery(r) for r in rows]


def get_delivery(
    session: Session, principal: Principal, subscription_id: str, delivery_id: int
) -> Delivery:
    _scoped(session, principal, subscription_id)
    row = session.execute(_deliveries_of(subscription_id).where(ob.c.id == delivery_id)).first()
    if row is None:
        raise NotFound("Delivery")
    return _delivery(row)


def last_delivery(session: Session, subscription_id: str) -> Delivery | None:
    row = session.execute(_deliveries_of(subscription_id).order_by(ob.c.id.desc()).limit(1)).first()
    return None if row is None else _delivery(row)


def last_attempt_status(session: Session, subscription_id: str) -> int | None:
    return session.scalar(
        select(attempts_t.c.status_code)
        .where(attempts_t.c.subscription_id == subscription_id, attempts_t.c.is_test.is_(False))
        .order_by(attempts_t.c.id.desc())
        .limit(1)
    )


def _requeue(session: Session, subscription_id: str, row: Any, now: datetime) -> int:
    """A new outbox row for an old delivery: same body, same ``webhook-id``, same lane."""
    payload = json.loads(row.payload)
    new_id = outbox.enqueue(
        session,
        KIND,
        _payload(subscription_id, payload["webhookId"], payload["eventType"], payload["body"]),
        now=now,
        lane=row.lane,
        ref=row.ref,
    )
    assert new_id is not None
    return new_id


def redeliver(
    session: Session, principal: Principal, subscription_id: str, delivery_id: int, now: datetime
) -> Delivery:
    """Send one finished delivery again (with its original ``webhook-id``), at its lane's end."""
    _scoped(session, principal, subscription_id)
    row = session.execute(_deliveries_of(subscription_id).where(ob.c.id == delivery_id)).first()
    if row is None:
        raise NotFound("Delivery")
    if row.status in outbox.UNFINISHED:
        raise InvalidInput("deliveryId", "is still queued; it will be delivered without help")
    new_id = _requeue(session, subscription_id, row, now)
    return get_delivery(session, principal, subscription_id, new_id)


def recover(
    session: Session, principal: Principal, subscription_id: str, since: datetime, now: datetime
) -> list[Delivery]:
    """Queue again every delivery since ``since`` that failed and was not delivered since.

    A webhook id that is delivered, queued or already recovered is skipped, so
    running a recovery twice does not send anything twice.
    """
    _scoped(session, principal, subscription_id)
    rows = session.execute(
        _deliveries_of(subscription_id)
        .where(ob.c.created_at >= since, ob.c.status != outbox.CANCELLED)
        .order_by(ob.c.id)
    ).all()
    settled: set[str] = set()
    failed: dict[str, Any] = {}
    for row in rows:
        webhook_id = json.loads(row.payload)["webhookId"]
        if row.status == outbox.FAILED:
            failed.setdefault(webhook_id, row)
        else:
            settled.add(webhook_id)
    new_ids = [
        _requeue(session, subscription_id, row, now)
        for webhook_id, row in failed.items()
        if webhook_id not in settled
    ]
    if not new_ids:
        return []
    return [
        _delivery(r)
        for r in session.execute(
            _deliveries_of(subscription_id).where(ob.c.id.in_(new_ids)).order_by(ob.c.id)
        ).all()
    ]
