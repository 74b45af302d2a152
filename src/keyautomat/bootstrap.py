"""Wires settings and adapters into one container the entrypoints share."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from keyautomat.adapters import orm
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.device_links import Link, link_from_url
from keyautomat.adapters.iloq.factory import IloqSystems
from keyautomat.adapters.secret_custody import open_secret_box
from keyautomat.adapters.webhook_sender import HttpWebhookSender, WebhookSender
from keyautomat.config import Settings, load_settings
from keyautomat.entrypoints.device_gateway import DeviceGateway
from keyautomat.service_layer import device_webhooks, webhooks
from keyautomat.service_layer.access_rights import AccessRightsCache
from keyautomat.service_layer.clock import Clock, SystemClock
from keyautomat.service_layer.delivery import Dispatcher
from keyautomat.service_layer.webhook_delivery import WebhookService

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
    # MQTT when KEYAUTOMAT_MQTT_URL is set, else an in-process link that simulated
    # automats of this process (serve --demo, tests) connect to.
    device_link: Link | None = None
    devices: DeviceGateway = field(init=False)
    iloq: IloqSystems = field(init=False)
    access_rights_cache: AccessRightsCache = field(init=False)

    def __post_init__(self) -> None:
        self.iloq = IloqSystems(self.settings, self.db, self.secrets, self.clock)
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
        )

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
    db = Database(settings.database_url, threads=settings.db_threads)
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
        webhooks=WebhookService(db, sender, secrets, clock),
        clock=clock,
    )
    container.dispatcher.register(
        webhooks.KIND, container.webhooks.handle, retry_delays=webhooks.RETRY_DELAYS
    )
    _register_notifications(container)
    device_webhooks.register()
    _register_contracts(container)
    _register_device_followers()
    _set_signature_base(settings)
    return container


def _register_contracts(container: Container) -> None:
    """iLOQ contracts: device progress, just-in-time programming, end and wipe jobs."""
    from keyautomat.domain.notifications import ContractKind
    from keyautomat.service_layer import (
        automats,
        contract_steps,
        devices,
        iloq_contracts,
        notifications,
    )
    from keyautomat.service_layer.iloq_progress import (
        ContractJobs,
        KeyProgrammer,
        condition,
        on_automat_event,
    )

    # Module-level registries: add once per process, however many containers exist.
    if on_automat_event not in devices.event_handlers:
        devices.event_handlers.append(on_automat_event)
    if iloq_contracts.automat_in_use not in automats.uninstall_guards:
        automats.uninstall_guards.append(iloq_contracts.automat_in_use)
    notifications.register_condition_checker(ContractKind.ILOQ, condition)
    jobs = ContractJobs(container.db, container.iloq, container.clock)
    container.dispatcher.register(contract_steps.END_KIND, _end_by_kind(container, jobs))
    container.dispatcher.register(iloq_contracts.WIPE_KIND, jobs.wipe)
    container.devices.before_open = KeyProgrammer(container.db, container.iloq, container.clock)


def _end_by_kind(container: Container, jobs: Any) -> Any:
    """The shared ``contract-end`` job: iLOQ contracts to their jobs, mechanical ones to theirs."""
    from sqlalchemy import select

    from keyautomat.adapters.orm_contracts import contracts
    from keyautomat.service_layer import mechanical_progress

    async def end(message: Any) -> None:
        contract_id = message.payload["contractId"]
        kind = await container.db.run(
            lambda s: s.scalar(select(contracts.c.kind).where(contracts.c.id == contract_id))
        )
        if kind == "mechanical":
            now = container.clock.now()
            await container.db.run(lambda s: mechanical_progress.evaluate_end(s, contract_id, now))
            return
        await jobs.end(message)

    return end


def _register_device_followers() -> None:
    """Features that keep their own books in step with what the automats report."""
    from keyautomat.service_layer import mechanical_contracts, mechanical_keys

    mechanical_keys.install()
    # After the register: contract progress reads where the key was put.
    mechanical_contracts.install()
    mechanical_progress_install()


def _set_signature_base(settings: Settings) -> None:
    """Signature links are absolute when the public URL is known."""
    from keyautomat.service_layer import mechanical_contracts

    mechanical_contracts.signature_base_url.clear()
    if settings.public_bases:
        base = settings.public_bases[0].rstrip("/").removesuffix("/v2")
        mechanical_contracts.signature_base_url.append(base)


def mechanical_progress_install() -> None:
    from keyautomat.service_layer import mechanical_progress

    mechanical_progress.install()


def _register_notifications(container: Container) -> None:
    """SMTP and the SMS gateway when configured; the development sink for what is not."""
    from keyautomat.adapters.notify.render import Renderer
    from keyautomat.adapters.notify.transports import HttpSmsGateway, SinkTransport, SmtpTransport
    from keyautomat.service_layer.notifications import KIND, install_link_box, seal_stored_links
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
    # Signature links are stored sealed in notification rows (docs/security.md).
    install_link_box(container.secrets)
    if container.db.transaction(
        lambda s: inspect(s.connection()).has_table(orm.server_metadata.name)
    ):
        # IntegrityError: another process starting at once sealed them and set the flag.
        with suppress(IntegrityError):
            container.db.transaction(seal_stored_links)
