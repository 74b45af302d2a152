"""The outbox and its worker on both engines: nothing lost, nothing sent twice, lanes in order."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from keyautomat.bootstrap import Container
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import outbox
from keyautomat.service_layer.clock import ManualClock
from keyautomat.service_layer.delivery import (
    Dispatcher,
    GiveUp,
    Hold,
    Paced,
    Record,
    RetryLater,
)
from keyautomat.service_layer.outbox import OutboxMessage


class Recorder:
    """A handler that records deliveries and fails on demand."""

    def __init__(self) -> None:
        self.delivered: list[OutboxMessage] = []
        self.failures: Counter[str] = Counter()  # name -> how many more times to fail
        self.permanent: set[str] = set()
        self.paused: set[str] = set()

    async def __call__(self, message: OutboxMessage) -> None:
        name = message.payload["name"]
        if name in self.permanent:
            raise GiveUp("address is invalid")
        if name in self.paused:
            raise Hold("target paused")
        if self.failures[name] > 0:
            self.failures[name] -= 1
            raise RetryLater("receiver is down")
        self.delivered.append(message)

    @property
    def names(self) -> list[str]:
        return [m.payload["name"] for m in self.delivered]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def worker(container: Container, clock: ManualClock, recorder: Recorder) -> OutboxWorker:
    dispatcher = Dispatcher()
    dispatcher.register(
        "test", recorder, retry_delays=[timedelta(seconds=5), timedelta(seconds=15)]
    )
    return OutboxWorker(container.db, dispatcher, clock, worker_id="w1", batch_size=10)


def put(container: Container, clock: ManualClock, name: str, **kw: object) -> int | None:
    return container.db.transaction(
        lambda s: outbox.enqueue(s, "test", {"name": name}, now=clock.now(), **kw)  # type: ignore[arg-type]
    )


def rows(container: Container) -> list[outbox.OutboxRow]:
    return container.db.transaction(lambda s: outbox.read(s, kinds=["test"]))


def test_a_message_enqueued_in_a_rolled_back_transaction_never_exists(
    container: Container, clock: ManualClock
) -> None:
    def change_that_fails(session: Session) -> None:
        outbox.enqueue(session, "test", {"name": "ghost"}, now=clock.now())
        raise RuntimeError("the change itself failed")

    with pytest.raises(RuntimeError):
        container.db.transaction(change_that_fails)
    assert rows(container) == []


def test_the_worker_delivers_each_due_message_once_and_marks_it_done(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    put(container, clock, "a")
    put(container, clock, "b")
    assert asyncio.run(worker.drain()) == 2
    assert asyncio.run(worker.drain()) == 0
    assert sorted(recorder.names) == ["a", "b"]
    assert {r.status for r in rows(container)} == {"done"}


def test_a_message_due_later_waits_for_its_time(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    put(container, clock, "reminder", due_at=clock.now() + timedelta(hours=24))
    assert asyncio.run(worker.drain()) == 0
    clock.advance(timedelta(hours=24) - timedelta(seconds=1))
    assert asyncio.run(worker.drain()) == 0
    clock.advance(timedelta(seconds=1))
    assert asyncio.run(worker.drain()) == 1
    assert recorder.names == ["reminder"]


def test_a_transient_failure_is_retried_on_the_schedule_then_delivered(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    recorder.failures["flaky"] = 2
    put(container, clock, "flaky")
    asyncio.run(worker.drain())
    [row] = rows(container)
    assert (row.status, row.attempts, row.due_at) == (
        "pending",
        1,
        clock.now() + timedelta(seconds=5),
    )
    clock.advance(timedelta(seconds=5))
    asyncio.run(worker.drain())
    [row] = rows(container)
    assert (row.status, row.attempts, row.last_error) == ("pending", 2, "receiver is down")
    assert row.due_at == clock.now() + timedelta(seconds=15)
    clock.advance(timedelta(seconds=15))
    asyncio.run(worker.drain())
    [row] = rows(container)
    assert (row.status, row.attempts) == ("done", 3)
    assert recorder.names == ["flaky"]


def test_a_message_that_keeps_failing_is_marked_failed_with_its_reason(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    recorder.failures["doomed"] = 99
    put(container, clock, "doomed")
    for _ in range(3):
        asyncio.run(worker.drain())
        clock.advance(timedelta(minutes=1))
    [row] = rows(container)
    assert row.status == "failed"
    assert row.attempts == 3
    assert row.last_error == "gave up after 3 attempts: receiver is down"
    assert recorder.names == []


def test_a_permanent_failure_is_not_retried(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    recorder.permanent.add("bad")
    put(container, clock, "bad")
    asyncio.run(worker.drain())
    [row] = rows(container)
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "address is invalid")


def test_a_retrying_message_holds_back_its_lane_while_other_lanes_flow(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    recorder.failures["a1"] = 1
    put(container, clock, "a1", lane="device-a")
    put(container, clock, "a2", lane="device-a")
    put(container, clock, "b1", lane="device-b")
    put(container, clock, "b2", lane="device-b")
    asyncio.run(worker.drain())
    assert recorder.names == ["b1", "b2"]
    clock.advance(timedelta(seconds=5))
    asyncio.run(worker.drain())
    assert recorder.names == ["b1", "b2", "a1", "a2"]


def test_a_failed_message_releases_its_lane(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    recorder.permanent.add("head")
    put(container, clock, "head", lane="l")
    put(container, clock, "next", lane="l")
    asyncio.run(worker.drain())
    assert recorder.names == ["next"]


def test_a_held_message_is_kept_unattempted_in_its_place_until_released(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    recorder.paused.add("first")
    first = put(container, clock, "first", lane="L")
    put(container, clock, "second", lane="L")
    put(container, clock, "other", lane="M")
    asyncio.run(worker.drain())
    assert recorder.names == ["other"]
    by_name = {r.payload["name"]: r for r in rows(container)}
    assert (by_name["first"].status, by_name["first"].attempts) == ("held", 0)
    assert by_name["first"].last_error == "target paused"
    assert by_name["second"].status == "pending"  # waits behind the held row
    late = put(container, clock, "late", lane="L", held=True)

    recorder.paused.clear()
    assert first is not None
    assert late is not None
    released = container.db.transaction(
        lambda s: outbox.release(s, kinds=["test"], ids=[first, late])
    )
    assert released == 2
    asyncio.run(worker.drain())
    assert recorder.names == ["other", "first", "second", "late"]


def test_held_messages_are_put_aside_in_bulk_and_can_be_dropped(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    put(container, clock, "a", ref="target:1")
    put(container, clock, "b", ref="target:1")
    put(container, clock, "c", ref="target:2")
    held = container.db.transaction(lambda s: outbox.hold(s, refs=["target:1"], kinds=["test"]))
    assert held == 2
    asyncio.run(worker.drain())
    assert recorder.names == ["c"]
    dropped = container.db.transaction(
        lambda s: outbox.drop_held(
            s, kinds=["test"], refs=["target:1"], now=clock.now(), reason="gone"
        )
    )
    assert dropped == 2
    assert {r.payload["name"]: r.status for r in rows(container)} == {
        "a": "cancelled",
        "b": "cancelled",
        "c": "done",
    }


def test_an_idempotency_key_stores_a_message_only_once(
    container: Container, clock: ManualClock
) -> None:
    first = put(container, clock, "x", idempotency_key="contract:1:fetched")
    again = put(container, clock, "x", idempotency_key="contract:1:fetched")
    assert first is not None
    assert again is None
    assert len(rows(container)) == 1


def test_pending_messages_can_be_cancelled_by_what_they_are_about(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    later = clock.now() + timedelta(hours=1)
    put(container, clock, "start-reminder", due_at=later, ref="contract:7")
    put(container, clock, "other", due_at=later, ref="contract:8")
    cancelled = container.db.transaction(lambda s: outbox.cancel(s, ref="contract:7"))
    assert cancelled == 1
    clock.advance(timedelta(hours=2))
    asyncio.run(worker.drain())
    assert recorder.names == ["other"]


def test_a_row_of_a_worker_that_died_is_delivered_by_the_next_after_the_lease(
    container: Container, clock: ManualClock, recorder: Recorder
) -> None:
    put(container, clock, "orphan")
    lease = timedelta(seconds=60)
    # The first worker claims the row and dies before it can deliver or record it.
    taken = container.db.transaction(
        lambda s: outbox.claim(s, worker_id="dead", now=clock.now(), lease=lease, limit=10)
    )
    assert [m.payload["name"] for m in taken] == ["orphan"]
    dispatcher = Dispatcher()
    dispatcher.register("test", recorder)
    survivor = OutboxWorker(container.db, dispatcher, clock, worker_id="alive", lease=lease)
    assert asyncio.run(survivor.drain()) == 0  # still leased to the dead worker
    clock.advance(lease + timedelta(seconds=1))
    assert asyncio.run(survivor.drain()) == 1
    [row] = rows(container)
    assert (row.status, row.attempts) == ("done", 2)
    # The dead worker's late report changes nothing.
    assert not container.db.transaction(lambda s: outbox.mark_done(s, row.id, "dead", clock.now()))


def test_the_run_loop_delivers_until_stopped(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.to_thread(put, container, clock, "live")
        worker.wake()
        for _ in range(200):
            if recorder.names:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(scenario())
    assert recorder.names == ["live"]


def test_a_hanging_handler_is_cut_off_before_its_lease_ends_and_retried_on_schedule(
    container: Container, clock: ManualClock, recorder: Recorder
) -> None:
    lease = timedelta(milliseconds=400)
    cancelled: list[str] = []

    async def hangs_once(message: OutboxMessage) -> None:
        if not cancelled:
            try:
                await asyncio.Event().wait()  # a receiver that never answers
            except asyncio.CancelledError:
                cancelled.append(message.payload["name"])
                raise
        await recorder(message)

    dispatcher = Dispatcher()
    dispatcher.register("test", hangs_once, retry_delays=[timedelta(seconds=5)])
    worker = OutboxWorker(container.db, dispatcher, clock, worker_id="w1", lease=lease)
    put(container, clock, "stuck")

    async def one_pass() -> int:
        return await asyncio.wait_for(worker.run_once(), timeout=5)

    started = time.monotonic()
    assert asyncio.run(one_pass()) == 1
    assert time.monotonic() - started < 5
    assert cancelled == ["stuck"]
    assert timedelta(0) < worker.deadline < lease
    [row] = rows(container)
    assert (row.status, row.attempts, row.due_at) == (
        "pending",
        1,
        clock.now() + timedelta(seconds=5),
    )
    assert row.last_error == "handler ran past its deadline of 0.3 s"
    clock.advance(timedelta(seconds=5))
    assert asyncio.run(worker.drain()) == 1
    [row] = rows(container)
    assert (row.status, row.attempts) == ("done", 2)
    assert recorder.names == ["stuck"]


def test_the_run_loop_delivers_other_lanes_while_one_delivery_hangs(
    container: Container, clock: ManualClock, recorder: Recorder
) -> None:
    # A receiver that does not answer holds its own row, not the others claimed with it.
    release = asyncio.Event()
    others_done = asyncio.Event()

    async def handler(message: OutboxMessage) -> None:
        if message.payload["name"] == "slow":
            await release.wait()
        await recorder(message)
        if len(recorder.names) == 3 and "slow" not in recorder.names:
            others_done.set()

    dispatcher = Dispatcher()
    dispatcher.register("test", handler)
    worker = OutboxWorker(container.db, dispatcher, clock, worker_id="w1", batch_size=10)
    put(container, clock, "slow", lane="hangs")
    for name in ("a1", "a2", "a3"):
        put(container, clock, name, lane="flows")

    async def scenario() -> list[outbox.OutboxRow]:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(others_done.wait(), timeout=10)
        # The lane behind the hanging row went through one row after another...
        settled = await asyncio.to_thread(rows, container)
        release.set()
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        return settled

    settled = asyncio.run(scenario())
    assert recorder.names == ["a1", "a2", "a3", "slow"]
    # ...each recorded before the next was claimed, while "slow" was still in flight.
    status = {r.payload["name"]: r.status for r in settled}
    assert (status["slow"], status["a1"], status["a2"]) == ("in_flight", "done", "done")
    assert {r.status for r in rows(container)} == {"done"}  # stopping finished and recorded it


def test_the_outcomes_of_a_batch_are_recorded_in_one_statement(
    container: Container, clock: ManualClock, worker: OutboxWorker, recorder: Recorder
) -> None:
    recorder.failures["retry"] = 1
    recorder.permanent.add("invalid")
    recorder.paused.add("paused")
    for name in ("ok-1", "ok-2", "retry", "invalid", "paused"):
        put(container, clock, name, lane=name)
    updates: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE OUTBOX"):
            updates.append(statement)

    claimed = container.db.transaction(
        lambda s: outbox.claim(
            s, worker_id="w1", now=clock.now(), lease=worker.lease, limit=10, kinds=["test"]
        )
    )
    outcomes = [asyncio.run(worker._attempt(m, recorder)) for m in claimed]
    event.listen(container.db.engine, "before_cursor_execute", count)
    try:
        container.db.transaction(lambda s: worker._record(s, outcomes))
    finally:
        event.remove(container.db.engine, "before_cursor_execute", count)
    assert len(updates) == 1
    by_name = {r.payload["name"]: r for r in rows(container)}
    assert {n: (r.status, r.attempts) for n, r in by_name.items()} == {
        "ok-1": ("done", 1),
        "ok-2": ("done", 1),
        "retry": ("pending", 1),
        "invalid": ("failed", 1),
        "paused": ("held", 0),  # the claim's attempt taken back
    }
    assert by_name["retry"].due_at == clock.now() + timedelta(seconds=5)
    assert by_name["retry"].last_error == "receiver is down"
    assert by_name["invalid"].finished_at == clock.now()
    assert by_name["ok-1"].last_error is None


def test_a_worker_that_dies_after_sending_and_before_recording_loses_nothing(
    container: Container, clock: ManualClock, recorder: Recorder
) -> None:
    lease = timedelta(seconds=60)

    async def sends_then_dies(message: OutboxMessage) -> Record:
        await recorder(message)

        def crash(_session: Session) -> None:
            raise RuntimeError("the worker died before its outcomes were written")

        return crash

    dying = Dispatcher()
    dying.register("test", sends_then_dies)
    first = OutboxWorker(container.db, dying, clock, worker_id="dies", lease=lease)
    for lane in ("a", "b", "c"):
        put(container, clock, f"{lane}1", lane=lane)
        put(container, clock, f"{lane}2", lane=lane)
    with pytest.raises(RuntimeError, match="died"):
        asyncio.run(first.run_once())
    # All three were sent, nothing was recorded: the rows are still the dead worker's.
    assert sorted(recorder.names) == ["a1", "b1", "c1"]
    assert {r.status for r in rows(container)} == {"in_flight", "pending"}

    survivor_dispatcher = Dispatcher()
    survivor_dispatcher.register("test", recorder)
    survivor = OutboxWorker(
        container.db, survivor_dispatcher, clock, worker_id="alive", lease=lease
    )
    assert asyncio.run(survivor.drain()) == 0  # still leased
    clock.advance(lease + timedelta(seconds=1))
    assert asyncio.run(survivor.drain()) == 6
    # Delivered again (at least once), each lane still in order, nothing lost.
    assert sorted(recorder.names) == ["a1", "a1", "a2", "b1", "b1", "b2", "c1", "c1", "c2"]
    for lane in "abc":
        assert [n for n in recorder.names if n.startswith(lane)] == [
            f"{lane}1",
            f"{lane}1",
            f"{lane}2",
        ]
    assert {(r.status, r.attempts) for r in rows(container) if r.payload["name"].endswith("1")} == {
        ("done", 2)
    }


class BreakingClock(ManualClock):
    """A clock whose next reading fails once, when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.break_next = False

    def now(self) -> datetime:
        if self.break_next:
            self.break_next = False
            raise RuntimeError("clock broke")
        return super().now()


