"""``GET /readyz`` on a real database: its checks, and which outbox rows count as late."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.service_layer import outbox
from keyautomat.service_layer.webhooks import KIND as WEBHOOK

HOUR = timedelta(hours=1)


def enqueue(container: Container, *, due: timedelta, lane: str | None = None) -> None:
    """A webhook row due ``due`` from now (negative: overdue), never delivered here: the
    test app runs no worker."""
    now = datetime.now(UTC)

    def work(session: Session) -> None:
        outbox.enqueue(session, WEBHOOK, {"x": 1}, now=now, due_at=now + due, lane=lane)

    container.db.transaction(work)


def waiting_since(container: Container, kinds: list[str] | None = None) -> datetime | None:
    return container.db.transaction(
        lambda s: outbox.waiting_since(s, now=datetime.now(UTC), kinds=kinds or [WEBHOOK])
    )


def test_a_serving_process_with_its_gateway_connected_and_no_late_message_is_ready(
    http: TestClient,
) -> None:
    response = http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "ready": True,
        "checks": {"database": "ok", "broker": "ok", "outbox": "ok"},
    }
    assert response.headers["cache-control"] == "no-store"


def test_a_message_no_worker_took_for_longer_than_the_bound_makes_every_process_unready(
    container: Container, http: TestClient
) -> None:
    enqueue(container, due=-HOUR)
    response = http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["statusCode"] == 503
    assert body["error"] == "Service Unavailable"
    assert body["message"] == "Not ready: outbox"
    assert body["checks"]["database"] == "ok"
    assert re.fullmatch(
        r"a message has waited 36\d\d s for a worker \(at most 300 s\)", body["checks"]["outbox"]
    )


def test_a_message_due_later_or_behind_a_retrying_one_of_its_lane_is_not_late(
    container: Container,
) -> None:
    enqueue(container, due=HOUR)
    assert waiting_since(container) is None
    enqueue(container, due=-HOUR, lane="subscription-1")  # the head of its lane: late
    late = waiting_since(container)
    assert late is not None
    assert datetime.now(UTC) - late > HOUR - timedelta(minutes=1)


def test_a_row_behind_its_lane_head_waits_for_the_head_not_for_a_worker(
    container: Container,
) -> None:
    enqueue(container, due=HOUR, lane="subscription-1")  # retrying: due in an hour
    enqueue(container, due=-HOUR, lane="subscription-1")  # queued behind it
    assert waiting_since(container) is None


def test_a_claimed_row_whose_lease_ran_out_is_late_since_the_lease_ended(
    container: Container,
) -> None:
    enqueue(container, due=-2 * HOUR)
    claimed_at = datetime.now(UTC) - HOUR
    claimed = container.db.transaction(
        lambda s: outbox.claim(
            s, worker_id="dead", now=claimed_at, lease=timedelta(minutes=2), limit=1
        )
    )
    assert len(claimed) == 1
    late = waiting_since(container)
    assert late is not None
    # The pending row is gone; what waits is the claim, since its lease ran out.
    assert abs(late - (claimed_at + timedelta(minutes=2))) < timedelta(seconds=1)


def test_rows_of_a_kind_no_worker_delivers_are_not_counted(container: Container) -> None:
    enqueue(container, due=-HOUR)
    assert waiting_since(container, kinds=["notification"]) is None
