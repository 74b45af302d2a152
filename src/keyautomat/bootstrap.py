"""Wires settings and adapters into one container the entrypoints share."""

from __future__ import annotations

from dataclasses import dataclass, field

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.config import Settings, load_settings
from keyautomat.service_layer.clock import Clock, SystemClock
from keyautomat.service_layer.delivery import Dispatcher


@dataclass
class Container:
    settings: Settings
    db: Database
    secrets: SecretBox
    clock: Clock = field(default_factory=SystemClock)
    # Outbox handlers by kind; each feature registers its own in ``bootstrap``.
    dispatcher: Dispatcher = field(default_factory=Dispatcher)

    def close(self) -> None:
        self.db.close()


def bootstrap(settings: Settings | None = None, *, clock: Clock | None = None) -> Container:
    settings = settings or load_settings()
    container = Container(
        settings=settings,
        db=Database(settings.database_url, threads=settings.db_threads),
        secrets=SecretBox.from_settings(settings.secret_key, settings.secret_key_file),
        clock=clock or SystemClock(),
    )
    _register_notifications(container)
    return container


def _register_notifications(container: Container) -> None:
    """SMTP and the SMS gateway when configured; the development sink for what is not."""
    from keyautomat.adapters.notify.render import Renderer
    from keyautomat.adapters.notify.transports import HttpSmsGateway, SinkTransport, SmtpTransport
    from keyautomat.service_layer.notifications import KIND
    from keyautomat.service_layer.notify_sender import (
        RETRY_DELAYS,
        EmailTransport,
        NotificationHandler,
        SmsTransport,
    )

    settings = container.settings
    sink = SinkTransport(settings.notify_sink_dir)
    email: EmailTransport = sink
    sms: SmsTransport = sink
    if settings.smtp_url:
        email = SmtpTransport(settings.smtp_url, settings.email_from)
    if settings.sms_gateway_url:
        sms = HttpSmsGateway(settings.sms_gateway_url, settings.sms_gateway_token)
    domain = settings.email_from.rpartition("@")[2] or "keyautomat.local"
    handler = NotificationHandler(container.db, Renderer(), email, sms, domain=domain)
    container.dispatcher.register(KIND, handler, retry_delays=RETRY_DELAYS)
