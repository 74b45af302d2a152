"""sendPincode / cancelSendPincode from any API process (docs/deployment.md).

The API process checks the caller's scope and the automat's state, then runs the
command itself when its own gateway holds the device, and otherwise hands it to
the gateway that does through the database (service_layer/device_commands.py)
and returns that gateway's answer. The proximity prompt a send leaves pending
lives in the holding gateway, so a cancel finds it whichever process it reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

from keyautomat import admission
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database, listen, watch
from keyautomat.entrypoints.device_gateway import (
    SYNC_RECHECK_SECONDS,
    DeviceGateway,
    SendFailure,
    SendResult,
)
from keyautomat.service_layer import device_commands, devices
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.device_commands import Command, CommandKind
from keyautomat.service_layer.principal import Principal

log = logging.getLogger(__name__)

# How long the gateway holding a device has to take up a routed command: it hears of
# it by NOTIFY within milliseconds, so this only matters while none holds the device.
CLAIM_SECONDS = 3.0


class CommandRouter:
    def __init__(
        self, *, db: Database, gateway: DeviceGateway, secrets: SecretBox, clock: Clock
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.secrets = secrets
        self.clock = clock
        self._answers: dict[str, asyncio.Future[None]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def send_pincode(
        self, principal: Principal, automat_id: str, code: str, *, proximity_check: bool
    ) -> SendResult:
        target = await self._target(principal, automat_id)
        if not target.online or target.hw_id is None:
            return SendResult(False, SendFailure.AUTOMAT_OFFLINE)
        # The device's ack may take seconds: meanwhile this request's admission slot serves
        # another (keyautomat/admission.py).
        async with admission.outside():
            if await self._held_here(target.hw_id):
                return await self.gateway.send_to(target, code, proximity_check=proximity_check)
            # The gateway may wait for a sync's ack and then for the command's.
            outcome = await self._route(
                target, CommandKind.SEND, code, proximity_check, 2 * self.gateway.ack_timeout + 1
            )
        if outcome == device_commands.SENT:
            return SendResult(True)
        if outcome is not None and outcome in SendFailure.__members__:
            return SendResult(False, SendFailure(outcome))
        return SendResult(False, SendFailure.TIMEOUT)

    async def cancel_send_pincode(self, principal: Principal, automat_id: str, code: str) -> None:
        target = await self._target(principal, automat_id)
        if target.hw_id is None:
            return
        if await self._held_here(target.hw_id):
            await self.gateway.cancel_on(target, code)
            return
        # Nothing to report either way (gaps.md D7): waiting only keeps the order of a
        # cancel and a send that follows it.
        await self._route(target, CommandKind.CANCEL, code, False, 1.0)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(RuntimeError):  # its event loop is closed: nothing runs
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def _target(self, principal: Principal, automat_id: str) -> devices.CommandTarget:
        now = self.clock.now()
        offline_after = self.gateway.offline_after
        return await self.db.run(
            lambda s: devices.command_target(s, principal, automat_id, now, offline_after)
        )

    async def _held_here(self, hw_id: str) -> bool:
        return self.gateway.running and await self.gateway.holds(hw_id)

    async def _route(
        self,
        target: devices.CommandTarget,
        kind: CommandKind,
        code: str,
        proximity: bool,
        run_seconds: float,
    ) -> str | None:
        """Hand the command to the gateway holding the device; its answer, or None when
        none came in time. SQLite has no other process to hand it to."""
        assert target.hw_id is not None
        if self.db.is_sqlite:
            return SendFailure.AUTOMAT_OFFLINE.value
        await self._start_listening()
        command = Command(
            uuid.uuid4().hex,
            target.automat_id,
            target.hw_id,
            kind,
            self.secrets.encrypt(code),
            proximity,
        )
        expires_at = self.clock.now() + timedelta(seconds=CLAIM_SECONDS)
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._answers[command.id] = answered

        async def answer() -> str | None:
            now = self.clock.now()
            return await self.db.run(lambda s: device_commands.answer_of(s, command.id, now))

        issued = asyncio.ensure_future(
            self.db.run(lambda s: device_commands.issue(s, command, expires_at))
        )
        try:
            await asyncio.shield(issued)
            outcome = await watch(
                answer, answered, CLAIM_SECONDS + run_seconds, SYNC_RECHECK_SECONDS
            )
            return None if outcome == device_commands.UNANSWERED else outcome
        finally:
            del self._answers[command.id]
            with contextlib.suppress(Exception):
                # Even when the caller went away: the row must not outlive the wait.
                await issued
                await self.db.run(lambda s: device_commands.forget(s, command.id))

    async def _start_listening(self) -> None:
        """Hear answers by NOTIFY; until the LISTEN holds, the answer is polled for."""
        listener = self._listener
        if (
            listener is None
            or listener.done()
            or listener.get_loop() is not asyncio.get_running_loop()
        ):
            self._listening = asyncio.Event()  # an event serves the one loop it first waited in
            self._listener = asyncio.create_task(self._listen_for_answers())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 0.5)

    async def _listen_for_answers(self) -> None:
        backoff = 0.2
        while True:
            try:
                async for _channel, command_id in listen(
                    self.db.url, device_commands.ANSWER_CHANNEL, listening=self._listening.set
                ):
                    backoff = 0.2
                    future = self._answers.get(command_id)
                    if future is not None and not future.done():
                        future.set_result(None)
            except Exception as exc:
                log.warning("answer notifications lost: %s; reconnecting in %.1fs", exc, backoff)
            self._listening.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
