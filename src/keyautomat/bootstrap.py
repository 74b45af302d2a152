"""Wires settings and adapters into one container the entrypoints share."""

from __future__ import annotations

from dataclasses import dataclass, field

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.device_links import Link, link_from_url
from keyautomat.config import Settings, load_settings
from keyautomat.entrypoints.device_gateway import DeviceGateway
from keyautomat.service_layer.clock import Clock, SystemClock


@dataclass
class Container:
    settings: Settings
    db: Database
    secrets: SecretBox
    clock: Clock = field(default_factory=SystemClock)
    # MQTT when KEYAUTOMAT_MQTT_URL is set, else an in-process link that simulated
    # automats of this process (serve --demo, tests) connect to.
    device_link: Link | None = None
    devices: DeviceGateway = field(init=False)

    def __post_init__(self) -> None:
        if self.device_link is None:
            self.device_link = link_from_url(self.settings.mqtt_url)
        self.devices = DeviceGateway(
            db=self.db, link=self.device_link, clock=self.clock, settings=self.settings
        )

    def close(self) -> None:
        self.db.close()


def bootstrap(settings: Settings | None = None, *, clock: Clock | None = None) -> Container:
    settings = settings or load_settings()
    return Container(
        settings=settings,
        db=Database(settings.database_url, threads=settings.db_threads),
        secrets=SecretBox.from_settings(settings.secret_key, settings.secret_key_file),
        clock=clock or SystemClock(),
    )
