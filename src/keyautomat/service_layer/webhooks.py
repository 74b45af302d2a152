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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import PlainQuery, Statements
from keyautomat.adapters.orm_webhooks import webhook_attempts, webhook_subscriptions
from keyautomat.domain import webhook_health
from keyautomat.domain import webhooks as wh
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.ids import new_object_id
from keyautomat.domain.text import one_line
from keyautomat.domain.times import format_utc
from keyautomat.domain.webhook_health import ACTIVE, DISABLED, PENDING, Health
from keyautomat.service_layer import admin_notices, outbox
from keyautomat.service_layer.delivery import Batched
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal, in_scope, unit_lineage

KIND = "webhook"

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


# The reads of publish(), run with every producer's change (a contract's creation among
# them): built and compiled once, run on the driver's cursor (adapters/db.py, PlainQuery).
_LIVE_SUBSCRIPTIONS = PlainQuery(
    select(subs.c.id, subs.c.event_types, subs.c.state)
    .where(
        subs.c.organization_unit_id.in_(bindparam("lineage", expanding=True)),
        subs.c.state.in_([ACTIVE, DISABLED]),
    )
    .order_by(subs.c.id)
)
# Read again under a share lock before an event is put aside for a disabled
# subscription: an admin re-enabling it at that moment either waits for this
# transaction (and then releases the held row with the others) or has committed
# (and the event is queued normally). Without it, a row could be held after the
# release and stay held.
_STATES_LOCKED = (
    select(subs.c.id, subs.c.state)
    .where(subs.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(subs.c.id)
    .with_for_update(read=True)
)


def ref_of(subscription_id: str, event_type: str) -> str:
    return f"webhook:{subscription_id}:{event_type}"


def lane_of(subscription_id: str, event_type: str, source: str) -> str:
    return f"webhook:{subscription_id}:{event_type}:{source}"


def subject_of(data: dict[str, Any]) -> str | None:
    """What a delivery is about for people: the contract its event reports, if any."""
    contract_id = data.get("contractObjectId")
    return f"contract:{contract_id}" if isinstance(contract_id, str) and contract_id else None


def _refs_prefix(subscription_id: str) -> str:
    return f"webhook:{subscription_id}:"


def refs_of(subscription_id: str) -> list[str]:
    """The refs of every delivery of the subscription, one per event type."""
    return [ref_of(subscription_id, t) for t in wh.EVENT_TYPES]


# -- publishing ----------------------------------------------------------------


def publish(
    session: Session,
    *,
    organization_unit_id: str,
    event_type: str,
    data: dict[str, Any],
    occurred_at: datetime,
    now: datetime,
    once: str | None = None,
) -> list[str]:
    """Queue the event for every active subscription that wants it; returns the webhook ids.

    Call it inside the transaction of the change the event reports. ``data`` is
    one of the shapes built by ``domain.webhooks`` (``key_status_data``, …).
    With ``once`` (a name for the occasion), each subscription gets the event at
    most once however often it is published: a job run twice sends nothing twice.
    """
    plain = Statements.of(session)
    # The unit and its ancestors: a subscription covers its unit's whole subtree.
    lineage = unit_lineage(plain, organization_unit_id)
    rows = plain.rows(_LIVE_SUBSCRIPTIONS, lineage=lineage)
    # (id, event types, state)
    wanted = [r for r in rows if event_type in json.loads(r[1])]
    if not wanted:
        return []
    states: dict[str, str | None] = {r[0]: r[2] for r in wanted}
    disabled = [r[0] for r in wanted if r[2] == DISABLED]
    if disabled:
        # None for one deleted meanwhile: a held row for it would never be released.
        states.update(dict.fromkeys(disabled))
        states.update(
            (r.id, r.state) for r in session.execute(_STATES_LOCKED, {"ids": disabled}).all()
        )
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
    subject = subject_of(data)
    ids = []
    for subscription_id, state in states.items():
        if state not in (ACTIVE, DISABLED):
            continue  # deleted since it was read
        webhook_id = wh.new_webhook_id(now)
        # A disabled subscription's events are kept aside, in their lane's order,
        # until an admin re-enables it (enable(), docs/webhooks.md "Health").
        stored = outbox.enqueue(
            session,
            KIND,
            _payload(subscription_id, webhook_id, event_type, body),
            now=now,
            lane=lane_of(subscription_id, event_type, source),
            ref=ref_of(subscription_id, event_type),
            held=state == DISABLED,
            idempotency_key=None if once is None else f"webhook:{subscription_id}:{once}",
            subject=subject,
        )
        if stored is not None:
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
    health: Health
    # Deliveries kept aside while it is disabled (0 otherwise).
    held: int


def _subscription(session: Session, row: Any) -> Subscription:
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
        _health(row),
        held_count(session, row.id) if row.state == DISABLED else 0,
    )