def test_a_delivery_that_raises_outside_its_handler_is_logged_and_retried_not_left_in_flight(
    container: Container, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    clock = BreakingClock()

    async def breaks_the_clock(message: OutboxMessage) -> None:
        await recorder(message)
        clock.break_next = True  # the worker's reading after the handler fails

    dispatcher = Dispatcher()
    dispatcher.register("test", breaks_the_clock, retry_delays=[timedelta(seconds=5)])
    worker = OutboxWorker(container.db, dispatcher, clock, worker_id="w1")
    put(container, clock, "one")

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        while not recorder.names:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    [row] = rows(container)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "RuntimeError: clock broke")
    assert any(r.exc_info and "clock broke" in str(r.exc_info[1]) for r in caplog.records)


def test_a_row_that_gets_no_turn_at_its_target_in_time_is_given_back_unattempted(
    container: Container, clock: ManualClock, recorder: Recorder
) -> None:
    turns = asyncio.Semaphore(1)
    handled: list[str] = []

    async def handle(message: OutboxMessage) -> None:
        handled.append(message.payload["name"])
        await asyncio.Event().wait()  # the first holds the only turn past its deadline

    paced = Paced(handle, lambda _m: turns, longest=timedelta(milliseconds=200))
    dispatcher = Dispatcher()
    dispatcher.register("test", paced, retry_delays=[timedelta(seconds=5)])
    worker = OutboxWorker(
        container.db, dispatcher, clock, worker_id="w1", lease=timedelta(milliseconds=400)
    )
    put(container, clock, "first", lane="a")
    put(container, clock, "second", lane="b")
    assert asyncio.run(asyncio.wait_for(worker.run_once(), timeout=5)) == 2
    assert handled == ["first"]
    first, second = rows(container)
    assert first.last_error == "handler ran past its deadline of 0.3 s"
    # Waiting was no attempt: the one its claim counted is taken back.
    assert (second.status, second.due_at, second.attempts) == ("pending", clock.now(), 0)
    assert second.last_error == "not attempted: no turn at its receiver within 0.1 s"
