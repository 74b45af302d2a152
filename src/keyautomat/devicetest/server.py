"""The server side the kit plays: a real keyautomat gateway on a throwaway database.

Everything a production server does with a device happens here for real (binding,
tokens, syncs pushed after each commit, events applied once, commands), on a SQLite
database in a temporary folder that is gone when the kit ends. The kit drives it
through the service layer, as the contracts and the API would, and answers the
gateway's "may this locker open?" question for program-first codes itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.device_links import Connection, Credentials, Link
from keyautomat.adapters.device_protocol import Ack, CodeEntered, Data, hw_id_of_up_topic
from keyautomat.adapters.orm_devices import device_inbox, device_links
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.config import Settings
from keyautomat.domain.devices import PincodePurpose
from keyautomat.domain.model import OrgUnitType, Role
from keyautomat.entrypoints.device_gateway import SendResult
from keyautomat.service_layer import accounts, automats, devices
from keyautomat.service_layer.automats import Location
from keyautomat.service_layer.principal import Principal


class DeviceUnderTest:
    """The one device the kit's gateway answers: the first hardware whose ``hello``
    presents the kit's installation code, and nothing else on the prefix.

    A conformance run must never touch other devices: the kit's server knows none of
    them, and would refuse whatever they sent (a device told its token is dead wipes
    its codes). So the gateway hears the broker through :class:`ScopedLink`, which
    passes it only this device's messages."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.installation_code: str | None = None
        self.hw_id: str | None = None

    def admits(self, topic: str, payload: bytes) -> bool:
        hw_id = hw_id_of_up_topic(self.prefix, topic)
        if hw_id is None:
            return False
        if self.hw_id is not None:
            return hw_id == self.hw_id
        if self.installation_code is None or not _presents(payload, self.installation_code):
            return False
        self.hw_id = hw_id
        return True


def _presents(payload: bytes, code: str) -> bool:
    """Whether ``payload`` is a hello presenting the installation code ``code``."""
    try:
        message = json.loads(payload)
    except ValueError:
        return False
    if not isinstance(message, dict) or message.get("type") != "hello":
        return False
    data = message.get("data")
    return isinstance(data, dict) and data.get("installationPincode") == code


class ScopedLink:
    """A link whose connections deliver only the messages ``admits`` lets through."""

    def __init__(self, inner: Link, admits: Callable[[str, bytes], bool]) -> None:
        self.inner = inner
        self.admits = admits

    @asynccontextmanager
    async def connect(
        self,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        credentials: Credentials | None = None,
    ) -> AsyncIterator[Connection]:
        async with self.inner.connect(client_id, will=will, credentials=credentials) as connection:
            yield _ScopedConnection(connection, self.admits)


class _ScopedConnection:
    def __init__(self, inner: Connection, admits: Callable[[str, bytes], bool]) -> None:
        self.inner = inner
        self.admits = admits

    async def subscribe(self, pattern: str) -> None:
        await self.inner.subscribe(pattern)

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.inner.publish(topic, payload)

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        async for topic, payload in self.inner.messages():
            if self.admits(topic, payload):
                yield topic, payload


@dataclass(frozen=True, slots=True)
class KitCode:
    """A pincode the kit made the automat honour."""

    id: str
    code: str
    locker_index: int
    purpose: str
    version: int  # the sync version that carries it
    program_first: bool = False


@dataclass(frozen=True, slots=True)
class Timings:
    heartbeat_seconds: float
    ack_timeout_seconds: float
    proximity_seconds: float


@dataclass(frozen=True, slots=True)
class InboxRow:
    message_id: str
    type: str
    occurred_at: datetime
    received_at: datetime


@dataclass(slots=True)
class Programming:
    """What the kit answers when a program-first code is entered: after ``seconds`` of
    "programming the key", open (True) or keep the locker shut (False)."""

    seconds: float
    verdict: bool
    asked_at: float | None = None  # loop time the gateway asked
    answered_at: float | None = None


def _desired_version(session: Session, automat_id: str) -> int:
    """The newest sync version of what the automat must honour."""
    version = session.scalar(
        select(device_links.c.desired_version).where(device_links.c.automat_id == automat_id)
    )
    return int(version or 0)


