"""Real servers on loopback for notification tests: an SMTP server and an SMS gateway."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.notify.render import Renderer
from keyautomat.adapters.notify.transports import HttpSmsGateway, SmtpTransport
from keyautomat.domain.notifications import (
    AutomatView,
    Contact,
    ContractKind,
    ContractType,
    ContractView,
    KeyView,
)
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer.clock import Clock, ManualClock
from keyautomat.service_layer.delivery import Dispatcher
from keyautomat.service_layer.notifications import KIND
from keyautomat.service_layer.notify_sender import RETRY_DELAYS, NotificationHandler
from keyautomat.service_layer.wiring import Wiring
from tests.processes import free_port

SMS_TOKEN = "test-gateway-token"


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: set[str] = set()
        # Refusals quote the address, as many mail servers' do.
        self.quote_refused = False
        self.lock = threading.Lock()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return (
                f"550 5.1.1 <{address}>: no such user"
                if self.quote_refused
                else ("550 5.1.1 no such user")
            )
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.messages.append(parsed)
        return "250 Message accepted"


class SmtpServer:
    """aiosmtpd on 127.0.0.1; ``stop()`` and ``start()`` again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mailbox = _Mailbox()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        return self.mailbox.messages

    def start(self) -> None:
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@dataclass
class SmsGateway:
    """A JSON SMS gateway on 127.0.0.1: records each authorised POST, answers ``status``."""

    status: int = 200
    # An error answer names the number it refused (without its "+"), as some gateways' do.
    quote_refused: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # When set, a request waits (after being recorded) until ``release`` is set.
    hold: bool = False
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {SMS_TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    return
                gateway.received.append(body)
                gateway.headers.append(dict(self.headers))
                gateway.arrived.set()
                if gateway.hold:
                    gateway.release.wait(10)
                self.send_response(gateway.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if gateway.quote_refused and gateway.status >= 400:
                    number = str(body["to"]).lstrip("+")
                    self.wfile.write(json.dumps({"error": f"{number} is barred"}).encode())
                else:
                    self.wfile.write(b'{"ok": true}')

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # a worker pass sends a whole batch at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/sms"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def link_box(db: Database) -> SecretBox:
    """The box that seals signature links in ``db``'s rows: its container's."""
    box = db.info["wiring"].link_box
    assert isinstance(box, SecretBox)
    return box


def wired_database(url: str, *, threads: int) -> Database:
    """A database outside any container whose rows seal links like a container's do."""
    box = SecretBox(Fernet.generate_key())
    return Database(url, threads=threads, info={"wiring": Wiring(link_box=box)})


def notification_worker(
    db: Database,
    clock: Clock,
    smtp_url: str,
    sms_url: str,
    *,
    worker_id: str = "w1",
    lease: timedelta = timedelta(seconds=120),
) -> OutboxWorker:
    handler = NotificationHandler(
        db,
        Renderer(),
        SmtpTransport(smtp_url, "keys@example.com", timeout=5),
        HttpSmsGateway(sms_url, SMS_TOKEN, timeout=5),
        box=link_box(db),
        domain="example.com",
    )
    dispatcher = Dispatcher()
    dispatcher.register(KIND, handler, retry_delays=RETRY_DELAYS)
    return OutboxWorker(db, dispatcher, clock, worker_id=worker_id, batch_size=50, lease=lease)


AUTOMAT = AutomatView(
    id="000111",
    name="Kamppi automat",
    label="Lobby",
    address="Urho Kekkosen katu 1, Helsinki",
    timezone="Europe/Helsinki",
)
ALL_ON = {
    t: {"sms": True, "email": True}
    for t in (
        "contractCreated",
        "contractUpdated",
        "contractKeyFetched",
        "contractKeyReturned",
        "contractStartReminder",
        "contractEndReminder",
        "contractKeysNotReturned",
        "contractSignatureRequested",
    )
}


def make_view(
    unit_id: str,
    now: datetime,
    *,
    contract_id: str = "contract-1",
    language: str | None = "en",
    start_in: timedelta = timedelta(days=3),
    length: timedelta | None = timedelta(days=2),
    kind: ContractKind = ContractKind.MECHANICAL,
    contract_type: ContractType = ContractType.DEFAULT,
    contact: Contact | None = None,
    email: str | None = "jane@example.com",
    phone: str | None = "+358401234567",
    **contact_settings: Any,
) -> ContractView:
    start = now + start_in
    if contact is None:
        settings: dict[str, Any] = {"notifications": ALL_ON} if not contact_settings else {}
        settings.update(contact_settings)
        contact = Contact(
            name="Jane Guest", email=email, phone_number=phone, language=language, **settings
        )
    return ContractView(
        kind=kind,
        contract_id=contract_id,
        contract_type=contract_type,
        organization_unit_id=unit_id,
        start=start,
        end=start + length if length is not None else None,
        contact=contact,
        keys=(
            KeyView("key-1", "Flat A12", "123456", AUTOMAT),
            KeyView("key-2", "Garage", "654321", AUTOMAT),
        ),
        signature_link="https://keys.example.com/sign/abc",
    )


def at(clock: ManualClock, moment: datetime) -> None:
    clock.set(moment.astimezone(UTC))


Work = Callable[[Any], Any]
