"""Wires settings and adapters into one container the entrypoints share."""

from __future__ import annotations

from dataclasses import dataclass, field

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.iloq.factory import IloqSystems
from keyautomat.config import Settings, load_settings
from keyautomat.service_layer.access_rights import AccessRightsCache
from keyautomat.service_layer.clock import Clock, SystemClock


@dataclass
class Container:
    settings: Settings
    db: Database
    secrets: SecretBox
    clock: Clock = field(default_factory=SystemClock)
    iloq: IloqSystems = field(init=False)
    access_rights_cache: AccessRightsCache = field(init=False)

    def __post_init__(self) -> None:
        self.iloq = IloqSystems(self.settings, self.db, self.secrets, self.clock)
        self.access_rights_cache = AccessRightsCache(
            self.settings.iloq_access_rights_ttl_seconds, self.clock
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