def kit_settings(
    *, broker: str | None, prefix: str, database_url: str, workdir: Path, timings: Timings
) -> Settings:
    """Settings of the kit's own server: its database, its prefix, its timings, a fresh
    secret key; nothing from the environment that could point at production."""
    heartbeat = timings.heartbeat_seconds
    return Settings(
        database_url=database_url,
        secret_key=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        mqtt_url=broker,
        mqtt_topic_prefix=prefix,
        mqtt_client_id=f"keyautomat-device-test-{uuid.uuid4().hex[:12]}",
        device_heartbeat_seconds=heartbeat,
        device_offline_after_seconds=3 * heartbeat + 2,
        device_ack_timeout_seconds=timings.ack_timeout_seconds,
        device_proximity_seconds=timings.proximity_seconds,
        device_sync_interval_seconds=min(5.0, max(0.2, heartbeat)),
        notify_sink_dir=workdir / "notifications",
        smtp_url=None,
        sms_gateway_url=None,
    )


class KitServer:
    """A keyautomat server for one device under test."""

    def __init__(self, container: Container, product: str) -> None:
        self.container = container
        self.db = container.db
        self.gateway = container.devices
        self.product = product
        self.clock = container.clock
        self.automat_id = ""
        self.installation_code = ""
        self.principal: Principal | None = None
        self.codes: dict[str, KitCode] = {}
        self.programming: dict[str, Programming] = {}
        # The kit, not the iLOQ contracts, decides when a program-first locker opens.
        self.gateway.before_open = self._before_open
        # Its gateway hears the device under test and nothing else.
        self.device = DeviceUnderTest(self.settings.mqtt_topic_prefix)
        self.gateway.link = ScopedLink(self.link, self.device.admits)

    @classmethod
    def create(
        cls,
        *,
        broker: str | None,
        prefix: str,
        workdir: Path,
        product: str,
        timings: Timings,
    ) -> KitServer:
        database_url = f"sqlite:///{workdir / 'device-test.db'}"
        settings = kit_settings(
            broker=broker,
            prefix=prefix,
            database_url=database_url,
            workdir=workdir,
            timings=timings,
        )
        from keyautomat.adapters.migrate import upgrade

        upgrade(database_url)
        return cls(bootstrap(settings), product)

    @property
    def link(self) -> Link:
        link = self.container.device_link
        assert link is not None
        return link

    @property
    def settings(self) -> Settings:
        return self.container.settings

    async def start(self) -> None:
        await self.gateway.start(wait=10.0)
        if not self.gateway.connected:
            raise ConnectionError("the kit's gateway could not connect to the broker")

    async def stop(self) -> None:
        await self.gateway.stop()

    def close(self) -> None:
        self.container.close()

    # --- the automat --------------------------------------------------------------------

    async def install(self) -> str:
        """Create an organization and an automat waiting for hardware; its installation code."""
        now = self.clock.now()
        container = self.container

        def work(session: Session) -> tuple[Principal, str, str]:
            unit = accounts.create_organization_unit(
                session,
                None,
                name="keyautomat device test",
                customer_id=None,
                type=OrgUnitType.ORGANIZATION,
                parent_id=None,
                iloq_api_user=None,
                secrets=container.secrets,
                now=now,
            )
            principal = Principal("device-test", unit.id, unit.path, unit.type, Role.ADMIN)
            automat = automats.install_automat(
                session,
                principal,
                name="Device under test",
                organization_unit_id=None,
                label=None,
                group_id=None,
                location=Location(),
                timezone="UTC",
                product=self.product,
                now=now,
            )
            assert automat.installation_pincode is not None
            return principal, automat.id, automat.installation_pincode

        self.principal, self.automat_id, self.installation_code = await self.db.run(work)
        self.device.installation_code = self.installation_code
        return self.installation_code

    def _admin(self) -> Principal:
        assert self.principal is not None, "install first"
        return self.principal

    async def lifecycle(self) -> tuple[str, str | None]:
        """The automat's lifecycle state and bound hwId."""
        row = await self.db.run(
            lambda s: s.execute(
                select(orm.automats.c.lifecycle_state, orm.automats.c.hw_id).where(
                    orm.automats.c.id == self.automat_id
                )
            ).one()
        )
        return str(row.lifecycle_state), row.hw_id

    async def replace(self) -> str:
        """``POST /automats/{id}/replace``: unbind the hardware; the new installation code."""
        now = self.clock.now()
        automat = await self.db.run(
            lambda s: automats.replace_automat(s, self._admin(), self.automat_id, now)
        )
        assert automat.installation_pincode is not None
        self.installation_code = automat.installation_pincode
        return self.installation_code

    async def uninstall(self) -> None:
        """``DELETE /automats/{id}``: the automat is deactivated for good."""
        await self.db.run(lambda s: automats.uninstall_automat(s, self._admin(), self.automat_id))

    # --- pincodes -----------------------------------------------------------------------

    def new_code(self) -> str:
        """Six digits no other code of the kit uses (and never a leading run of zeros)."""
        taken = {code.code for code in self.codes.values()}
        while True:
            code = str(100000 + secrets.randbelow(900000))
            if code not in taken:
                return code

    async def add_code(
        self,
        locker_index: int,
        purpose: PincodePurpose,
        *,
        key_id: str | None = None,
        program_first: bool = False,
        starts_in: timedelta = timedelta(0),
    ) -> KitCode:
        """A code for ``locker_index``, valid from a minute ago (or ``starts_in`` from now)
        for a day, as a contract would add it; pushed to the device after the commit."""
        code = self.new_code()
        now = self.clock.now()
        valid_from = now - timedelta(minutes=1) if not starts_in else now + starts_in
        automat_id = self.automat_id

        def work(session: Session) -> tuple[str, int]:
            pincode_id = devices.add_pincode(
                session,
                automat_id,
                code=code,
                locker_index=locker_index,
                valid_from=valid_from,
                valid_until=valid_from + timedelta(days=1),
                purpose=purpose,
                key_id=key_id,
                program_first=program_first,
            )
            return pincode_id, _desired_version(session, automat_id)

        pincode_id, version = await self.db.run(work)
        kit_code = KitCode(pincode_id, code, locker_index, str(purpose), version, program_first)
        self.codes[pincode_id] = kit_code
        return kit_code

    async def remove_code(self, code: KitCode) -> int:
        """Retire a code (as a contract does once it is used); the sync version that says so."""
        automat_id = self.automat_id

        def work(session: Session) -> int:
            devices.remove_pincode(session, automat_id, code.id)
            return _desired_version(session, automat_id)

        return await self.db.run(work)

    async def desired_version(self) -> int:
        return await self.db.run(lambda s: _desired_version(s, self.automat_id))

    async def synced_version(self) -> int:
        return await self.db.run(lambda s: devices.synced_version(s, self.automat_id))

    async def until_synced(self, version: int, timeout: float) -> bool:
        """Until the device has acknowledged sync ``version`` (the database says so)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.synced_version() < version:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    # --- commands -----------------------------------------------------------------------

    async def send_pincode(self, code: str, *, proximity: bool) -> SendResult:
        """sendPincode, exactly as the API runs it on the gateway holding the device."""
        now = self.clock.now()
        offline_after = self.gateway.offline_after
        target = await self.db.run(
            lambda s: devices.command_target_of(s, self.automat_id, now, offline_after)
        )
        return await self.gateway.send_to(target, code, proximity_check=proximity)

    async def cancel_pincode(self, code: str) -> None:
        """cancelSendPincode."""
        now = self.clock.now()
        offline_after = self.gateway.offline_after
        target = await self.db.run(
            lambda s: devices.command_target_of(s, self.automat_id, now, offline_after)
        )
        await self.gateway.cancel_on(target, code)

    async def command(self, hw_id: str, type_: str, data: Data) -> Ack | None:
        """A raw command; the device's ack, or None when none came in time."""
        return await self.gateway.command(hw_id, type_, data)

    # --- program-first codes ------------------------------------------------------------

    def program(self, code: KitCode, *, seconds: float, opens: bool) -> Programming:
        """How the server answers when ``code`` (program-first) is entered."""
        plan = Programming(seconds, opens)
        self.programming[code.id] = plan
        return plan

    async def _before_open(
        self, automat_id: str, entered: CodeEntered, occurred_at: datetime
    ) -> bool | None:
        plan = self.programming.get(entered.pincode_id or "")
        if automat_id != self.automat_id or plan is None:
            return None
        loop = asyncio.get_running_loop()
        plan.asked_at = loop.time()
        await asyncio.sleep(plan.seconds)  # the key is being programmed
        plan.answered_at = loop.time()
        return plan.verdict

    # --- what the server stored ---------------------------------------------------------

    async def inbox(self, message_ids: list[str]) -> list[InboxRow]:
        """The device events the server applied among ``message_ids`` (one row each at most)."""
        rows = await self.db.run(
            lambda s: s.execute(
                select(
                    device_inbox.c.message_id,
                    device_inbox.c.type,
                    device_inbox.c.occurred_at,
                    device_inbox.c.received_at,
                ).where(
                    device_inbox.c.automat_id == self.automat_id,
                    device_inbox.c.message_id.in_(message_ids),
                )
            ).all()
        )
        return [InboxRow(r.message_id, r.type, r.occurred_at, r.received_at) for r in rows]

    @property
    def errors(self) -> int:
        """Messages the gateway failed to handle (a server error, not a device's)."""
        return self.gateway.stats.errors
