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
    return Container(
        settings=settings,
        db=Database(settings.database_url, threads=settings.db_threads),
        secrets=SecretBox.from_settings(settings.secret_key, settings.secret_key_file),
        clock=clock or SystemClock(),
    )
