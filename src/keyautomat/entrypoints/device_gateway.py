"""The device gateway: the server end of the device protocol (docs/device-protocol.md).

It listens on every device's ``up`` topic, applies what devices report through
the use cases in ``service_layer/devices.py`` (one transaction per message),
acknowledges device events after they have committed, pushes pincode syncs,
and carries commands such as sendPincode to devices, waiting for their ack.

Messages of one device are handled in order by one worker; different devices
are spread over several workers (one on SQLite, which has one writer anyway).
Nothing a device sends can crash the gateway. A malformed message is decoded and
refused before anything else, with no database work: answered ``rejected``
(``malformed``, naming the field) when its id can be read, else dropped. Every
refusal carries a reason from the protocol's set (``RejectReason``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import traceback
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session

from keyautomat import metrics
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import SYNC_CHANNEL, Database, listen, watch
from keyautomat.adapters.device_links import Connection, Link, LinkError
from keyautomat.adapters.device_protocol import (
    DEVICE_EVENTS,
    MAX_DETAIL,
    MESSAGE_REFUSALS,
    Ack,
    CancelPrompt,
    CodeEntered,
    Data,
    Hello,
    Message,
    OpenLocker,
    PromptEnded,
    ProtocolError,
    ProximityPrompt,
    Rejected,
    RejectReason,
    RemoteCode,
    Sync,
    Welcome,
    bounded,
    decode_from_device,
    down_topic,
    encode,
    hw_id_of_up_topic,
    new_message_id,
    up_pattern,
)
from keyautomat.config import Settings
from keyautomat.domain.attempts import AttemptLimiter, RateLimit
from keyautomat.service_layer import device_commands, device_leases, devices
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.device_commands import CommandKind
from keyautomat.service_layer.principal import Principal

log = logging.getLogger(__name__)


class SendFailure(StrEnum):
    """``reason`` of an unsuccessful sendPincode (gaps.md D6)."""

    AUTOMAT_BUSY = "AUTOMAT_BUSY"
    AUTOMAT_OFFLINE = "AUTOMAT_OFFLINE"
    TIMEOUT = "TIMEOUT"


@dataclass(frozen=True, slots=True)
class SendResult:
    success: bool
    reason: SendFailure | None = None


@dataclass(slots=True)
class _PincodeSession:
    """A sendPincode in progress: in flight to the device, or a proximity prompt waiting
    for ``#``. While one exists the automat is busy for other sendPincode calls."""

    code: str
    proximity: bool
    deadline: float


# Decides, after a ``code-entered`` has committed, whether the locker may open:
# True opens it (``open-locker`` naming the pincode), False keeps it shut, None
# means the code was not one the server has to act on. The iLOQ contracts
# program the key here, just in time (docs/contracts.md).
BeforeOpen = Callable[[str, CodeEntered, datetime], Awaitable[bool | None]]


@dataclass(slots=True)
class GatewayStats:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    malformed: int = 0  # refused as malformed, answered or not
    unanswered: int = 0  # malformed with no readable id: dropped, nothing to refer to
    rejected: int = 0  # refused for any other reason
    backed_off: int = 0  # hellos with a pincode refused unread while backed off
    hello_rate_alarms: int = 0  # windows in which all devices' failed hellos hit the rate
    sent: int = 0
    errors: int = 0
    not_held: int = 0  # messages of devices another gateway holds the lease of
    routed: int = 0  # commands run for another process's API
    by_type: dict[str, int] = field(default_factory=dict)


# While sendPincode waits for a sync's ack, how often the database is asked whether
# the automat acknowledged it (to another gateway process, or before the wait began).
SYNC_RECHECK_SECONDS = 0.25
# How long stop() waits for its cancelled tasks before it goes on without them.
STOP_WAIT_SECONDS = 5.0


class _BackedOff(devices.DeviceRejected):
    """A hello with a pincode refused from memory while its sender is backed off; counted
    in ``stats.backed_off`` rather than logged, so that guessing cannot flood the log.
    The answer depends on nobody's code: only on how many guesses came before."""

    def __init__(self) -> None:
        super().__init__(RejectReason.LOCKED_OUT, "too many wrong installation codes: wait")


