"""Wires settings and adapters into one container the entrypoints share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.device_links import Link, link_from_url
from keyautomat.adapters.iloq.factory import IloqSystems
from keyautomat.adapters.oidc import OidcProviders
from keyautomat.adapters.secret_custody import open_secret_box
from keyautomat.adapters.simulator_control import SimulatorControl
from keyautomat.adapters.webhook_sender import HttpWebhookSender, WebhookSender
from keyautomat.config import Settings, load_settings
from keyautomat.entrypoints.command_router import CommandRouter
from keyautomat.entrypoints.device_gateway import DeviceGateway
from keyautomat.service_layer import device_webhooks, webhooks
from keyautomat.service_layer.access_rights import AccessRightsCache
from keyautomat.service_layer.clock import Clock, SystemClock
from keyautomat.service_layer.delivery import Dispatcher
from keyautomat.service_layer.webhook_delivery import PRUNE_INTERVAL, WebhookService
from keyautomat.service_layer.wiring import Wiring

# What the key that hashes bound installation pincodes is derived for (adapters/crypto.py).
INSTALLATION_CODE_KEY = "device installation pincode"


@dataclass
class Container:
    settings: Settings
    db: Database
    secrets: SecretBox
    webhooks: WebhookService
    clock: Clock = field(default_factory=SystemClock)
    # Outbox handlers by kind; each feature registers its own in ``bootstrap``.
    dispatcher: Dispatcher = field(default_factory=Dispatcher)
    # The handlers features register (device events, guards, hooks): service_layer/wiring.py.
    wiring: Wiring = field(default_factory=Wiring)
    # The contract kinds by name (``contracts.kind``), filled by contracts.setup.register.
    contract_kinds: dict[str, Any] = field(default_factory=dict)
    # MQTT when KEYAUTOMAT_MQTT_URL is set, else an in-process link that simulated
    # automats of this process (serve --demo, tests) connect to.
    device_link: Link | None = None
    devices: DeviceGateway = field(init=False)
    # sendPincode / cancelSendPincode, run here or by the gateway process holding the device.
    commands: CommandRouter = field(init=False)
    # The console's virtual automat: keys and display of simulated automats, over the link.
    simulators: SimulatorControl = field(init=False)
    iloq: IloqSystems = field(init=False)
    access_rights_cache: AccessRightsCache = field(init=False)
    # The identity providers of strong authentication (docs/strong-authentication.md).
    oidc: OidcProviders = field(init=False)

    def __post_init__(self) -> None:
        self.iloq = IloqSystems(self.settings, self.db, self.secrets, self.clock)
        self.oidc = OidcProviders(
            allow_private=self.settings.strong_auth_allow_private,
            timeout=self.settings.strong_auth_timeout_seconds,
        )
        self.access_rights_cache = AccessRightsCache(
            self.settings.iloq_access_rights_ttl_seconds, self.clock
        )
        if self.device_link is None:
            self.device_link = link_from_url(self.settings.mqtt_url)
        self.devices = DeviceGateway(
            db=self.db,
            link=self.device_link,
            clock=self.clock,
            settings=self.settings,
            code_key=self.secrets.derive_key(INSTALLATION_CODE_KEY),
            secrets=self.secrets,
        )
        self.commands = CommandRouter(
            db=self.db, gateway=self.devices, secrets=self.secrets, clock=self.clock
        )
        self.simulators = SimulatorControl(self.device_link, self.settings.mqtt_topic_prefix)

    def close(self) -> None:
        self.db.close()


def bootstrap(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    webhook_sender: WebhookSender | None = None,
) -> Container:
    settings = settings or load_settings()
    clock = clock or SystemClock()
    wiring = Wiring()
    db = Database(settings.database_url, threads=settings.db_threads, info={"wiring": wiring})
    try:
        secrets = open_secret_box(settings, db)
    except BaseException:
        db.close()
        raise
    sender = webhook_sender or HttpWebhookSender(
        allow_private=settings.webhooks_allow_private,
        timeout=settings.webhooks_timeout_seconds,
        connect_timeout=settings.webhooks_connect_timeout_seconds,
    )
    container = Container(
        settings=settings,
        db=db,
        secrets=secrets,
        webhooks=WebhookService(
            db,
            sender,
            secrets,
            clock,
            disable_after=timedelta(days=settings.webhooks_disable_after_days),
            attempt_retention=timedelta(days=settings.webhooks_attempt_retention_days),
        ),
        clock=clock,
        wiring=wiring,
    )
    for register in FEATURES:
        register(container)
    return container


def _register_webhooks(container: Container) -> None:
    container.dispatcher.register(
        webhooks.KIND,
        container.webhooks.handle,
        retry_delays=webhooks.RETRY_DELAYS,
        prepare=container.webhooks.prepare,
    )
    container.dispatcher.every(
        PRUNE_INTERVAL, "webhook-attempt-retention", container.webhooks.prune_attempts
    )
    device_webhooks.register(container.wiring)


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
    handler = NotificationHandler(
        container.db, Renderer(), email, sms, box=container.secrets, domain=domain
    )
    container.dispatcher.register(KIND, handler, retry_delays=RETRY_DELAYS)
    # Signature links are stored sealed in notification rows (docs/security.md); rows
    # queued before that are sealed when a process starts (entrypoints/cli.py).
    container.wiring.link_box = container.secrets


def _register_mechanical_keys(container: Container) -> None:
    from keyautomat.service_layer import mechanical_keys

    mechanical_keys.register(container.wiring)


def _register_contracts(container: Container) -> None:
    from keyautomat.contracts import setup

    setup.register(container)


# Each feature adds its handlers in this order. Device events reach the handlers in
# the order they were added: the key register must have placed a mechanical key
# before the contracts read where it went.
def _register_idempotency(container: Container) -> None:
    """Stored answers to Idempotency-Key requests expire (docs/api.md)."""
    from keyautomat.service_layer import idempotency

    db = container.db

    async def expire(now: datetime) -> int:
        return await idempotency.prune_expired(db, now)

    container.dispatcher.every(idempotency.PRUNE_EVERY, "idempotency-key-expiry", expire)


FEATURES: tuple[Callable[[Container], None], ...] = (
    _register_idempotency,
    _register_webhooks,
    _register_notifications,
    _register_mechanical_keys,
    _register_contracts,
)
