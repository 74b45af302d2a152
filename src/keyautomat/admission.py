"""Admission control: how many requests one process handles at once (docs/api.md, "Overload").

Past saturation, a request admitted beyond what the process can finish only waits: on
SQLite for the one database thread (adapters/db.py), on PostgreSQL for a pooled
connection. Every request's latency then grows with the queue, clients time out and
retry, and the process spends its time on answers nobody waits for: the served rate
falls as the offered rate rises. So a process handles at most ``limit`` requests at a
time (each holds a *slot* while it is handled); a request that finds every slot taken
waits for one, first come first served, at most ``max_wait`` seconds and behind at most
``max_waiting`` others; any other is refused at once. The rule is here, without I/O or
HTTP; the API's middleware (``entrypoints/api/admission.py``) applies it to requests.

A request that waits on something outside this process (a device's ack, in
sendPincode) steps ``outside()`` its slot meanwhile: the slot serves another request,
and the request takes one back, ahead of any newcomer and without a time bound, when it
has its answer. So the bound holds for work in this process, and a few slow devices
cannot take every slot. Step outside only where nothing is held that a request with a
slot may wait for (a lock taken outside the block): taking the slot back waits for one,
and a slot holder waiting on that lock would never free it. That is why the iLOQ S5
client, which logs in under a lock, does not step outside.

Time is the event loop's unless a ``schedule`` is given (the tests pass their own, so
that they expire waiters when they choose).

The limit is a number of requests, but what a client feels is time: where a request
costs more (a slower machine, a heavier mix) the same number in flight is a longer wait.
With a :class:`LatencyLimit` the slots move their limit between a floor and the
configured one so that the time a request holds its slot stays near a target; the limit
moves only while requests are turned away or queue (when nobody waits, fewer slots would
help nobody, and a slow outside call must not shrink a process that has room).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


# Calls the callback after the delay (seconds), unless the returned timer is cancelled.
Schedule = Callable[[float, Callable[[], None]], Timer]


class LatencyLimit:
    """Where the limit of :class:`Slots` should be, from the time requests hold their slots.

    Samples are taken in windows of ``window`` holds. At the end of a window in which a
    request found every slot taken (it waited, or was refused), the limit moves: down by a
    tenth (rounded down, so at least one) while the window's 90th percentile of holding
    times is above
    ``target`` seconds, up by one while it is below ``RAISE_BELOW`` of it; never under
    ``floor`` nor over ``ceiling``. In a window without contention it stays where it is.
    A hold is measured from the slot's taking to its release, so a wait for a slot is not
    in it: the client's time is at most ``max_wait`` more.
    """

    RAISE_BELOW = 0.8
    PERCENTILE = 0.9

    def __init__(self, *, ceiling: int, target: float, window: int = 16) -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be at least 1")
        if target <= 0:
            raise ValueError("target must be above 0")
        self.ceiling = ceiling
        self.floor = max(1, ceiling // 4)
        self.target = target
        self.window = max(1, window)
        self._holds: list[float] = []
        self._contended = False

    def contended(self) -> None:
        """A request found no free slot in the current window."""
        self._contended = True

    def observe(self, held: float, limit: int) -> int:
        """Records one hold of ``held`` seconds; the limit to apply from now on."""
        holds = self._holds
        holds.append(held)
        if len(holds) < self.window:
            return limit
        holds.sort()
        tail = holds[math.ceil(len(holds) * self.PERCENTILE) - 1]
        contended = self._contended
        self._holds = []
        self._contended = False
        if not contended:
            return limit
        if tail > self.target:
            return max(self.floor, int(limit * 0.9))  # at least one less: int(0.9 * n) < n
        if tail < self.target * self.RAISE_BELOW:
            return min(self.ceiling, limit + 1)
        return limit


class Slots:
    """At most ``limit`` holders; a FIFO of at most ``max_waiting`` waiters, each for at most
    ``max_wait`` seconds. A slot freed while someone waits passes straight to the first
    waiter, so a newcomer never overtakes the queue. With ``adapt`` the limit moves with
    the holding times (:class:`LatencyLimit`; ``limit`` is then its ceiling)."""

    def __init__(
        self,
        limit: int,
        *,
        max_waiting: int,
        max_wait: float,
        schedule: Schedule | None = None,
        on_change: Callable[[int], None] = lambda held: None,
        adapt: LatencyLimit | None = None,
        on_limit: Callable[[int], None] = lambda limit: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.max_waiting = max_waiting if max_wait > 0 else 0
        self.max_wait = max_wait
        self.held = 0
        self.adapt = adapt
        self.monotonic = monotonic
        self._schedule = schedule
        self._on_change = on_change  # told the number held whenever it changes (a gauge)
        self._on_limit = on_limit  # told the limit whenever it moves (a gauge)
        # True: the waiter has been handed a slot; False: its time ran out.
        self._waiters: deque[asyncio.Future[bool]] = deque()
        on_limit(limit)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Takes a free slot if there is one and nobody waits for it; never waits."""
        if self.held < self.limit and not self._waiters:
            self.held += 1
            self._on_change(self.held)
            return True
        if self.adapt is not None:
            self.adapt.contended()
        return False

    def held_for(self, seconds: float) -> None:
        """A slot was held ``seconds`` (told by its :class:`Ticket` on release, only when
        ``adapt`` is set: with a fixed limit no request reads the clock)."""
        assert self.adapt is not None
        self.set_limit(self.adapt.observe(seconds, self.limit))

    def set_limit(self, limit: int) -> None:
        """From now on at most ``limit`` holders: more room goes to the waiters at once; with
        less, holders above it are not replaced as they leave."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if limit == self.limit:
            return
        self.limit = limit
        while self.held < limit and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += 1
                self._on_change(self.held)
                waiter.set_result(True)
        self._on_limit(limit)

    async def acquire(self) -> bool:
        """True with a slot held (release it once), False when refused: the queue was full,
        or no slot came free in ``max_wait`` seconds."""
        if self.try_acquire():
            return True
        if len(self._waiters) >= self.max_waiting:
            return False
        return await self._wait(first=False, bounded=True)

    async def reacquire(self) -> None:
        """Takes a slot back after ``outside()``: ahead of every waiter, however long it takes."""
        if self.held < self.limit:
            self.held += 1
            self._on_change(self.held)
            return
        await self._wait(first=True, bounded=False)

    def release(self) -> None:
        while self.held <= self.limit and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes on: ``held`` stays
                return
        self.held -= 1
        self._on_change(self.held)

    async def _wait(self, *, first: bool, bounded: bool) -> bool:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        if first:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        timer: Timer | None = None
        if bounded:
            schedule = self._schedule or loop.call_later
            timer = schedule(self.max_wait, lambda: self._expire(waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.release()  # handed a slot just as the waiter was cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self._waiters.remove(waiter)
            waiter.set_result(False)


class Ticket:
    """One admitted request's hold on a slot; releasing it twice releases once."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.holding = True
        self.since = self._now()

    def _now(self) -> float:
        """The slots' clock where the limit follows holding times; nothing to read otherwise."""
        return self.slots.monotonic() if self.slots.adapt is not None else 0.0

    def release(self) -> None:
        if self.holding:
            self.holding = False
            slots = self.slots
            slots.release()
            if slots.adapt is not None:
                slots.held_for(slots.monotonic() - self.since)

    @contextlib.asynccontextmanager
    async def outside(self) -> AsyncIterator[None]:
        if not self.holding:
            yield
            return
        self.release()
        try:
            yield
        finally:
            await self.slots.reacquire()
            self.holding = True
            self.since = self._now()


# The ticket of the request being handled in this task, set by the API's middleware.
CURRENT: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar(
    "keyautomat_admission_ticket", default=None
)


@contextlib.asynccontextmanager
async def outside() -> AsyncIterator[None]:
    """Frees the current request's slot while it waits on something outside the process
    (no-op outside a request, or with admission control off)."""
    ticket = CURRENT.get()
    if ticket is None:
        yield
        return
    async with ticket.outside():
        yield
