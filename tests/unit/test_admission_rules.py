"""Admission control without a database: the slots rule (keyautomat/admission.py) with timers
the test fires itself, and the middleware's refusal around an app that needs nothing."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from starlette.types import Message, Receive, Scope, Send

from keyautomat import admission
from keyautomat.admission import LatencyLimit, Slots, Ticket
from keyautomat.entrypoints.api.admission import (
    BUSY,
    LOG_EVERY_SECONDS,
    AdmissionMiddleware,
)

T = TypeVar("T")


@dataclass
class FakeTimer:
    delay: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeTimers:
    """A ``Schedule`` whose timers fire only when the test says their time has come."""

    made: list[FakeTimer] = field(default_factory=list)

    def __call__(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.made.append(timer)
        return timer

    def run_out(self) -> None:
        for timer in self.made:
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()


def run(coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(coroutine())


async def let_tasks_run() -> None:
    # One pass of the loop: every ready task runs up to its next wait. No time passes.
    for _ in range(3):
        await asyncio.sleep(0)


def slots(limit: int = 2, *, max_waiting: int = 2, max_wait: float = 0.02) -> Slots:
    return Slots(limit, max_waiting=max_waiting, max_wait=max_wait, schedule=FakeTimers())


def timers(of: Slots) -> FakeTimers:
    schedule = of._schedule
    assert isinstance(schedule, FakeTimers)
    return schedule


def test_requests_up_to_the_limit_get_a_slot_at_once_and_the_next_one_waits() -> None:
    async def scenario() -> None:
        s = slots(2)
        assert await s.acquire()
        assert await s.acquire()
        third = asyncio.create_task(s.acquire())
        await let_tasks_run()
        assert not third.done()
        assert (s.held, s.waiting) == (2, 1)
        assert timers(s).made[0].delay == 0.02
        s.release()
        assert await third
        assert (s.held, s.waiting) == (2, 0)
        assert timers(s).made[0].cancelled

    run(scenario)


def test_a_freed_slot_goes_to_the_first_waiter_and_never_to_a_newcomer() -> None:
    async def scenario() -> None:
        s = slots(1, max_waiting=3)
        assert await s.acquire()
        first = asyncio.create_task(s.acquire())
        await let_tasks_run()
        second = asyncio.create_task(s.acquire())
        await let_tasks_run()
        s.release()
        assert not s.try_acquire()  # a newcomer: the slot went to the first waiter
        assert await first
        assert not second.done()
        s.release()
        assert await second
        s.release()
        assert (s.held, s.waiting) == (0, 0)

    run(scenario)


def test_a_waiter_whose_time_runs_out_is_refused_and_leaves_the_queue() -> None:
    async def scenario() -> None:
        s = slots(1)
        assert await s.acquire()
        waiter = asyncio.create_task(s.acquire())
        await let_tasks_run()
        timers(s).run_out()
        assert await waiter is False
        assert (s.held, s.waiting) == (1, 0)
        s.release()
        assert s.held == 0

    run(scenario)


def test_with_the_queue_full_a_request_is_refused_without_waiting() -> None:
    async def scenario() -> None:
        s = slots(1, max_waiting=1)
        assert await s.acquire()
        queued = asyncio.create_task(s.acquire())
        await let_tasks_run()
        assert await s.acquire() is False
        assert len(timers(s).made) == 1  # only the queued one ever waited
        s.release()
        assert await queued

    run(scenario)


def test_with_no_wait_allowed_a_busy_process_refuses_at_once() -> None:
    async def scenario() -> None:
        s = slots(1, max_waiting=5, max_wait=0)
        assert await s.acquire()
        assert await s.acquire() is False
        assert timers(s).made == []

    run(scenario)


def test_a_cancelled_waiter_leaves_the_queue_and_takes_no_slot() -> None:
    async def scenario() -> None:
        s = slots(1)
        assert await s.acquire()
        waiter = asyncio.create_task(s.acquire())
        await let_tasks_run()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (s.held, s.waiting) == (1, 0)
        s.release()
        assert s.held == 0

    run(scenario)


def test_a_waiter_cancelled_as_it_is_handed_a_slot_gives_the_slot_back() -> None:
    async def scenario() -> None:
        s = slots(1)
        assert await s.acquire()
        waiter = asyncio.create_task(s.acquire())
        await let_tasks_run()
        s.release()  # hands the slot to the waiter, which has not run since
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (s.held, s.waiting) == (0, 0)

    run(scenario)


def test_a_ticket_released_twice_frees_one_slot() -> None:
    async def scenario() -> None:
        s = slots(2)
        assert await s.acquire()
        assert await s.acquire()
        ticket = Ticket(s)
        ticket.release()
        ticket.release()
        assert s.held == 1

    run(scenario)


def test_a_request_waiting_outside_its_slot_lets_another_in_and_comes_back_first() -> None:
    async def scenario() -> None:
        s = slots(1, max_waiting=2)
        assert await s.acquire()
        ticket = Ticket(s)
        device_answered = asyncio.Event()

        async def send_pincode() -> None:
            async with ticket.outside():
                await device_answered.wait()

        outside = asyncio.create_task(send_pincode())
        await let_tasks_run()
        assert s.held == 0
        assert await s.acquire()  # another request has the slot meanwhile
        newcomer = asyncio.create_task(s.acquire())
        await let_tasks_run()
        device_answered.set()
        await let_tasks_run()
        assert not outside.done()  # waits for its slot back: the limit holds
        s.release()  # the other request ends: the returning one goes before the newcomer
        await outside
        assert ticket.holding
        assert not newcomer.done()
        ticket.release()
        assert await newcomer

    run(scenario)


def test_outside_a_request_stepping_outside_changes_nothing() -> None:
    async def scenario() -> None:
        async with admission.outside():
            assert admission.CURRENT.get() is None

    run(scenario)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0, max_waiting=0, max_wait=0)


# --- the middleware -------------------------------------------------------------------


@dataclass
class Exchange:
    sent: list[Message] = field(default_factory=list)
    body_read: bool = False

    async def receive(self) -> Message:
        self.body_read = True
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> Any:
        return json.loads(self.sent[1]["body"])


def http(path: str) -> Scope:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


async def answer_ok(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_a_busy_process_answers_429_in_the_one_shape_with_retry_after_unread() -> None:
    async def scenario() -> None:
        s = slots(1, max_waiting=0)
        middleware = AdmissionMiddleware(answer_ok, slots=s)
        assert s.try_acquire()
        exchange = Exchange()
        await middleware(http("/v2/iloq/keycontracts"), exchange.receive, exchange.send)
        assert exchange.status == 429
        assert exchange.headers[b"retry-after"] == b"1"
        assert exchange.headers[b"content-type"] == b"application/json"
        assert exchange.body == {"statusCode": 429, "message": BUSY, "error": "Too Many Requests"}
        assert not exchange.body_read

    run(scenario)


def test_probes_and_metrics_pass_a_busy_process() -> None:
    async def scenario() -> None:
        s = slots(1, max_waiting=0)
        middleware = AdmissionMiddleware(answer_ok, slots=s)
        assert s.try_acquire()
        for path in ("/healthz", "/readyz", "/metrics"):
            exchange = Exchange()
            await middleware(http(path), exchange.receive, exchange.send)
            assert exchange.status == 200, path
        assert s.held == 1

    run(scenario)


def test_the_slot_is_free_again_after_an_app_that_raised() -> None:
    async def raises(scope: Scope, receive: Receive, send: Send) -> None:
        assert admission.CURRENT.get() is not None
        raise RuntimeError("boom")

    async def scenario() -> None:
        s = slots(1)
        middleware = AdmissionMiddleware(raises, slots=s)
        exchange = Exchange()
        with pytest.raises(RuntimeError):
            await middleware(http("/v2/"), exchange.receive, exchange.send)
        assert s.held == 0
        assert admission.CURRENT.get() is None

    run(scenario)


def test_refusals_are_logged_once_per_interval_with_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]

    async def scenario() -> None:
        s = slots(1, max_waiting=0)
        middleware = AdmissionMiddleware(answer_ok, slots=s, monotonic=lambda: now[0])
        assert s.try_acquire()

        async def refused(count: int) -> None:
            for _ in range(count):
                await middleware(http("/v2/"), Exchange().receive, Exchange().send)

        await refused(5)
        now[0] += LOG_EVERY_SECONDS - 1
        await refused(3)
        now[0] += 1
        await refused(1)

    with caplog.at_level(logging.WARNING, "keyautomat.entrypoints.api.admission"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("overloaded: refused 1 request(s)")
    assert lines[1].startswith("overloaded: refused 8 request(s)")  # 4 + 3 + 1


def test_every_change_of_the_number_held_is_told_and_a_hand_over_is_none() -> None:
    told: list[int] = []

    async def scenario() -> None:
        s = Slots(1, max_waiting=1, max_wait=1, schedule=FakeTimers(), on_change=told.append)
        assert await s.acquire()
        waiter = asyncio.create_task(s.acquire())
        await let_tasks_run()
        s.release()  # handed straight to the waiter: still one held
        assert await waiter
        s.release()

    run(scenario)
    assert told == [1, 0]


# --- the limit that follows holding times ------------------------------------------------


def window_of(limit: LatencyLimit, held: float, at: int, *, contended: bool = True) -> int:
    """Feeds one whole window of holds of ``held`` seconds; the limit it ends with."""
    if contended:
        limit.contended()
    for _ in range(limit.window):
        at = limit.observe(held, at)
    return at


def test_long_holds_under_contention_lower_the_limit_a_tenth_at_a_time() -> None:
    limit = LatencyLimit(ceiling=40, target=0.05)
    assert window_of(limit, 0.08, 40) == 36
    assert window_of(limit, 0.08, 36) == 32
    assert window_of(limit, 0.08, 12) == 10  # int(10.8)
    assert window_of(limit, 0.08, 11) == 10  # the floor: a quarter of 40
    assert window_of(LatencyLimit(ceiling=8, target=0.05), 0.08, 5) == 4  # a tenth of 5: one


def test_the_limit_never_falls_below_a_quarter_of_the_ceiling() -> None:
    limit = LatencyLimit(ceiling=8, target=0.05)
    at = 8
    for _ in range(20):
        at = window_of(limit, 1.0, at)
    assert at == limit.floor == 2
    assert LatencyLimit(ceiling=3, target=0.05).floor == 1


def test_short_holds_under_contention_raise_the_limit_by_one_up_to_the_ceiling() -> None:
    limit = LatencyLimit(ceiling=8, target=0.05)
    assert window_of(limit, 0.01, 5) == 6
    assert window_of(limit, 0.01, 8) == 8


def test_holds_near_the_target_leave_the_limit_where_it_is() -> None:
    limit = LatencyLimit(ceiling=8, target=0.05)
    assert window_of(limit, 0.045, 6) == 6  # under the target, above 80 % of it


def test_without_contention_the_limit_stays_however_long_the_holds() -> None:
    limit = LatencyLimit(ceiling=8, target=0.05)
    assert window_of(limit, 5.0, 8, contended=False) == 8
    assert window_of(limit, 0.001, 4, contended=False) == 4


def test_the_window_decides_on_its_ninetieth_percentile_not_on_one_slow_hold() -> None:
    limit = LatencyLimit(ceiling=8, target=0.05, window=10)
    limit.contended()
    at = 8
    for held in (0.01,) * 9 + (3.0,):
        at = limit.observe(held, at)
    assert at == 8
    limit.contended()
    for held in (0.01,) * 8 + (3.0, 3.0):
        at = limit.observe(held, at)
    assert at == 7


def test_a_window_is_judged_once_and_its_contention_does_not_carry_over() -> None:
    limit = LatencyLimit(ceiling=8, target=0.05, window=4)
    assert window_of(limit, 0.2, 8) == 7
    assert window_of(limit, 0.2, 7, contended=False) == 7


def test_a_latency_limit_needs_a_ceiling_and_a_target() -> None:
    with pytest.raises(ValueError, match="ceiling"):
        LatencyLimit(ceiling=0, target=0.05)
    with pytest.raises(ValueError, match="target"):
        LatencyLimit(ceiling=8, target=0)


def adaptive_slots(
    *, window: int, now: list[float], on_limit: Callable[[int], None] = lambda limit: None
) -> Slots:
    """Four slots whose limit follows a 50 ms target, on the test's clock ``now[0]``."""
    return Slots(
        4,
        max_waiting=4,
        max_wait=1,
        schedule=FakeTimers(),
        adapt=LatencyLimit(ceiling=4, target=0.05, window=window),
        on_limit=on_limit,
        monotonic=lambda: now[0],
    )