class DeviceGateway:
    def __init__(
        self,
        *,
        db: Database,
        link: Link,
        clock: Clock,
        settings: Settings,
        code_key: bytes,
        client_id: str | None = None,
        workers: int | None = None,
        secrets: SecretBox | None = None,
    ) -> None:
        self.db = db
        self.secrets = secrets  # opens the codes of commands routed from API processes
        self.link = link
        self.clock = clock
        self.prefix = settings.mqtt_topic_prefix
        # Unique among every gateway process on the database, across hosts and restarts:
        # the holder of device leases (docs/deployment.md).
        self.gateway_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.client_id = (
            client_id or settings.mqtt_client_id or f"keyautomat-gw-{uuid.uuid4().hex[:12]}"
        )
        self.ack_timeout = settings.device_ack_timeout_seconds
        self.proximity_seconds = settings.device_proximity_seconds
        self.heartbeat_seconds = settings.device_heartbeat_seconds
        self.offline_after = settings.device_offline_after_seconds
        self.sync_interval = settings.device_sync_interval_seconds
        self.clock_skew = timedelta(seconds=settings.device_clock_skew_seconds)
        self.worker_count = workers or (1 if db.is_sqlite else max(2, settings.db_threads))
        self.bind_policy = devices.BindPolicy(
            code_key=code_key,
            code_ttl=timedelta(hours=settings.installation_pincode_ttl_hours),
            rebind_window=timedelta(seconds=settings.device_rebind_window_seconds),
        )
        # Failed hellos with an installation pincode (docs/device-protocol.md, "Limits
        # on installation pincodes"): a doubling back-off per hwId, and a plain rate
        # for all devices together, which honest installs get back as soon as the
        # guessing slows down. Kept in memory, so a refusal costs no database work.
        self.hello_failures = AttemptLimiter(
            free=settings.device_hello_failures_per_device,
            cap=timedelta(seconds=settings.device_hello_backoff_max_seconds),
        )
        self.hello_failure_rate = RateLimit(
            limit=settings.device_hello_failures_per_minute, window=timedelta(minutes=1)
        )
        self.programming_deadline = settings.device_programming_deadline_seconds
        # Device leases (service_layer/device_leases.py): the devices this gateway handles,
        # and those another gateway holds, each with its lease's end.
        self.lease_length = timedelta(seconds=settings.device_lease_seconds)
        self._held: dict[str, datetime] = {}
        self._foreign: dict[str, tuple[str, datetime]] = {}
        # When each held device was last heard from: a lease is renewed only while its
        # device speaks (heartbeats), so hwIds that sent junk once are let go.
        self._heard: dict[str, datetime] = {}
        self._quiet_after = max(self.lease_length, timedelta(seconds=3 * self.heartbeat_seconds))
        # Bumped by every release of all leases: a claim or renewal still in flight then
        # must not bring a lease back (the broker was lost, or the gateway stopped).
        self._lease_epoch = 0
        # Commands routed from API processes, running (service_layer/device_commands.py).
        self._commands: set[asyncio.Task[None]] = set()
        self.stats = GatewayStats()
        self._connection: Connection | None = None
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Key programming before a locker opens runs apart from the workers, so that a
        # slow iLOQ system never holds up device traffic (there is one worker on SQLite).
        self._programming: set[asyncio.Task[None]] = set()
        # ...but one automat's programmings still run one after the other, in order.
        self._programming_locks: dict[str, asyncio.Lock] = {}
        self._queues: list[asyncio.Queue[tuple[str, str, bytes]]] = []
        self._acks: dict[str, tuple[str, asyncio.Future[Ack]]] = {}
        self._syncs_in_flight: dict[str, tuple[str, int, float]] = {}
        # Sync on change: automats a committed transaction changed, waiting to be pushed
        # by the one pusher task (a burst of commits becomes one pass).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: set[str] = set()
        self._pusher: asyncio.Task[None] | None = None
        # The newest version each automat acknowledged, and sendPincode calls waiting
        # for an automat to acknowledge a version.
        self._acked: dict[str, int] = {}
        self._sync_waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._sessions: dict[str, _PincodeSession] = {}
        # Called with (automat id, message) after a device event has been applied
        # and acknowledged; for metrics and benchmarks. Must not block.
        self.observers: list[Callable[[str, Message], None]] = []
        self.before_open: BeforeOpen | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, *, wait: float = 5.0) -> None:
        """Start listening; waits up to ``wait`` seconds for the first connection, then
        carries on reconnecting in the background if the broker is not there yet."""
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self.db.is_sqlite:
            # One process runs on SQLite: leases left by one that died hold nothing.
            await self.db.run(device_leases.clear)
        self._queues = [asyncio.Queue() for _ in range(self.worker_count)]
        self._tasks = [asyncio.create_task(self._worker(q)) for q in self._queues]
        self._tasks.append(asyncio.create_task(self._listen()))
        self._tasks.append(asyncio.create_task(self._maintain()))
        self._tasks.append(asyncio.create_task(self._keep_leases()))
        # One way to hear of changes per engine. PostgreSQL's NOTIFY reaches this
        # process's own commits too, so listening to both would push every change twice.
        if self.db.is_sqlite:
            self.db.after_commit.append(self._on_commit)
        else:
            self._tasks.append(asyncio.create_task(self._listen_to_other_processes()))
        try:
            await asyncio.wait_for(self._ready.wait(), wait)
        except TimeoutError:
            log.warning("device link not connected yet; the gateway keeps trying")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.db.after_commit.remove(self._on_commit)
        self._loop = None
        tasks = [*self._tasks, *self._programming, *self._commands]
        if self._pusher is not None:
            tasks.append(self._pusher)
            self._pusher = None
        loop = asyncio.get_running_loop()
        for task in [task for task in tasks if task.get_loop() is not loop]:
            # Started on another loop (tests run two apps on one container): cancelled
            # there, and not waited for here, as that loop may have ended already.
            with contextlib.suppress(RuntimeError):
                task.get_loop().call_soon_threadsafe(task.cancel)
        tasks = [task for task in tasks if task.get_loop() is loop]
        for task in tasks:
            task.cancel()
        if tasks:
            done, stuck = await asyncio.wait(tasks, timeout=STOP_WAIT_SECONDS)
            for task in done:
                # Read, as awaiting them did: an error a task ended with is not news at a
                # stop, and unread it would be reported when the task is collected.
                if not task.cancelled():
                    task.exception()
            for task in stuck:
                # A task that does not end on cancel would hang the process's shutdown:
                # say where it is, and go on without it.
                frames = task.get_stack()
                where = "".join(traceback.format_stack(frames[-1])) if frames else "?"
                log.error(
                    "gateway task %s did not stop within %.0f s:\n%s",
                    task.get_name(),
                    STOP_WAIT_SECONDS,
                    where,
                )
        self._tasks = []
        self._programming.clear()
        self._commands.clear()
        self._connection = None
        await self._release_leases()

    @property
    def connected(self) -> bool:
        return self._connection is not None

    @property
    def running(self) -> bool:
        """Started and not stopped: this process has a gateway."""
        return self._loop is not None

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with self.link.connect(self.client_id) as connection:
                    await connection.subscribe(up_pattern(self.prefix))
                    self._connection = connection
                    self._ready.set()
                    backoff = 0.2
                    log.info("device gateway listening on %s", up_pattern(self.prefix))
                    async for topic, payload in connection.messages():
                        self._dispatch(topic, payload)
            except LinkError as exc:
                log.warning("device link lost: %s; reconnecting in %.1fs", exc, backoff)
            finally:
                self._connection = None
                self._ready.clear()
            # Not hearing the devices, the gateway must not keep them from another one.
            await self._release_leases()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        self.stats.received += 1
        hw_id = hw_id_of_up_topic(self.prefix, topic)
        if hw_id is None:
            self.stats.malformed += 1
            log.warning("dropped a message on unexpected topic %r", topic)
            return
        # One device always lands on the same worker, so its messages keep their order.
        queue = self._queues[zlib.crc32(hw_id.encode()) % len(self._queues)]
        queue.put_nowait((hw_id, topic, payload))

    async def _worker(self, queue: asyncio.Queue[tuple[str, str, bytes]]) -> None:
        while True:
            hw_id, _topic, payload = await queue.get()
            try:
                message = self._decode(hw_id, payload)
                if isinstance(message, ProtocolError):
                    await self._refuse_malformed(hw_id, message)
                    continue
                # A guess refused from memory takes no lease: no database work at all.
                if not self._refused_in_memory(hw_id, message) and not await self.holds(hw_id):
                    self.stats.not_held += 1
                    continue
                self._heard[hw_id] = self.clock.now()
                await self._handle(hw_id, message)
            except Exception:
                self.stats.errors += 1
                log.exception("failed to handle a message from %s", hw_id)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("device maintenance failed")

    async def sweep(self) -> None:
        """Mark silent devices offline and push syncs that devices have not acknowledged."""
        now = self.clock.now()
        offline = await self.db.run(
            lambda s: devices.mark_silent_devices_offline(s, now, self.offline_after)
        )
        for automat_id in offline:
            log.info("automat %s went offline", automat_id)
        self._expire_sessions()
        loop_now = asyncio.get_running_loop().time()
        for message_id, (_automat, _version, sent) in list(self._syncs_in_flight.items()):
            if loop_now - sent > max(60.0, 4 * self.ack_timeout):
                del self._syncs_in_flight[message_id]
                metrics.device_command_done("sync", "timeout", loop_now - sent)
        await self.push_syncs()
        # Commands whose notification was missed (a LISTEN connection silently dropped,
        # or heard before the broker connected): the safety net, as for syncs.
        if self.secrets is not None and not self.db.is_sqlite:
            await self._run_waiting()

    # --- device leases ------------------------------------------------------------------

    def _lease_known(self, hw_id: str, now: datetime) -> bool | None:
        """True: ours with time to spare; False: another gateway's; None: ask the database."""
        ours = self._held.get(hw_id)
        if ours is not None and ours - self.lease_length / 3 > now:
            return True
        theirs = self._foreign.get(hw_id)
        if theirs is not None and theirs[1] > now:
            return False
        return None

    async def holds(self, hw_id: str) -> bool:
        """Whether this gateway handles the device: it holds the device's lease, taking it
        when nobody holds it or it lapsed. Only a gateway hearing the devices takes any."""
        if self._connection is None:
            return False
        now = self.clock.now()
        known = self._lease_known(hw_id, now)
        if known is not None:
            return known
        epoch = self._lease_epoch
        lease = await self.db.run(
            lambda s: device_leases.claim(s, hw_id, self.gateway_id, now, self.lease_length)
        )
        if lease is None:
            return False
        if lease.gateway_id == self.gateway_id:
            if epoch != self._lease_epoch or self._connection is None:
                # All leases were given up while this claim ran: it must not stand.
                await self._give_up([hw_id])
                return False
            self._held[hw_id] = lease.expires_at
            self._heard.setdefault(hw_id, now)
            self._foreign.pop(hw_id, None)
            return True
        self._held.pop(hw_id, None)
        self._foreign[hw_id] = (lease.gateway_id, lease.expires_at)
        return False

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_length.total_seconds() / 3)
            try:
                await self.renew_leases()
            except Exception:
                log.exception("renewing device leases failed")

    async def renew_leases(self) -> None:
        """Extend the leases of devices heard from lately, give up the others, and delete
        lapsed leases and commands long expired."""
        if self._connection is None:
            return
        now = self.clock.now()
        until = now + self.lease_length
        quiet = now - self._quiet_after
        keep = [hw for hw in self._held if self._heard.get(hw, now) >= quiet]
        drop = [hw for hw in self._held if self._heard.get(hw, now) < quiet]
        stale_commands = now - timedelta(seconds=60 + 3 * self.ack_timeout)

        def work(session: Session) -> set[str]:
            device_leases.release(session, self.gateway_id, drop)
            held = device_leases.renew(session, self.gateway_id, now, self.lease_length, keep)
            device_leases.prune(session, now - self.lease_length)
            device_commands.prune(session, stale_commands)
            return held

        epoch = self._lease_epoch
        held = await self.db.run(work)
        if epoch != self._lease_epoch or self._connection is None:
            await self._give_up(held)  # renewed after all leases were given up: undo
            return
        for hw_id in keep:
            if hw_id in held:
                self._held[hw_id] = until
            else:
                self._held.pop(hw_id, None)  # lapsed, and another gateway took it
        for hw_id in drop:
            self._held.pop(hw_id, None)
        self._heard = {hw: at for hw, at in self._heard.items() if at >= quiet}
        self._foreign = {hw: lease for hw, lease in self._foreign.items() if lease[1] > now}

    def _released(self, gateway_id: str) -> None:
        """Another gateway gave up its devices: ask again at their next message."""
        self._foreign = {hw: lease for hw, lease in self._foreign.items() if lease[0] != gateway_id}

    async def _release_leases(self) -> None:
        """Give up every lease, so that another gateway takes the devices at once."""
        self._lease_epoch += 1
        self._held.clear()
        self._heard.clear()
        try:
            await self.db.run(lambda s: device_leases.release(s, self.gateway_id))
        except Exception:
            log.warning("could not release device leases; they lapse in %s", self.lease_length)

    async def _give_up(self, hw_ids: Iterable[str]) -> None:
        """Give up the leases of these devices only."""
        given_up = list(hw_ids)
        for hw_id in given_up:
            self._held.pop(hw_id, None)
            self._heard.pop(hw_id, None)
        if given_up:
            await self.db.run(lambda s: device_leases.release(s, self.gateway_id, given_up))

    # --- sync on change -----------------------------------------------------------------

    def _on_commit(self, automat_ids: frozenset[str]) -> None:
        """A transaction of this process changed these automats' pincodes (db thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.wake, automat_ids)

    def wake(self, automat_ids: Iterable[str]) -> None:
        """Push these automats their sync now (the periodic sweep stays the safety net)."""
        if self._loop is None:
            return  # stopped: a wake queued just before ``stop`` finds nothing to push with
        self._changed.update(automat_ids)
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.create_task(self._push_changed())

    async def _push_changed(self) -> None:
        while self._changed:
            batch = sorted(self._changed)
            self._changed.clear()
            try:
                await self.push_syncs(batch)
            except Exception:
                log.exception("pushing syncs after a commit failed; the sweep retries")

    async def _listen_to_other_processes(self) -> None:
        """What other processes announce through PostgreSQL ``NOTIFY``, on one connection:
        automats whose pincodes a commit changed (adapters/db.py; this process's own commits
        among them), commands handed over by API processes, and gateways that let go of
        their devices. After each (re)connection, commands issued meanwhile are caught up."""
        channels = [SYNC_CHANNEL, device_leases.RELEASED_CHANNEL]
        if self.secrets is not None:
            channels.append(device_commands.COMMAND_CHANNEL)
        backoff = 0.2
        while True:
            try:
                async for channel, payload in listen(
                    self.db.url, *channels, listening=self._catch_up
                ):
                    backoff = 0.2
                    if channel == SYNC_CHANNEL:
                        self.wake([payload])
                    elif channel == device_leases.RELEASED_CHANNEL:
                        self._released(payload)
                    else:
                        command_id, _, hw_id = payload.partition(":")
                        self._run_soon(command_id, hw_id)
            except Exception as exc:
                log.warning("notifications lost: %s; reconnecting in %.1fs", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def until_synced(self, automat_id: str, version: int) -> bool:
        """Wait, at most the ack timeout, until the automat has acknowledged ``version``;
        the sync is pushed now if it is not on its way. The database is the judge: the
        ack may reach another gateway process (or have arrived before the wait began),
        so it is read again every :data:`SYNC_RECHECK_SECONDS` while waiting."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._sync_waiters.setdefault(automat_id, [])
        waiters.append((version, future))

        async def synced() -> bool | None:
            acked = await self.db.run(lambda s: devices.synced_version(s, automat_id))
            return True if acked >= version else None

        try:
            await self.push_syncs([automat_id])
            return bool(await watch(synced, future, self.ack_timeout, SYNC_RECHECK_SECONDS))
        finally:
            waiters.remove((version, future))
            if not waiters:
                self._sync_waiters.pop(automat_id, None)

    def acknowledged_version(self, automat_id: str) -> int:
        """The newest sync version the automat acknowledged to this gateway (-1: none yet)."""
        return self._acked.get(automat_id, -1)

    def _acknowledged(self, automat_id: str, version: int) -> None:
        self._acked[automat_id] = max(version, self._acked.get(automat_id, -1))
        for wanted, future in self._sync_waiters.get(automat_id, []):
            if wanted <= version and not future.done():
                future.set_result(None)

    async def push_syncs(self, automat_ids: list[str] | None = None) -> int:
        """Send each connected device behind on its pincodes what it is missing."""
        if self._connection is None:
            return 0
        now = self.clock.now()

        def not_foreign(hw_id: str) -> bool:
            # Read on the database thread: a stale answer only costs one sync built in vain.
            return self._lease_known(hw_id, now) is not False

        pending = await self.db.run(lambda s: devices.pending_syncs(s, automat_ids, not_foreign))
        loop_now = asyncio.get_running_loop().time()
        recent = {
            automat: version
            for automat, version, sent in self._syncs_in_flight.values()
            if loop_now - sent < self.ack_timeout
        }
        sent = 0
        for item in pending:
            if recent.get(item.automat_id, -1) >= item.sync.version:
                continue  # the same sync is on its way; give the device time to ack it
            if not await self.holds(item.hw_id):
                continue
            with contextlib.suppress(LinkError):
                await self._send_sync(item.hw_id, item.automat_id, item.sync)
                sent += 1
        return sent

    # --- incoming -----------------------------------------------------------------------

    def _decode(self, hw_id: str, payload: bytes) -> Message | ProtocolError:
        """The message, or why it is malformed (its schema, or another device than its
        topic). Checked before anything else, with no database work."""
        try:
            message = decode_from_device(payload)
        except ProtocolError as exc:
            return exc
        if message.hw_id != hw_id:
            return ProtocolError(
                "names another device than its topic", ref=message.id, pointer="/hwId"
            )
        return message

    async def _refuse_malformed(self, hw_id: str, error: ProtocolError) -> None:
        """Tell the device its message is malformed, so that it drops the message rather
        than resending it for ever; a message without a readable id is only counted."""
        self.stats.malformed += 1
        if error.ref is None:
            self.stats.unanswered += 1
            log.warning("dropped a malformed message from %s: %s", hw_id, error)
            return
        log.warning("refused malformed message %s from %s: %s", error.ref, hw_id, error)
        # No lease is taken for it (no database work): the gateway known to hold the
        # device answers, and any gateway when none is known; an extra refusal of the
        # same message does no harm, the device has dropped it at the first.
        if self._lease_known(hw_id, self.clock.now()) is False:
            return
        refusal = Rejected(
            reason=RejectReason.MALFORMED,
            ref=error.ref,
            pointer=error.pointer,
            detail=error.detail,
        )
        with contextlib.suppress(LinkError):
            await self._send(hw_id, "rejected", refusal)

    async def _handle(self, hw_id: str, message: Message) -> None:
        self.stats.by_type[message.type] = self.stats.by_type.get(message.type, 0) + 1
        token = message.token
        now = self.clock.now()
        try:
            if message.type == "hello":
                assert isinstance(message.data, Hello)
                welcomed = await self._hello(hw_id, token, message.data, now)
                # The hardware behind the automat may be new: what an earlier one
                # acknowledged says nothing about what this one holds.
                self._acked.pop(welcomed.automat_id, None)
                await self._send(
                    hw_id,
                    "welcome",
                    Welcome(
                        automat_id=welcomed.automat_id,
                        device_token=welcomed.token,
                        heartbeat_seconds=self.heartbeat_seconds,
                        server_time=now,
                    ),
                )
                await self._send_sync(hw_id, welcomed.automat_id, welcomed.sync)
            elif message.type == "heartbeat":
                await self.db.run(
                    lambda s: devices.touch(s, devices.authenticate(s, hw_id, token), now)
                )
            elif message.type == "goodbye":
                await self.db.run(
                    lambda s: devices.disconnected(s, devices.authenticate(s, hw_id, token))
                )
            elif message.type == "ack":
                assert isinstance(message.data, Ack)
                await self._on_ack(hw_id, token, message.data, now)
            elif message.type in DEVICE_EVENTS:
                await self._on_event(hw_id, token, message)
        except devices.DeviceRejected as exc:
            if not isinstance(exc, _BackedOff):
                log.warning("rejected %s from %s: %s", message.type, hw_id, exc)
            if exc.reason not in MESSAGE_REFUSALS and hw_id in self._held:
                # Nothing to hold for a device the server refuses (a guessed hwId, say).
                await self._give_up([hw_id])
            detail = None if exc.detail is None else bounded(exc.detail, MAX_DETAIL)
            refusal = Rejected(reason=exc.reason, ref=message.id, detail=detail)
            with contextlib.suppress(LinkError):
                await self._send(hw_id, "rejected", refusal)
            # Counted once dealt with (the lease given up, the device told), so that
            # whoever waits for the count sees the refusal's whole effect.
            self.stats.rejected += 1

    def _refused_in_memory(self, hw_id: str, message: Message) -> bool:
        """A hello with an installation pincode and no credential that ``_hello`` refuses
        before any database work: its hwId is backed off, or all devices' rate is spent."""
        data = message.data
        if not isinstance(data, Hello) or data.installation_pincode is None:
            return False
        if message.token is not None:
            return False
        now = self.clock.now()
        return self.hello_failures.blocked(hw_id, now) or self.hello_failure_rate.spent(now)

    async def _hello(
        self, hw_id: str, token: str | None, hello: Hello, now: datetime
    ) -> devices.Welcomed:
        """Authenticate or bind; a pincode counts against the hwId's and everybody's limits."""
        taken = False
        if hello.installation_pincode is not None:
            if self.hello_failures.blocked(hw_id, now) or not self.hello_failure_rate.take(now):
                self.stats.backed_off += 1
                metrics.rate_limited("device_hello")
                if token is None:
                    raise _BackedOff
                # A device with a credential still gets in with it: guesses on its
                # topic must not lock the real device out.
                hello = hello.model_copy(update={"installation_pincode": None})
            else:
                taken = True  # taken before the database, so concurrent hellos cannot overshoot
        try:
            return await self.db.run(
                lambda s: devices.hello(
                    s, hw_id=hw_id, token=token, data=hello, now=now, policy=self.bind_policy
                )
            )
        except devices.DeviceRejected:
            if hello.installation_pincode is not None:
                taken = False  # a failed guess: it keeps its unit of the shared rate
                await self._hello_failed(hw_id, now)
            raise
        finally:
            if taken:
                self.hello_failure_rate.give_back(now)

    async def _hello_failed(self, hw_id: str, now: datetime) -> None:
        failures = self.hello_failures.failed(hw_id, now)
        if self.hello_failures.just_blocked(failures):
            automat_id = await self.db.run(lambda s: devices.bind_failures_alarm(s, hw_id, now))
            log.warning(
                "%d wrong installation pincodes from %s (automat %s): backing off",
                failures,
                hw_id,
                automat_id or "none",
            )
        if self.hello_failure_rate.alarm_due(now):
            self.stats.hello_rate_alarms += 1
            log.error(
                "%d wrong installation pincodes from all devices within a minute: refusing "
                "pincodes beyond that rate; someone may be guessing installation pincodes",
                self.hello_failure_rate.limit,
            )

    async def _on_event(self, hw_id: str, token: str | None, message: Message) -> None:
        received = self.clock.now()

        def work(session: Session) -> tuple[str, bool]:
            automat_id = devices.authenticate(session, hw_id, token)
            applied = devices.apply_event(
                session, automat_id, message, received, clock_skew=self.clock_skew
            )
            return automat_id, applied

        try:
            automat_id, fresh = await self.db.run(work)
        except devices.EventRefused as refused:
            # The event's transaction left nothing behind; what the operator must see of
            # the refusal (an alarm) commits in one of its own. Then `rejected`, no `ack`.
            record = functools.partial(devices.record_refusal, refused=refused, now=received)
            await self.db.run(record)
            raise
        if fresh:
            self.stats.applied += 1
        else:
            self.stats.duplicates += 1
        # Acknowledged only now that the effect has committed: a device that misses
        # this ack resends, and the inbox makes the resend a no-op.
        with contextlib.suppress(LinkError):
            await self._send(hw_id, "ack", Ack(ref=message.id))
        for observer in self.observers:
            observer(automat_id, message)
        data = message.data
        if isinstance(data, PromptEnded) or (
            isinstance(data, CodeEntered) and data.source == "remote"
        ):
            session = self._sessions.get(automat_id)
            if session is not None and session.code == data.code:
                del self._sessions[automat_id]
        if fresh and isinstance(data, CodeEntered):
            self._start_programming(hw_id, automat_id, data, message.occurred_at)

    def _start_programming(
        self, hw_id: str, automat_id: str, data: CodeEntered, occurred_at: datetime
    ) -> None:
        # Only for codes the device holds (``program_first``): it named the pincode.
        if self.before_open is None or data.pincode_id is None or data.locker_index is None:
            return
        task = asyncio.create_task(
            self._open_after_programming(hw_id, automat_id, data, occurred_at)
        )
        self._programming.add(task)
        task.add_done_callback(self._programming.discard)

    async def _open_after_programming(
        self, hw_id: str, automat_id: str, data: CodeEntered, occurred_at: datetime
    ) -> None:
        assert self.before_open is not None
        assert data.locker_index is not None
        lock = self._programming_locks.setdefault(automat_id, asyncio.Lock())
        try:
            async with asyncio.timeout(self.programming_deadline), lock:
                verdict = await self.before_open(automat_id, data, occurred_at)
        except TimeoutError:
            log.warning(
                "programming for automat %s took over %.0fs; the locker stays shut",
                automat_id,
                self.programming_deadline,
            )
            return
        except Exception:
            self.stats.errors += 1
            log.exception("programming before opening a locker of %s failed", automat_id)
            return
        if not verdict:
            return
        with contextlib.suppress(LinkError):
            await self._send(
                hw_id,
                "open-locker",
                OpenLocker(
                    locker_index=data.locker_index, reason="pincode", pincode_id=data.pincode_id
                ),
            )

    async def _on_ack(self, hw_id: str, token: str | None, ack: Ack, now: datetime) -> None:
        """An ack counts as hearing from the device (any authenticated message does); one
        of a sync records the version, in the same transaction."""
        waiting = self._acks.get(ack.ref)
        in_flight = self._syncs_in_flight.get(ack.ref) if waiting is None else None

        def heard(session: Session) -> bool:
            automat_id = devices.touch(session, devices.authenticate(session, hw_id, token), now)
            synced = in_flight is not None and in_flight[0] == automat_id and ack.ok
            if synced and in_flight is not None:
                devices.record_synced(session, automat_id, in_flight[1])
            return synced

        synced = await self.db.run(heard)
        if waiting is not None:
            target, future = waiting
            if target == hw_id and not future.done():
                future.set_result(ack)
            return
        if in_flight is not None:
            self._syncs_in_flight.pop(ack.ref, None)
            outcome = "ok" if synced else "refused"
            elapsed = asyncio.get_running_loop().time() - in_flight[2]
            metrics.device_command_done("sync", outcome, elapsed)
            if synced:
                self._acknowledged(in_flight[0], in_flight[1])

    # --- outgoing -----------------------------------------------------------------------

    async def _send(
        self, hw_id: str, type_: str, data: Data, *, message_id: str | None = None
    ) -> str:
        connection = self._connection
        if connection is None:
            raise LinkError("device link is not connected")
        message_id = message_id or new_message_id()
        payload = encode(
            type_, data, hw_id=hw_id, occurred_at=self.clock.now(), message_id=message_id
        )
        await connection.publish(down_topic(self.prefix, hw_id), payload)
        self.stats.sent += 1
        return message_id

    async def _send_sync(self, hw_id: str, automat_id: str, sync: Sync) -> None:
        message_id = new_message_id()
        loop_now = asyncio.get_running_loop().time()
        self._syncs_in_flight[message_id] = (automat_id, sync.version, loop_now)
        await self._send(hw_id, "sync", sync, message_id=message_id)

    async def command(self, hw_id: str, type_: str, data: Data) -> Ack | None:
        """Send a command and wait for the device's ack; None when none came in time."""
        message_id = new_message_id()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ack] = loop.create_future()
        self._acks[message_id] = (hw_id, future)
        sent_at = loop.time()
        outcome = "link_error"
        try:
            await self._send(hw_id, type_, data, message_id=message_id)
            ack = await asyncio.wait_for(future, self.ack_timeout)
            outcome = "ok" if ack.ok else "refused"
            return ack
        except TimeoutError:
            outcome = "timeout"
            return None
        finally:
            self._acks.pop(message_id, None)
            metrics.device_command_done(type_, outcome, loop.time() - sent_at)

    def _expire_sessions(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        for automat_id, session in list(self._sessions.items()):
            if session.deadline <= loop_now:
                del self._sessions[automat_id]

    async def send_pincode(
        self, principal: Principal, automat_id: str, code: str, *, proximity_check: bool
    ) -> SendResult:
        """sendPincode (endpoints.md §4.8, gaps.md D6-D7) to an automat of this gateway's."""
        now = self.clock.now()
        target = await self.db.run(
            lambda s: devices.command_target(s, principal, automat_id, now, self.offline_after)
        )
        return await self.send_to(target, code, proximity_check=proximity_check)

    async def send_to(
        self, target: devices.CommandTarget, code: str, *, proximity_check: bool
    ) -> SendResult:
        """Send the code to the automat, once it holds every code (the caller checked scope)."""
        automat_id = target.automat_id
        if not target.online or target.hw_id is None or self._connection is None:
            return SendResult(False, SendFailure.AUTOMAT_OFFLINE)
        self._expire_sessions()
        if automat_id in self._sessions:
            return SendResult(False, SendFailure.AUTOMAT_BUSY)
        loop = asyncio.get_running_loop()
        # Reserved before the first await, so two concurrent calls cannot both pass.
        session = _PincodeSession(code, proximity_check, loop.time() + 2 * self.ack_timeout + 1)
        self._sessions[automat_id] = session
        # A code the automat does not hold yet (a contract created a moment ago) would be
        # refused at the keypad: the automat first gets, and acknowledges, every code.
        if target.synced_version < target.desired_version:
            try:
                synced = await self.until_synced(automat_id, target.desired_version)
            except BaseException:
                self._end_session(automat_id, session)
                raise
            if not synced:
                self._end_session(automat_id, session)
                return SendResult(False, SendFailure.TIMEOUT)
            if self._sessions.get(automat_id) is not session:
                # cancelSendPincode came while the sync was awaited: nothing is sent.
                return SendResult(False, SendFailure.AUTOMAT_BUSY)
        data: Data = (
            ProximityPrompt(code=code, timeout_seconds=self.proximity_seconds)
            if proximity_check
            else RemoteCode(code=code)
        )
        try:
            ack = await self.command(
                target.hw_id, "proximity-prompt" if proximity_check else "remote-code", data
            )
        except LinkError:
            self._end_session(automat_id, session)
            return SendResult(False, SendFailure.AUTOMAT_OFFLINE)
        if ack is None:
            self._end_session(automat_id, session)
            return SendResult(False, SendFailure.TIMEOUT)
        if not ack.ok:
            self._end_session(automat_id, session)
            return SendResult(False, SendFailure.AUTOMAT_BUSY)
        if proximity_check:
            session.deadline = loop.time() + self.proximity_seconds
        else:
            self._end_session(automat_id, session)
        return SendResult(True)

    def _end_session(self, automat_id: str, session: _PincodeSession) -> None:
        if self._sessions.get(automat_id) is session:
            del self._sessions[automat_id]

    async def cancel_send_pincode(self, principal: Principal, automat_id: str, code: str) -> None:
        """cancelSendPincode: ends a pending proximity prompt; a no-op when none is (D7)."""
        now = self.clock.now()
        target = await self.db.run(
            lambda s: devices.command_target(s, principal, automat_id, now, self.offline_after)
        )
        await self.cancel_on(target, code)

    async def cancel_on(self, target: devices.CommandTarget, code: str) -> None:
        """End the automat's prompt for ``code`` if it has one (the caller checked scope)."""
        self._expire_sessions()
        session = self._sessions.get(target.automat_id)
        if session is None or session.code != code or target.hw_id is None:
            return
        del self._sessions[target.automat_id]
        with contextlib.suppress(LinkError):
            await self._send(target.hw_id, "cancel-prompt", CancelPrompt(code=code))

    # --- commands routed from API processes ---------------------------------------------

    def _catch_up(self) -> None:
        if self.secrets is not None:
            self._track(asyncio.get_running_loop().create_task(self._run_waiting()))

    async def _run_waiting(self) -> None:
        """Run the commands nobody has claimed yet, for the devices this gateway holds."""
        if self._connection is None:
            return
        now = self.clock.now()
        for command_id, hw_id in await self.db.run(lambda s: device_commands.waiting(s, now)):
            self._run_soon(command_id, hw_id)

    def _run_soon(self, command_id: str, hw_id: str) -> None:
        self._track(asyncio.get_running_loop().create_task(self._run_command(command_id, hw_id)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def _run_command(self, command_id: str, hw_id: str) -> None:
        """Run a routed command if this gateway holds its device; the answer goes back
        through the database. Exactly one gateway claims it."""
        assert self.secrets is not None
        try:
            if not await self.holds(hw_id):
                return
            now = self.clock.now()
            command = await self.db.run(
                lambda s: device_commands.claim(s, command_id, self.gateway_id, now)
            )
            if command is None:
                return
            self.stats.routed += 1
            code = self.secrets.decrypt(command.sealed_code)
            target = await self.db.run(
                lambda s: devices.command_target_of(s, command.automat_id, now, self.offline_after)
            )
            if target.hw_id != command.hw_id:  # the automat's hardware changed meanwhile
                target = devices.CommandTarget(target.automat_id, None, False)
            if command.kind is CommandKind.CANCEL:
                await self.cancel_on(target, code)
                outcome = device_commands.CANCELLED
            else:
                result = await self.send_to(target, code, proximity_check=command.proximity)
                outcome = device_commands.SENT if result.success else str(result.reason)
            await self.db.run(lambda s: device_commands.answer(s, command_id, outcome))
        except Exception:
            self.stats.errors += 1
            log.exception("running the routed command %s failed", command_id)