def _health(row: Any) -> Health:
    return Health(
        state=row.state,
        failing_since=row.failing_since,
        delivered=row.delivered_count,
        failed=row.failed_count,
        last_success_at=row.last_success_at,
        last_failure_at=row.last_failure_at,
        disabled_at=row.disabled_at,
    )


def held_count(session: Session, subscription_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(ob)
            .where(
                ob.c.ref.in_(refs_of(subscription_id)),
                ob.c.kind == KIND,
                ob.c.status == outbox.HELD,
            )
        )
        or 0
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
    return _subscription(session, _scoped(session, principal, subscription_id))


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
    items = [_subscription(session, r) for r in rows[: page.limit]]
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
    current = _subscription(session, _scoped(session, principal, subscription_id))
    values: dict[str, Any] = {"updated_at": now}
    if name is not None:
        values["name"] = name
    if url is not None:
        values["url"] = url
    if event_types is not None:
        types = wh.validate_event_types(event_types)
        values["event_types"] = json.dumps(types)
        # Removed types stop at once: their queued deliveries are dropped (spec §1.2).
        removed = sorted(set(current.event_types) - set(types))
        _drop_queued(session, subscription_id, removed, now, "its event type was unsubscribed")
    session.execute(update(subs).where(subs.c.id == subscription_id).values(values))
    return get_subscription(session, principal, subscription_id)


def delete_subscription(
    session: Session, principal: Principal, subscription_id: str, *, now: datetime
) -> None:
    current = _scoped(session, principal, subscription_id)
    _drop_queued(session, current.id, wh.EVENT_TYPES, now, "the subscription was deleted")
    session.execute(delete(attempts_t).where(attempts_t.c.subscription_id == current.id))
    session.execute(delete(subs).where(subs.c.id == current.id))


def _drop_queued(
    session: Session,
    subscription_id: str,
    event_types: Sequence[str],
    now: datetime,
    reason: str,
) -> None:
    """Cancel the queued and the held deliveries of these event types."""
    refs = [ref_of(subscription_id, t) for t in event_types]
    for ref in refs:
        outbox.cancel(session, ref=ref, kinds=[KIND])
    if refs:
        outbox.drop_held(session, kinds=[KIND], refs=refs, now=now, reason=reason)


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


_TARGETS = select(subs).where(subs.c.id.in_(bindparam("ids", expanding=True)))


def load_targets(
    session: Session, subscription_ids: Sequence[str], now: datetime
) -> dict[str, Target]:
    """The targets of ``subscription_ids`` in one query; a deleted subscription is missing."""
    if not subscription_ids:
        return {}
    rows = session.execute(_TARGETS, {"ids": sorted(set(subscription_ids))})
    return {row.id: _target(row, now) for row in rows}


def load_target(session: Session, subscription_id: str, now: datetime) -> Target | None:
    return load_targets(session, [subscription_id], now).get(subscription_id)


def _target(row: Any, now: datetime) -> Target:
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


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One HTTP attempt to log: of a test delivery (``delivery_id`` None) or a live one."""

    subscription_id: str
    delivery_id: int | None
    webhook_id: str
    event_type: str
    url: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


def record_attempt(session: Session, attempt: AttemptRecord) -> None:
    """Log one test delivery's attempt (live ones go through :func:`record_delivery`)."""
    # A subscription deleted while its delivery was in flight leaves nothing to log against.
    exists = session.scalar(select(subs.c.id).where(subs.c.id == attempt.subscription_id))
    if exists is None:
        return
    _insert_attempt(session, attempt)


def _insert_attempt(session: Session, attempt: AttemptRecord) -> None:
    session.execute(_INSERT_ATTEMPT, _attempt_values(attempt))


def _attempt_values(attempt: AttemptRecord) -> dict[str, Any]:
    error = attempt.error
    return {
        "subscription_id": attempt.subscription_id,
        "outbox_id": attempt.delivery_id,
        "webhook_id": attempt.webhook_id,
        "event_type": attempt.event_type,
        "url": attempt.url,
        "attempt": attempt.attempt,
        "is_test": attempt.delivery_id is None,
        "attempted_at": attempt.attempted_at,
        "status_code": attempt.status_code,
        "latency_ms": attempt.latency_ms,
        "success": _succeeded(attempt.status_code),
        "error": None if error is None else error[:2000],
    }


