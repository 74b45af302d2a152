"""A key automat in software. It speaks only the device protocol, over any link.

What it models: a keypad (with lockouts after repeated wrong codes, each twice as
long as the one before until a right code is entered), lockers
with doors and key sensors, a local store of synced pincodes with validity
windows (so it keeps working offline), an outbox of events that survives
disconnection and is flushed in order with the original times, alarms, an
autopilot person who takes and returns keys when a locker opens, and what a
device does when the server refuses one of its messages (docs/device-protocol.md,
"Refusals").

Timers (heartbeats, resends, prompt windows, lockouts) run on the event loop's
monotonic time; what the device reports as ``occurredAt`` and checks pincode
validity against comes from its injectable ``clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, cast

from keyautomat.adapters.device_links import Connection, Link, LinkError
from keyautomat.adapters.device_protocol import (
    MESSAGE_REFUSALS,
    Ack,
    AlarmEvent,
    AlarmType,
    CancelPrompt,
    CodeEntered,
    CodeType,
    Data,
    Empty,
    Hello,
    KeyEvent,
    KeypadLocked,
    KeyProgrammed,
    LockerEvent,
    LockerInventory,
    LockerState,
    Message,
    OpenLocker,
    PincodeEntry,
    ProgramKey,
    PromptEnded,
    ProtocolError,
    ProximityPrompt,
    Rejected,
    RejectReason,
    RemoteCode,
    Sync,
    Welcome,
    decode_from_server,
    down_topic,
    encode,
    new_message_id,
    up_topic,
)
from keyautomat.domain.devices import code_type_for
from keyautomat.service_layer.clock import Clock, SystemClock

log = logging.getLogger(__name__)

# Rules of the protocol a simulator can be told to break, for testing the conformance
# kit (``keyautomat device-test``, docs/device-test.md) and nothing else: each names
# what the device does wrong.
FAULTS: dict[str, str] = {
    "open-program-first-at-once": "opens the locker of a programFirst code at once, "
    "without waiting for the server's open-locker",
    "send-queue-at-once": "sends every queued event without waiting for the ack of the one "
    "before (events can then be applied out of order)",
}


@dataclass(frozen=True, slots=True)
class SimKey:
    id: str
    name: str
    rfid: str | None = None


def blank_iloq_keys(count: int) -> list[SimKey]:
    """Blank iLOQ S5 keys as a key20 reports them: a UUID and the short id printed on the key."""
    keys = []
    for _ in range(count):
        serial = secrets.token_hex(4).upper()[:7]
        keys.append(SimKey(str(uuid.uuid4()), serial, rfid=serial))
    return keys


def mechanical_keys(count: int, prefix: str) -> list[SimKey]:
    """Mechanical keys on RFID tags, as a key30 reports them."""
    return [
        SimKey(f"{prefix}-{i + 1:03d}", f"Mechanical key {i + 1}", rfid=secrets.token_hex(4))
        for i in range(count)
    ]


@dataclass(slots=True)
class SimLocker:
    index: int
    door_open: bool = False
    key: SimKey | None = None
    # Why the door is open: the pincode that opened it, for the autopilot person.
    opened_by: StoredPincode | None = None


def takes_key(pincode: StoredPincode, locker: SimLocker) -> bool:
    """Whether the person who opened ``locker`` with ``pincode`` takes its key out (else they
    bring one back): a fetch always, a default code when the key is inside."""
    return pincode.purpose == "fetch" or (pincode.purpose == "default" and locker.key is not None)


@dataclass(slots=True)
class StoredPincode:
    id: str
    code: str
    locker_index: int
    valid_from: datetime
    valid_until: datetime | None
    purpose: str
    key_id: str | None
    spent: bool = False
    program_first: bool = False

    @classmethod
    def of(cls, entry: PincodeEntry) -> StoredPincode:
        return cls(
            entry.id,
            entry.code,
            entry.locker_index,
            entry.valid_from,
            entry.valid_until,
            entry.purpose,
            entry.key_id,
            program_first=entry.program_first,
        )

    def opens_at(self, now: datetime) -> bool:
        """Inside its window: from ``valid_from`` on, until (not at) ``valid_until``.

        The device keeps its own copy of this rule rather than importing the
        server's: the simulator stands in for firmware written apart from the
        server, so a wrong bound in one must show up against the other.
        """
        if now < self.valid_from:
            return False
        return self.valid_until is None or now < self.valid_until


@dataclass(slots=True)
class _Queued:
    id: str
    type: str
    data: Data
    occurred_at: datetime
    sent_at: float | None = None


@dataclass(slots=True)
class _Prompt:
    code: str
    deadline: float


@dataclass(slots=True)
class Person:
    """The autopilot: someone standing at the automat who does the obvious thing.

    ``seconds`` is how long each act takes (taking or putting back the key, then
    closing the door); 0 does both at once. Someone watching (the console's virtual
    automat) needs a moment to see the door open and the key go.
    """

    pocket: dict[str, SimKey] = field(default_factory=dict)
    seconds: float = 0.0

    def on_locker_opened(self, automat: SimulatedAutomat, locker: SimLocker) -> None:
        pincode = locker.opened_by
        if pincode is None:
            return  # a service opening: nobody touches anything
        if self.seconds <= 0:
            self._handle_key(automat, locker, pincode)
            automat.close_door(locker.index)
            return
        loop = asyncio.get_running_loop()

        def still_open() -> bool:  # nobody else closed it, or opened it again, meanwhile
            return locker.door_open and locker.opened_by is pincode

        def close() -> None:
            if still_open():
                automat.close_door(locker.index)

        def handle_key() -> None:
            if still_open():
                self._handle_key(automat, locker, pincode)
                loop.call_later(self.seconds, close)

        loop.call_later(self.seconds, handle_key)

    def _handle_key(
        self, automat: SimulatedAutomat, locker: SimLocker, pincode: StoredPincode
    ) -> None:
        wants_key = takes_key(pincode, locker)
        if wants_key and locker.key is not None:
            key = automat.take_key(locker.index)
            if key is not None:
                self.pocket[key.id] = key
        elif not wants_key and locker.key is None:
            key = self.pocket.pop(pincode.key_id, None) if pincode.key_id else None
            if key is None and self.pocket and pincode.key_id is None:
                key = self.pocket.pop(next(iter(self.pocket)))
            if key is None:  # a key we never held (a return of an unknown key)
                key = SimKey(pincode.key_id or str(uuid.uuid4()), pincode.key_id or "returned key")
            automat.insert_key(locker.index, key)


# What the display shows, two lines (docs/device-protocol.md §11): typed digits are
# masked, as a keypad in a public place would.
MASK = "\u2022"
MAX_TYPED = 32  # digits the keypad keeps (the protocol's longest code)


class SimulatedAutomat:
    # The keypad: wrong codes since the last right code or lockout, the lockout's end
    # (loop time), and the lockouts since the last right code, each twice as long as
    # the one before (docs/device-protocol.md, "Keypad lockouts").
    failures: int = 0
    locked_until: float = 0.0
    lockouts: int = 0
    last_lockout_seconds: float = 0.0

    def __init__(
        self,
        *,
        link: Link,
        hw_id: str,
        product: str = "key20",
        locker_count: int = 20,
        installation_pincode: str | None = None,
        token: str | None = None,
        prefix: str = "keyautomat/v1",
        clock: Clock | None = None,
        autopilot: bool = True,
        faults: frozenset[str] = frozenset(),
        max_failures: int = 5,
        lockout_seconds: float = 60.0,
        max_lockout_seconds: float = 3600.0,
        resend_seconds: float = 5.0,
        tick_seconds: float = 0.1,
        state_file: Path | None = None,
        firmware: str = "keyautomat-sim/1",
        hello_retry_seconds: float = 60.0,
        hello_answer_seconds: float = 10.0,
        person_seconds: float = 0.0,
        message_seconds: float = 4.0,
        client_id: str | None = None,
    ) -> None:
        self.link = link
        self.hw_id = hw_id
        # Unique on the broker: a second connection with the same id takes the first one's
        # place, so two simulators of one hwId under different prefixes need their own.
        self.client_id = client_id or f"sim-{hw_id}"
        self.product = product
        self.installation_pincode = installation_pincode
        self.token = token
        self.prefix = prefix
        self.clock = clock or SystemClock()
        self.person: Person | None = Person(seconds=person_seconds) if autopilot else None
        unknown = faults - FAULTS.keys()
        if unknown:
            raise ValueError(f"unknown faults: {', '.join(sorted(unknown))}")
        self.faults = faults  # protocol rules broken on purpose (FAULTS); test-only
        # Every locker opening, in order: what someone watching the doors would see.
        self.openings: list[int] = []
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.max_lockout_seconds = max_lockout_seconds
        self.resend_seconds = resend_seconds
        self.tick_seconds = tick_seconds
        self.state_file = state_file
        self.firmware = firmware
        # After ``locked-out``, how long the device waits before its next hello.
        self.hello_retry_seconds = hello_retry_seconds
        # How long it waits for the answer to a hello before saying it again.
        self.hello_answer_seconds = hello_answer_seconds
        self.lockers = [SimLocker(i) for i in range(locker_count)]
        self.pincodes: dict[str, StoredPincode] = {}
        self.sync_version: int | None = None
        self.automat_id: str | None = None
        self.heartbeat_seconds = 30.0
        self.active_alarms: set[str] = set()
        self.prompt: _Prompt | None = None
        # program_first codes entered, waiting for the server's open-locker: id -> deadline.
        self.awaiting_open: dict[str, float] = {}
        self.hold_seconds = 15.0
        self.mute = False  # when set, commands get no ack (to provoke TIMEOUT)
        self.outbox: OrderedDict[str, _Queued] = OrderedDict()
        self.last_rejection: RejectReason | None = None
        self.refusals: list[Rejected] = []  # the latest refusals of its messages
        self.welcomed = asyncio.Event()
        self._buffer = ""
        # What the display says for a moment after something happened, and until when
        # (loop time): a wrong code, a locker opened, a key being programmed.
        self.message_seconds = message_seconds
        self._message: tuple[tuple[str, str], float] | None = None
        # The ids of messages it sent lately, with their types: a refusal is acted on
        # only when it names one of them.
        self._sent_ids: OrderedDict[str, str] = OrderedDict()
        # The latest commands with their answers: one delivered twice is answered again,
        # and not carried out again.
        self._answered: OrderedDict[str, Ack] = OrderedDict()
        # When (loop time) to say hello again while not welcomed: after a refusal.
        self._hello_due: float | None = None
        self._connection_wanted = asyncio.Event()
        self._connection_wanted.set()
        self._disconnect = asyncio.Event()
        self._publish: Callable[[bytes], Awaitable[None]] | None = None
        self._last_heartbeat = 0.0
        self._stopped = False
        self._load_state()

    # --- state file ---------------------------------------------------------------------

    def _load_state(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        if state.get("hwId") == self.hw_id:
            self.token = self.token or state.get("token")
            self.automat_id = state.get("automatId")

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        state = {"hwId": self.hw_id, "token": self.token, "automatId": self.automat_id}
        self.state_file.write_text(json.dumps(state) + "\n")

    # --- stocking -----------------------------------------------------------------------

    def stock(self, keys: list[SimKey], *, start: int = 0) -> None:
        """Put keys into lockers ``start, start+1, ...`` (before or after connecting)."""
        for offset, key in enumerate(keys):
            locker = self.lockers[start + offset]
            locker.key = key
        if self.welcomed.is_set():
            self._emit("locker-inventory", self._inventory())

    def _inventory(self) -> LockerInventory:
        return LockerInventory(
            lockers=[
                LockerState(
                    locker_index=locker.index,
                    door_open=locker.door_open,
                    key_inside=locker.key is not None,
                    key_id=locker.key.id if locker.key else None,
                    key_name=locker.key.name if locker.key else None,
                    rfid=locker.key.rfid if locker.key else None,
                )
                for locker in self.lockers
            ]
        )

    # --- connection ---------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._publish is not None

    async def run(self) -> None:
        """Stay connected until ``stop()``; reconnect with back-off when the link drops."""
        backoff = 0.2
        while not self._stopped:
            await self._connection_wanted.wait()
            if self._stopped:
                break
            self._disconnect = asyncio.Event()
            try:
                async with self.link.connect(self.client_id) as connection:
                    await connection.subscribe(down_topic(self.prefix, self.hw_id))
                    self._publish = _Publisher(connection, up_topic(self.prefix, self.hw_id))
                    backoff = 0.2
                    for queued in self.outbox.values():
                        queued.sent_at = None  # resend everything unacknowledged, in order
                    await self._hello()
                    tasks: list[asyncio.Task[object]] = [
                        asyncio.create_task(self._read(connection.messages())),
                        asyncio.create_task(self._tick_loop()),
                        asyncio.create_task(self._disconnect.wait()),
                    ]
                    try:
                        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for task in tasks:
                            task.cancel()
                        for task in tasks:
                            with contextlib.suppress(asyncio.CancelledError, LinkError):
                                await task
                    for task in done:
                        error = None if task.cancelled() else task.exception()
                        if error is not None:
                            raise error
            except LinkError as exc:
                log.info("simulator %s lost its link: %s", self.hw_id, exc)
            finally:
                self._publish = None
                self.welcomed.clear()
            if not self._stopped and self._connection_wanted.is_set():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def go_offline(self) -> None:
        """Cut the link, as a network failure would (no goodbye)."""
        self._connection_wanted.clear()
        self._disconnect.set()
        while self._publish is not None:
            await asyncio.sleep(0.01)

    def go_online(self) -> None:
        self._connection_wanted.set()

    async def stop(self) -> None:
        """Leave politely: say goodbye, then disconnect."""
        if self._publish is not None and self.welcomed.is_set():
            with contextlib.suppress(LinkError):
                await self._send("goodbye", Empty())
        self._stopped = True
        self._connection_wanted.set()
        self._disconnect.set()

    async def _send(
        self,
        type_: str,
        data: Data,
        *,
        message_id: str | None = None,
        at: datetime | None = None,
    ) -> None:
        publish = self._publish
        if publish is None:
            raise LinkError("offline")
        message_id = message_id or new_message_id()
        payload = encode(
            type_,
            data,
            hw_id=self.hw_id,
            occurred_at=at or self.clock.now(),
            token=self.token,
            message_id=message_id,
        )
        if message_id not in self._sent_ids:
            self._sent_ids[message_id] = type_
            while len(self._sent_ids) > 1000:
                self._sent_ids.popitem(last=False)
        await publish(payload)

    async def _hello(self) -> None:
        # No answer (neither welcome nor rejected) in time: say hello again.
        self._hello_due = asyncio.get_running_loop().time() + self.hello_answer_seconds
        if self.token is None and self.installation_pincode is None:
            self._hello_due = None
            return  # unbound and no code entered: nothing to say until an installer types one
        hello = Hello(
            installation_pincode=self.installation_pincode if self.token is None else None,
            product=cast("Literal['key20', 'key30']", self.product),
            locker_count=len(self.lockers),
            firmware=self.firmware,
            sync_version=self.sync_version,
        )
        if self.token is not None and self.installation_pincode is not None:
            # A token the server may have revoked (replace): offer the pincode as well.
            hello.installation_pincode = self.installation_pincode
        await self._send("hello", hello)

    async def _read(self, messages: AsyncIterator[tuple[str, bytes]]) -> None:
        async for _topic, payload in messages:
            try:
                message = decode_from_server(payload)
            except ProtocolError as exc:
                log.warning("simulator %s dropped a malformed message: %s", self.hw_id, exc)
                continue
            if message.hw_id != self.hw_id:
                continue
            await self._on_message(message)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if (
                not self.welcomed.is_set()
                and self._hello_due is not None
                and self._hello_due <= now
            ):
                await self._hello()
            if self.welcomed.is_set() and now - self._last_heartbeat >= self.heartbeat_seconds:
                self._last_heartbeat = now
                await self._send("heartbeat", Empty())
            if self.prompt is not None and self.prompt.deadline <= now:
                code = self.prompt.code
                self.prompt = None
                self._emit("prompt-ended", PromptEnded(code=code, outcome="expired"))
            await self._flush()
            await asyncio.sleep(self.tick_seconds)

    async def _flush(self) -> None:
        """Send the oldest unacknowledged event, or send it again once it is overdue.

        One event is in flight at a time: the next one goes only once the server has
        acknowledged (or refused for good) the one before, so the server applies them
        in order even when it loses one (docs/device-protocol.md §4)."""
        if not self.welcomed.is_set() or self._publish is None or not self.outbox:
            return
        now = asyncio.get_running_loop().time()
        in_flight = 0 if "send-queue-at-once" in self.faults else 1
        for queued in list(self.outbox.values())[: in_flight or None]:
            if queued.sent_at is not None and now - queued.sent_at < self.resend_seconds:
                continue
            queued.sent_at = now
            await self._send(queued.type, queued.data, message_id=queued.id, at=queued.occurred_at)

    def _emit(self, type_: str, data: Data) -> str:
        """Queue an event with the time it happened; it is sent when the link allows."""
        message_id = new_message_id()
        self.outbox[message_id] = _Queued(message_id, type_, data, self.clock.now())
        self._flush_soon()
        return message_id

    def _flush_soon(self) -> None:
        if self._publish is not None and self.welcomed.is_set():
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._flush_quietly())

    def queue_event(self, type_: str, data: Data) -> str:
        """Queue an event as the firmware would, whatever it holds (``model_construct``
        builds one the protocol refuses, as a firmware bug would); returns its id."""
        return self._emit(type_, data)

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(LinkError):
            await self._flush()

    # --- messages from the server ------------------------------------------------------

    async def _ack(self, ref: str, ok: bool = True, reason: str | None = None) -> None:
        answer = Ack(ref=ref, ok=ok, reason=reason)
        self._answered[ref] = answer
        while len(self._answered) > 256:
            self._answered.popitem(last=False)
        with contextlib.suppress(LinkError):
            await self._send("ack", answer)

    async def _on_message(self, message: Message) -> None:
        data = message.data
        if isinstance(data, Welcome):
            self.automat_id = data.automat_id
            if data.device_token is not None:
                self.token = data.device_token
                self.installation_pincode = None
            self.heartbeat_seconds = data.heartbeat_seconds
            self.last_rejection = None
            self._hello_due = None
            self._last_heartbeat = asyncio.get_running_loop().time()
            self._save_state()
            self.welcomed.set()
            self._emit("locker-inventory", self._inventory())
            await self._flush()
        elif isinstance(data, Rejected):
            refused_type = self._sent_ids.get(data.ref)
            if refused_type is None:
                return  # a refusal of a message we never sent: someone else on our topic
            self._refused(data, refused_type)
        elif isinstance(data, Ack):
            if self.outbox.pop(data.ref, None) is not None:
                await self._flush_quietly()
        elif not self.welcomed.is_set():
            return  # between a hello and its welcome: the server sends it all again after
        elif isinstance(data, Sync):
            if self._apply_sync(data):
                await self._ack(message.id)
            else:  # it misses changes it never got: a hello with its version gets them all
                self.welcomed.clear()
                self._hello_due = asyncio.get_running_loop().time()
        elif message.id in self._answered:
            with contextlib.suppress(LinkError):
                await self._send("ack", self._answered[message.id])
        elif not self.mute:
            await self._on_command(message)

    async def _on_command(self, message: Message) -> None:
        data = message.data
        if isinstance(data, RemoteCode):
            if self.prompt is not None:
                await self._ack(message.id, ok=False, reason="busy")
                return
            await self._ack(message.id)
            self.evaluate(data.code, source="remote")
        elif isinstance(data, ProximityPrompt):
            if self.prompt is not None:
                await self._ack(message.id, ok=False, reason="busy")
                return
            deadline = asyncio.get_running_loop().time() + data.timeout_seconds
            self.prompt = _Prompt(data.code, deadline)
            await self._ack(message.id)
        elif isinstance(data, CancelPrompt):
            if self.prompt is not None and self.prompt.code == data.code:
                self.prompt = None
                self._emit("prompt-ended", PromptEnded(code=data.code, outcome="cancelled"))
            await self._ack(message.id)
        elif isinstance(data, OpenLocker):
            if data.pincode_id is None:
                if data.locker_index >= len(self.lockers):
                    await self._ack(message.id, ok=False, reason="unknown-locker")
                    return
                await self._ack(message.id)
                self.open_locker(data.locker_index, None)
                return
            waiting_until = self.awaiting_open.pop(data.pincode_id, None)
            pincode = self.pincodes.get(data.pincode_id)
            loop_now = asyncio.get_running_loop().time()
            if waiting_until is None or waiting_until < loop_now or pincode is None:
                # Too late or never asked for: the person has left; keep the door shut.
                await self._ack(message.id, ok=False, reason="not-held")
                return
            await self._ack(message.id)
            self.open_locker(pincode.locker_index, pincode)
        elif isinstance(data, ProgramKey):
            if self.product != "key20" or data.locker_index >= len(self.lockers):
                reason = "unsupported" if self.product != "key20" else "unknown-locker"
                await self._ack(message.id, ok=False, reason=reason)
                return
            await self._ack(message.id)
            locker = self.lockers[data.locker_index]
            self._emit(
                "key-programmed",
                KeyProgrammed(
                    ref=message.id,
                    locker_index=data.locker_index,
                    key_id=locker.key.id if locker.key else data.key_id,
                    ok=locker.key is not None,
                    reason=None if locker.key is not None else "no-key",
                ),
            )

    def _refused(self, refusal: Rejected, refused_type: str) -> None:
        """What the device does about a refusal of one of its messages."""
        log.warning(
            "simulator %s: %s %s refused: %s (%s %s)",
            self.hw_id,
            refused_type,
            refusal.ref,
            refusal.reason,
            refusal.pointer or "",
            refusal.detail or "",
        )
        reason = refusal.reason
        now = asyncio.get_running_loop().time()
        if reason in MESSAGE_REFUSALS:
            # The server will never take this message: resent, it would loop for ever.
            if self.outbox.pop(refusal.ref, None) is not None:
                self._flush_soon()
        elif reason in {RejectReason.REPLACED, RejectReason.DEACTIVATED} or (
            reason is RejectReason.UNAUTHENTICATED and refused_type == "hello"
        ):
            self.forget_automat()
        elif reason is RejectReason.UNAUTHENTICATED:
            # The credential did not pass with this message: say hello again. Refusals
            # of other messages sent before the hello arrive before its answer, while
            # not welcomed, and ask for nothing more.
            if self.welcomed.is_set():
                self.welcomed.clear()
                self._hello_due = now
        elif reason is RejectReason.WRONG_INSTALLATION_CODE:
            self.installation_pincode = None  # shown on the display; the installer retypes it
        elif reason is RejectReason.LOCKED_OUT:
            self._hello_due = now + self.hello_retry_seconds
        # Recorded last: whoever watches for the refusal then sees what it did.
        self.refusals = [*self.refusals[-99:], refusal]
        self.last_rejection = refusal.reason

    def forget_automat(self) -> None:
        """The automat is no longer this hardware's (replaced, uninstalled, or its token is
        dead): wipe the codes and the credential, drop the queue of events meant for it,
        and wait for an installation code."""
        self.welcomed.clear()
        self.token = None
        self.automat_id = None
        self.pincodes = {}
        self.sync_version = None
        self.awaiting_open.clear()
        self.prompt = None
        self.outbox.clear()
        self._hello_due = None
        self._save_state()

    def enter_installation_code(self, code: str) -> None:
        """The installer types an installation code: the device binds with it (at once when
        it is online, else when it connects)."""
        self.installation_pincode = code
        if self._publish is not None and not self.welcomed.is_set():
            self._hello_due = asyncio.get_running_loop().time()

    def _apply_sync(self, sync: Sync) -> bool:
        """Apply a sync (docs/device-protocol.md §6); False when it cannot be applied: an
        incremental sync that starts from a version newer than the store's."""
        held = self.sync_version or 0
        if not sync.full:
            if sync.version <= held:
                return True  # already applied: a repeat, or one overtaken by a newer one
            if sync.since is not None and sync.since > held:
                return False
        # A spent code stays spent when a sync lists it again (the server may not have
        # applied the event that spent it yet): the mark belongs to the id.
        spent = {pincode_id for pincode_id, stored in self.pincodes.items() if stored.spent}
        if sync.full:
            self.pincodes = {}
        for entry in sync.pincodes:
            self.pincodes[entry.id] = StoredPincode.of(entry)
            self.pincodes[entry.id].spent = entry.id in spent
        for pincode_id in sync.removed:
            self.pincodes.pop(pincode_id, None)
        self.sync_version = sync.version
        return True

    # --- the keypad and the lockers -----------------------------------------------------

    @property
    def locked_out(self) -> bool:
        return asyncio.get_running_loop().time() < self.locked_until

    def press(self, keys: str) -> None:
        """Press keypad keys: digits, ``*`` clears, ``#`` submits (or confirms a prompt)."""
        for key in keys:
            if key == "*":
                self._buffer = ""
            elif key == "#":
                typed, self._buffer = self._buffer, ""
                if not typed and self.prompt is not None:
                    prompt, self.prompt = self.prompt, None
                    self._emit("prompt-ended", PromptEnded(code=prompt.code, outcome="confirmed"))
                    self.evaluate(prompt.code, source="remote")
                elif typed:
                    self.evaluate(typed, source="keypad")
            elif key.isdigit() and len(self._buffer) < MAX_TYPED:
                self._buffer += key

    def enter_code(self, code: str) -> bool:
        """Type ``code`` and ``#`` on the keypad; True when a locker opened."""
        self._buffer = ""
        return self.evaluate(code, source="keypad")

    def _match(self, code: str) -> StoredPincode | None:
        now = self.clock.now()
        for pincode in self.pincodes.values():
            if pincode.code == code and not pincode.spent and pincode.opens_at(now):
                return pincode
        return None

    def evaluate(self, code: str, *, source: str) -> bool:
        """What the automat does with a code, typed or sent: open its locker, or count a miss."""
        if source == "keypad" and self.locked_out:
            return False
        pincode = self._match(code)
        if pincode is None:
            if source == "keypad":
                self._say("Wrong code", "Try again")
                self.failures += 1
                if self.failures >= self.max_failures:
                    self._lock_keypad()
            return False
        self.failures = 0
        self.lockouts = 0
        hold = (
            pincode.program_first
            and self.lockers[pincode.locker_index].key is not None
            and "open-program-first-at-once" not in self.faults
        )
        self._emit(
            "code-entered",
            CodeEntered(
                code=code,
                code_type=cast("CodeType", code_type_for(pincode.purpose)),
                locker_index=pincode.locker_index,
                key_id=key.id if (key := self.lockers[pincode.locker_index].key) else None,
                pincode_id=pincode.id,
                source="remote" if source == "remote" else "keypad",
            ),
        )
        if hold:
            # The key must be programmed first: the server answers with open-locker. No
            # answer can come while offline (or before a welcome): the door stays shut.
            if self.welcomed.is_set():
                loop_now = asyncio.get_running_loop().time()
                self.awaiting_open[pincode.id] = loop_now + self.hold_seconds
                self._say("Please wait", "Programming the key")
            else:
                self._say("Not available now", "Try again later")
            return True
        self.open_locker(pincode.locker_index, pincode)
        return True

    def _lock_keypad(self) -> None:
        seconds = min(self.max_lockout_seconds, self.lockout_seconds * 2 ** min(self.lockouts, 30))
        self.lockouts += 1
        self.last_lockout_seconds = seconds
        self.locked_until = asyncio.get_running_loop().time() + seconds
        until = self.clock.now() + timedelta(seconds=seconds)
        self._emit("keypad-locked", KeypadLocked(failures=self.failures, until=until))
        self.failures = 0

    def open_locker(self, index: int, pincode: StoredPincode | None) -> None:
        locker = self.lockers[index]
        if pincode is not None:
            taking = takes_key(pincode, locker)
            self._say(f"Locker {index} open", "Take the key" if taking else "Put the key back")
        locker.door_open = True
        locker.opened_by = pincode
        self.openings.append(index)
        self._emit("locker-opened", LockerEvent(locker_index=index))
        if self.person is not None:
            self.person.on_locker_opened(self, locker)

    def take_key(self, index: int) -> SimKey | None:
        locker = self.lockers[index]
        key, locker.key = locker.key, None
        if key is None:
            return None
        self._emit(
            "key-removed",
            KeyEvent(locker_index=index, key_id=key.id, key_name=key.name, rfid=key.rfid),
        )
        if locker.opened_by is not None and locker.opened_by.purpose == "fetch":
            locker.opened_by.spent = True
        return key

    def insert_key(self, index: int, key: SimKey) -> None:
        locker = self.lockers[index]
        locker.key = key
        self._emit(
            "key-inserted",
            KeyEvent(locker_index=index, key_id=key.id, key_name=key.name, rfid=key.rfid),
        )
        if locker.opened_by is not None and locker.opened_by.purpose == "return":
            locker.opened_by.spent = True

    def close_door(self, index: int) -> None:
        locker = self.lockers[index]
        locker.door_open = False
        locker.opened_by = None
        self._emit("locker-closed", LockerEvent(locker_index=index))

    # --- the display ---------------------------------------------------------------------

    def _say(self, first: str, second: str = "") -> None:
        self._message = ((first, second), _loop_time() + self.message_seconds)

    def display(self) -> tuple[str, str]:
        """The two lines the display shows now."""
        now = _loop_time()
        if self.token is None and self.automat_id is None:
            return ("Not installed", "Installing..." if self.installation_pincode else "")
        if now < self.locked_until:
            return ("Keypad locked", f"Try again in {math.ceil(self.locked_until - now)} s")
        if self._buffer:
            return ("Code " + MASK * len(self._buffer), "# to enter, * to clear")
        if self.prompt is not None:
            return ("Press # to confirm", "")
        if self._message is not None and now < self._message[1]:
            return self._message[0]
        opened = [locker.index for locker in self.lockers if locker.door_open]
        if opened:
            return (f"Locker {opened[0]} open", "Close the door when done")
        return ("Enter your code", "then press #")

    # --- alarms -------------------------------------------------------------------------

    def raise_alarm(self, alarm_type: str) -> None:
        self.active_alarms.add(alarm_type)
        self._emit("alarm-raised", AlarmEvent(alarm_type=cast("AlarmType", alarm_type)))

    def clear_alarm(self, alarm_type: str) -> None:
        self.active_alarms.discard(alarm_type)
        self._emit("alarm-cleared", AlarmEvent(alarm_type=cast("AlarmType", alarm_type)))

    async def wait_bound(self, timeout: float) -> None:
        await asyncio.wait_for(self.welcomed.wait(), timeout)

    async def wait_flushed(self, timeout: float) -> None:
        """Until every queued event is acknowledged by the server."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.outbox:
            if loop.time() > deadline:
                raise TimeoutError(f"{len(self.outbox)} events still unacknowledged")
            await asyncio.sleep(0.01)


def _loop_time() -> float:
    """The running loop's clock (the timers' clock); the monotonic clock outside a loop."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class _Publisher:
    def __init__(self, connection: Connection, topic: str) -> None:
        self.connection = connection
        self.topic = topic

    async def __call__(self, payload: bytes) -> None:
        await self.connection.publish(self.topic, payload)
