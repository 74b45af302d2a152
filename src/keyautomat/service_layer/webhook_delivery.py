"""The parts of webhooks that talk to receivers: test deliveries, URL changes, the outbox handler.

No database transaction is held open while a receiver is being called: each
step reads or writes in a short transaction of its own, and the HTTP request
happens in between.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from keyautomat import metrics
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.outbound import UnsafeTarget
from keyautomat.adapters.webhook_sender import AttemptResult, WebhookSender, delivery_headers
from keyautomat.domain import webhooks as wh
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.webhook_health import DISABLED
from keyautomat.service_layer import webhooks
from keyautomat.service_layer.clock import Clock, SystemClock
from keyautomat.service_layer.delivery import (
    GiveUp,
    Handler,
    Hold,
    Paced,
    Record,
    RetryLater,
    delay_after,
)
from keyautomat.service_layer.outbox import OutboxMessage
from keyautomat.service_layer.principal import Principal

# Defaults of KEYAUTOMAT_WEBHOOKS_DISABLE_AFTER_DAYS and _ATTEMPT_RETENTION_DAYS.
DISABLE_AFTER = timedelta(days=5)
ATTEMPT_RETENTION = timedelta(days=30)
# The attempt log is pruned this many entries per transaction, at most
# PRUNE_MAX_BATCHES transactions per run of the chore (every PRUNE_INTERVAL).
PRUNE_BATCH = 500
PRUNE_MAX_BATCHES = 200
PRUNE_INTERVAL = timedelta(minutes=5)
# Decrypted signing secrets kept per process (by their ciphertext: a rotation is a new entry).
SECRET_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class TestResult:
    event_type: str
    webhook_id: str
    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class TestReport:
    subscription: webhooks.Subscription
    results: list[TestResult]

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)


class WebhookService:
    """Use cases of webhooks that involve a receiver, and the handler of ``webhook`` rows.

    ``sign_clock`` stamps ``webhook-timestamp``: receivers compare it with their
    own wall clock, so it is the system clock even when a simulation drives the
    rest of the platform with a manual one.
    """

    def __init__(
        self,
        db: Database,
        sender: WebhookSender,
        secrets: SecretBox,
        clock: Clock,
        *,
        sign_clock: Clock | None = None,
        disable_after: timedelta = DISABLE_AFTER,
        attempt_retention: timedelta = ATTEMPT_RETENTION,
        prune_batch: int = PRUNE_BATCH,
    ) -> None:
        self.db = db
        self.sender = sender
        self.secrets = secrets
        self.clock = clock
        self.sign_clock = sign_clock or SystemClock()
        self.disable_after = disable_after
        self.attempt_retention = attempt_retention
        self.prune_batch = prune_batch
        self._secrets: dict[str, str] = {}

    async def _vet(self, url: str) -> None:
        try:
            await self.sender.vet(url)
        except UnsafeTarget as exc:
            raise InvalidInput("url", exc.reason) from exc

    # -- admin use cases ----------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        *,
        name: str,
        url: str,
        organization_unit_id: str,
        event_types: list[str],
    ) -> tuple[webhooks.Subscription, str]:
        wh.validate_event_types(event_types)
        await self._vet(url)
        now = self.clock.now()
        return await self.db.run(
            lambda s: webhooks.create_subscription(
                s,
                principal,
                name=name,
                url=url,
                organization_unit_id=organization_unit_id,
                event_types=event_types,
                secrets=self.secrets,
                now=now,
            )
        )

    async def update(
        self,
        principal: Principal,
        subscription_id: str,
        *,
        name: str | None = None,
        event_types: list[str] | None = None,
        url: str | None = None,
    ) -> webhooks.Subscription:
        """Event types change at once; a new URL only after every test delivery to it got a 2xx."""
        types = None if event_types is None else wh.validate_event_types(event_types)
        if url is not None:
            now = self.clock.now()
            target = await self.db.run(
                lambda s: webhooks.scoped_target(s, principal, subscription_id, now)
            )
            if url == target.url:
                url = None
            else:
                await self._vet(url)
                results = await self._send_tests(target, url, types or target.event_types)
                failed = [r for r in results if not r.success]
                if failed:
                    reasons = "; ".join(f"{r.event_type}: {r.error}" for r in failed)
                    raise InvalidInput(
                        "url",
                        f"test delivery to the new URL failed ({reasons}); the old URL stays",
                    )
        now = self.clock.now()
        return await self.db.run(
            lambda s: webhooks.update_subscription(
                s, principal, subscription_id, now=now, name=name, event_types=types, url=url
            )
        )

    async def test(self, principal: Principal, subscription_id: str) -> TestReport:
        """One signed sample per subscribed type; all 2xx activates a pending subscription."""
        now = self.clock.now()
        target = await self.db.run(
            lambda s: webhooks.scoped_target(s, principal, subscription_id, now)
        )
        results = await self._send_tests(target, target.url, target.event_types)
        success = all(r.success for r in results)

        def finish(session: Session) -> webhooks.Subscription:
            if success:
                webhooks.activate(session, subscription_id, self.clock.now())
            return webhooks.get_subscription(session, principal, subscription_id)

        return TestReport(await self.db.run(finish), results)

    async def rotate_secret(
        self, principal: Principal, subscription_id: str
    ) -> tuple[webhooks.Subscription, str]:
        now = self.clock.now()
        return await self.db.run(
            lambda s: webhooks.rotate_secret(
                s, principal, subscription_id, secrets=self.secrets, now=now
            )
        )

    async def _send_tests(
        self, target: webhooks.Target, url: str, event_types: Sequence[str]
    ) -> list[TestResult]:
        secrets = [self.secrets.decrypt(k) for k in target.secrets_encrypted]
        now = self.clock.now()

        async def one(event_type: str) -> tuple[str, str, AttemptResult]:
            body = wh.serialise(
                wh.envelope(
                    event_type=event_type,
                    organization_unit_id=target.organization_unit_id,
                    data=wh.sample_data(event_type, now),
                    occurred_at=now,
                    created_at=now,
                )
            )
            webhook_id = wh.new_webhook_id(now)
            headers = delivery_headers(
                webhook_id=webhook_id,
                event_type=event_type,
                body=body,
                secrets=secrets,
                at=self.sign_clock.now(),
            )
            result = await self.sender.post(url, headers, body.encode(), keep_alive=False)
            return event_type, webhook_id, result

        outcomes = await asyncio.gather(*(one(t) for t in event_types))

        def log(session: Session) -> None:
            for event_type, webhook_id, result in outcomes:
                webhooks.record_attempt(
                    session,
                    webhooks.AttemptRecord(
                        subscription_id=target.subscription_id,
                        delivery_id=None,
                        webhook_id=webhook_id,
                        event_type=event_type,
                        url=url,
                        attempt=1,
                        attempted_at=now,
                        status_code=result.status_code,
                        latency_ms=result.latency_ms,
                        error=result.error,
                    ),
                )

        await self.db.run(log)
        return [TestResult(t, i, r.status_code, r.latency_ms, r.error) for t, i, r in outcomes]

    async def prune_attempts(self, now: datetime) -> int:
        """Delete log entries older than the retention, a small batch per transaction.

        The worker runs it as a chore. Each batch is its own short transaction,
        so deliveries interleave with it; a run stops when it is caught up, or
        after ``PRUNE_MAX_BATCHES`` batches (the next run goes on).
        """
        before = now - self.attempt_retention
        total = 0
        for _ in range(PRUNE_MAX_BATCHES):
            pruned = await self.db.run(
                lambda s: webhooks.prune_attempts(s, before=before, limit=self.prune_batch)
            )
            total += pruned
            if pruned < self.prune_batch:
                break
        return total

    # -- the outbox handler -----------------------------------------------------

    async def aclose(self) -> None:
        """Close kept-alive receiver connections of the running loop (worker shutdown)."""
        await self.sender.aclose()

    def prepare(self, session: Session, messages: Sequence[OutboxMessage]) -> Handler:
        """The handler of a claimed batch: its subscriptions read once, in the claim's
        transaction, rather than once per delivery in a transaction of its own."""
        ids = [i for m in messages if (i := _subscription_id(m)) is not None]
        targets = webhooks.load_targets(session, ids, self.clock.now())

        async def handle(message: OutboxMessage) -> Record:
            return await self._deliver(message, targets.get(message.payload["subscriptionId"]))

        @contextlib.asynccontextmanager
        async def turn(message: OutboxMessage) -> AsyncIterator[object]:
            """A turn at the row's receiver; none to wait for when it will not be sent."""
            subscription_id = _subscription_id(message)
            target = None if subscription_id is None else targets.get(subscription_id)
            if target is None or target.state == DISABLED:
                yield None
                return
            async with self.sender.turn(target.url) as held:
                yield held

        # The attempt's timeout, plus a little for signing and judging it.
        longest = timedelta(seconds=self.sender.timeout + 5)
        return Paced(handle, turn, longest)

    async def handle(self, message: OutboxMessage) -> Record:
        """Deliver one ``webhook`` row on its own (its subscription read first)."""
        subscription_id: str = message.payload["subscriptionId"]
        now = self.clock.now()
        target = await self.db.run(lambda s: webhooks.load_target(s, subscription_id, now))
        return await self._deliver(message, target)

    def _secret(self, encrypted: str) -> str:
        """A signing secret, decrypted once per process rather than once per attempt."""
        secret = self._secrets.get(encrypted)
        if secret is None:
            if len(self._secrets) >= SECRET_CACHE_SIZE:
                self._secrets.clear()
            secret = self._secrets[encrypted] = self.secrets.decrypt(encrypted)
        return secret

    async def _deliver(self, message: OutboxMessage, target: webhooks.Target | None) -> Record:
        """Deliver one ``webhook`` row: current URL and secrets, fresh timestamp, same id."""
        payload = message.payload
        subscription_id: str = payload["subscriptionId"]
        event_type: str = payload["eventType"]
        webhook_id: str = payload["webhookId"]
        body: str = payload["body"]
        started = self.clock.now()
        if target is None:
            raise GiveUp("the subscription was deleted")
        if event_type not in target.event_types:
            raise GiveUp(f"the subscription no longer wants {event_type}")
        if target.state == DISABLED:
            # Queued before the subscription was disabled (or by a redelivery since):
            # kept aside with the others, unattempted, until an admin enables it.
            raise Hold(
                "the subscription is disabled",
                record=webhooks.DeliveryOutcome(
                    subscription_id, message.id, started, None, False, self.disable_after
                ),
            )
        headers = delivery_headers(
            webhook_id=webhook_id,
            event_type=event_type,
            body=body,
            secrets=[self._secret(k) for k in target.secrets_encrypted],
            at=self.sign_clock.now(),
        )
        result = await self.sender.post(target.url, headers, body.encode())
        metrics.webhook_attempted(result.success, result.latency_ms / 1000)

        # The worker gives up after this attempt if it fails: the schedule has run out.
        exhausted = delay_after(webhooks.RETRY_DELAYS, message.attempts) is None

        attempt = webhooks.AttemptRecord(
            subscription_id=subscription_id,
            delivery_id=message.id,
            webhook_id=webhook_id,
            event_type=event_type,
            url=target.url,
            attempt=message.attempts,
            attempted_at=started,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
        )
        # Written with the row's outcome, with the pass's others, in the worker's one transaction.
        record = webhooks.DeliveryOutcome(
            subscription_id, message.id, started, attempt, exhausted, self.disable_after
        )
        if not result.success:
            raise RetryLater(result.error or "delivery failed", record=record)
        return record


def _subscription_id(message: OutboxMessage) -> str | None:
    """The row's subscription id, or None when its payload has none (a malformed row fails
    on its own, in its handler, rather than in the claim of the whole batch)."""
    payload = message.payload
    found = payload.get("subscriptionId") if isinstance(payload, dict) else None
    return found if isinstance(found, str) else None