def _succeeded(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300


# The statements run with every live delivery are built once, with bind parameters.
_INSERT_ATTEMPT = insert(attempts_t)
# FOR NO KEY UPDATE on PostgreSQL: serialises the health of one subscription
# between workers, while inserting its attempt log rows (whose foreign key takes
# a KEY SHARE lock on it) never waits. SQLite has one writer anyway.
_LOCK_HEALTH = (
    select(
        subs.c.id,
        subs.c.organization_unit_id,
        subs.c.name,
        subs.c.url,
        subs.c.state,
        subs.c.failing_since,
        subs.c.delivered_count,
        subs.c.failed_count,
        subs.c.last_success_at,
        subs.c.last_failure_at,
        subs.c.disabled_at,
    )
    .where(subs.c.id.in_(bindparam("b_ids", expanding=True)))
    # Locked in id order by every worker, so two workers never wait crosswise.
    .order_by(subs.c.id)
    .with_for_update(key_share=True)
)
_WRITE_HEALTH = (
    update(subs)
    .where(subs.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state", type_=subs.c.state.type),
        failing_since=bindparam("b_failing_since", type_=subs.c.failing_since.type),
        delivered_count=bindparam("b_delivered", type_=subs.c.delivered_count.type),
        failed_count=bindparam("b_failed", type_=subs.c.failed_count.type),
        last_success_at=bindparam("b_last_success_at", type_=subs.c.last_success_at.type),
        last_failure_at=bindparam("b_last_failure_at", type_=subs.c.last_failure_at.type),
        disabled_at=bindparam("b_disabled_at", type_=subs.c.disabled_at.type),
    )
)


def _write_health(session: Session, subscription_id: str, health: Health) -> None:
    session.execute(
        _WRITE_HEALTH,
        {
            "b_id": subscription_id,
            "b_state": health.state,
            "b_failing_since": health.failing_since,
            "b_delivered": health.delivered,
            "b_failed": health.failed,
            "b_last_success_at": health.last_success_at,
            "b_last_failure_at": health.last_failure_at,
            "b_disabled_at": health.disabled_at,
        },
    )


@dataclass(frozen=True, slots=True)
class DeliveryOutcome(Batched):
    """What a worker writes about one live delivery, with the others of its pass.

    ``attempt`` is the HTTP attempt made, ``exhausted`` says it was the
    delivery's last (the retry schedule has run out if it failed). Without an
    ``attempt`` the delivery was put aside unattempted, its subscription being
    disabled (``Hold``).
    """

    subscription_id: str
    delivery_id: int
    at: datetime
    attempt: AttemptRecord | None
    exhausted: bool
    disable_after: timedelta

    @classmethod
    def write_all(cls, session: Session, records: Sequence[DeliveryOutcome]) -> None:
        record_deliveries(session, records)


def record_deliveries(session: Session, outcomes: Sequence[DeliveryOutcome]) -> list[str]:
    """Log a batch of live attempts and update their subscriptions' health, in a few
    statements whatever the batch's size; returns the subscriptions it disabled.

    Each subscription involved is locked once (all in one statement, in id
    order), its attempts are logged in one insert, and its health is folded over
    its attempts in the order given and written once. Disabling puts every queued
    delivery of the subscription aside and queues one notice to its unit's
    admins, in this same transaction: the transition happens once, under the row
    lock, so the notice goes out once per disabling.

    A delivery put aside (``attempt`` None) because its subscription was disabled
    is queued again if an admin enabled the subscription meanwhile, or dropped if
    it was deleted: this runs under the subscription's lock, so it cannot miss an
    :func:`enable` that committed between the worker's look at the subscription
    and the row being marked ``held``.
    """
    ids = sorted({o.subscription_id for o in outcomes})
    if not ids:
        return []
    rows = {row.id: row for row in session.execute(_LOCK_HEALTH, {"b_ids": ids})}
    # A subscription deleted while its delivery was in flight leaves nothing to log against.
    logged = [o.attempt for o in outcomes if o.attempt is not None and o.subscription_id in rows]
    if logged:
        session.execute(_INSERT_ATTEMPT, [_attempt_values(a) for a in logged])
    disabled: list[str] = []
    for subscription_id in ids:
        mine = [o for o in outcomes if o.subscription_id == subscription_id]
        row = rows.get(subscription_id)
        if row is None:
            held = [o.delivery_id for o in mine if o.attempt is None]
            if held:
                outbox.drop_held(
                    session,
                    kinds=[KIND],
                    ids=held,
                    now=mine[0].at,
                    reason="the subscription was deleted",
                )
            continue
        if _settle_health(session, row, mine):
            disabled.append(subscription_id)
    return disabled


def _settle_health(session: Session, row: Any, outcomes: Sequence[DeliveryOutcome]) -> bool:
    """Fold one subscription's attempts into its health; True when they disabled it."""
    before = _health(row)
    after = before
    disabling_error: str | None = None
    for outcome in outcomes:
        attempt = outcome.attempt
        if attempt is None:
            continue
        was = after.state
        after = webhook_health.after_attempt(
            after,
            success=_succeeded(attempt.status_code),
            at=attempt.attempted_at,
            exhausted=outcome.exhausted,
            disable_after=outcome.disable_after,
        )
        if was != DISABLED and after.state == DISABLED:
            disabling_error = attempt.error
    if after != before:
        _write_health(session, row.id, after)
    if after.state != DISABLED:
        # Put aside because it looked disabled, but an admin has enabled it since.
        held = [o.delivery_id for o in outcomes if o.attempt is None]
        if held:
            outbox.release(session, kinds=[KIND], ids=held)
    if before.state == DISABLED or after.state != DISABLED:
        return False
    outbox.hold(session, refs=refs_of(row.id), kinds=[KIND])
    _notify_disabled(session, row, after, disabling_error)
    return True


def _notify_disabled(session: Session, row: Any, health: Health, error: str | None) -> None:
    assert health.disabled_at is not None
    assert health.failing_since is not None
    unit_name = session.scalar(
        select(orm.organization_units.c.name).where(
            orm.organization_units.c.id == row.organization_unit_id
        )
    )
    disabled_at = format_utc(health.disabled_at)
    admin_notices.queue(
        session,
        organization_unit_id=row.organization_unit_id,
        notice=admin_notices.WEBHOOK_DISABLED,
        occasion=f"{row.id}:{disabled_at}",
        facts={
            "id": row.id,
            "name": one_line(row.name, 100),
            "unit": one_line(unit_name or row.organization_unit_id, 100),
            "url": wh.url_for_people(row.url),
            "failing_since": format_utc(health.failing_since),
            "disabled_at": disabled_at,
            "last_error": one_line(error or "", 300),
        },
        now=health.disabled_at,
    )


@dataclass(frozen=True, slots=True)
class Enabled:
    subscription: Subscription
    recovered: int  # held deliveries queued again
    dropped: int  # held deliveries cancelled


def enable(
    session: Session,
    principal: Principal,
    subscription_id: str,
    *,
    recover: bool,
    now: datetime,
) -> Enabled:
    """An admin re-enables a disabled subscription.

    With ``recover`` every delivery put aside since it was disabled is queued
    again, in its lane's original order and before anything published later;
    without, they are cancelled and only new events flow. Enabling an active
    subscription changes nothing; a pending one needs its test delivery.
    """
    row = _scoped(session, principal, subscription_id)
    if row.state == PENDING:
        raise InvalidInput(
            "id",
            "the subscription is pending: a successful test delivery "
            "(POST /admin/webhooks/{id}/test) activates it",
        )
    recovered = dropped = 0
    if row.state == DISABLED:
        health = webhook_health.enabled(_health(row))
        changed = session.execute(
            update(subs)
            .where(subs.c.id == subscription_id, subs.c.state == DISABLED)
            .values(
                state=health.state,
                failing_since=health.failing_since,
                disabled_at=health.disabled_at,
                updated_at=now,
            )
        )
        if changed.rowcount:  # type: ignore[attr-defined]
            refs = refs_of(subscription_id)
            if recover:
                recovered = outbox.release(session, kinds=[KIND], refs=refs)
            else:
                dropped = outbox.drop_held(
                    session,
                    kinds=[KIND],
                    refs=refs,
                    now=now,
                    reason="dropped: the subscription was enabled without recovery",
                )
    return Enabled(get_subscription(session, principal, subscription_id), recovered, dropped)


def prune_attempts(session: Session, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` of the oldest log entries attempted before ``before``.

    One small statement in a short transaction: row locks on old entries only,
    which nothing else writes, so deliveries (which insert new entries) never
    wait for it.
    """
    oldest = (
        select(attempts_t.c.id)
        .where(attempts_t.c.attempted_at < before)
        .order_by(attempts_t.c.attempted_at)
        .limit(limit)
    )
    result = session.execute(delete(attempts_t).where(attempts_t.c.id.in_(oldest)))
    return int(result.rowcount)  # type: ignore[attr-defined]


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
    before_id: int | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Oldest first after ``after_id`` (the API); newest first below ``before_id`` (the
    console's log, ``before_id`` beyond the last id for the first page)."""
    _scoped(session, principal, subscription_id)
    stmt = _deliveries_of(subscription_id)
    if status is not None:
        stmt = stmt.where(ob.c.status == status)
    if before_id is not None:
        stmt = stmt.where(ob.c.id < before_id).order_by(ob.c.id.desc())
    else:
        stmt = stmt.where(ob.c.id > after_id).order_by(ob.c.id)
    rows = session.execute(stmt.limit(limit)).all()
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
        subject=row.subject,
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
    if row.status == outbox.HELD:
        raise InvalidInput(
            "deliveryId", "is held while the subscription is disabled; enable it with recover"
        )
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