def test_a_busy_process_whose_requests_hold_too_long_hands_out_fewer_slots() -> None:
    now = [0.0]
    limits: list[int] = []

    async def scenario() -> None:
        s = adaptive_slots(window=4, now=now, on_limit=limits.append)
        tickets = []
        for _ in range(4):
            assert await s.acquire()
            tickets.append(Ticket(s))
        waiter = asyncio.create_task(s.acquire())  # contention
        await let_tasks_run()
        now[0] += 0.2
        for ticket in tickets[:3]:
            ticket.release()  # each slot passes to the waiter or falls free
        assert await waiter
        tickets[3].release()  # the fourth hold ends the window: the limit falls to 3
        assert s.limit == 3
        assert s.held == 1  # the waiter's
        assert [await s.acquire(), await s.acquire()] == [True, True]
        assert not s.try_acquire()  # three held: the new limit

    run(scenario)
    assert limits == [4, 3]


def test_a_raised_limit_lets_waiters_in_at_once_and_a_lowered_one_drains_first() -> None:
    async def scenario() -> None:
        s = slots(2, max_waiting=3)
        assert await s.acquire()
        assert await s.acquire()
        first = asyncio.create_task(s.acquire())
        second = asyncio.create_task(s.acquire())
        await let_tasks_run()
        s.set_limit(3)
        await let_tasks_run()
        assert first.done()
        assert await first
        assert not second.done()
        assert (s.held, s.waiting) == (3, 1)
        s.set_limit(1)
        s.release()  # 2 held, still above the limit: not passed on
        s.release()
        assert (s.held, s.waiting) == (1, 1)
        s.release()  # now within the limit: passed on to the one waiting
        assert await second
        assert (s.held, s.waiting) == (1, 0)

    run(scenario)


def test_a_limit_set_below_one_is_refused_and_the_limit_stays() -> None:
    s = slots(2)
    with pytest.raises(ValueError, match="at least 1"):
        s.set_limit(0)
    assert s.limit == 2


def test_short_holds_while_requests_wait_raise_the_limit_and_let_a_waiter_in() -> None:
    now = [0.0]

    async def scenario() -> None:
        s = adaptive_slots(window=2, now=now)
        s.set_limit(2)
        first, second = Ticket(s), Ticket(s)
        assert await s.acquire()
        assert await s.acquire()
        waiters = [asyncio.create_task(s.acquire()) for _ in range(3)]
        await let_tasks_run()
        assert s.waiting == 3
        now[0] += 0.001
        first.release()  # passed on to the first waiter
        second.release()  # passed on to the second; its short hold ends a contended window:
        assert s.limit == 3  # the limit rises, and the third waiter is let in at once
        assert [await w for w in waiters] == [True, True, True]
        assert (s.held, s.waiting) == (3, 0)

    run(scenario)
