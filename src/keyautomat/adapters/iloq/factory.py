"""Which iLOQ adapter serves an organization unit (docs/iloq.md, "Which adapter").

The locking system of a unit is that of the nearest unit, itself included,
with an ``iloqApiUser``; without one anywhere up the tree, the organization
(the root unit) owns an emulated system. That system is the built-in emulator
when

* ``KEYAUTOMAT_ILOQ_MODE=emulator`` (the default: the embedded product and the
  tests never reach out to a real iLOQ system), or
* no unit up the tree has an ``iloqApiUser``, or
* its ``serviceAddress`` starts with ``emulator:``;

otherwise (``KEYAUTOMAT_ILOQ_MODE=live``) it is the iLOQ S5 public API client
at ``serviceAddress``, whose every connection is vetted (``adapters/outbound.py``).
"""

from __future__ import annotations

import hashlib

import httpx

from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.db import Database
from keyautomat.adapters.iloq.emulator import EmulatorIloq
from keyautomat.adapters.iloq.instrumented import InstrumentedIloq
from keyautomat.adapters.iloq.s5_client import IloqS5Client
from keyautomat.adapters.outbound import Resolver, UnsafeTarget, check_url, system_resolve
from keyautomat.config import Settings
from keyautomat.domain.errors import InvalidInput
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.iloq import (
    IloqApiConfig,
    IloqPort,
    IloqSystemRef,
    resolve_iloq_system,
)

EMULATOR_SCHEME = "emulator:"


def uses_emulator(mode: str, config: IloqApiConfig | None) -> bool:
    return (
        mode == "emulator"
        or config is None
        or config.service_address.strip().lower().startswith(EMULATOR_SCHEME)
    )


class IloqSystems:
    """Hands out the iLOQ port of a unit; keeps S5 clients so their sessions are reused."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        secrets: SecretBox,
        clock: Clock,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        dns_resolve: Resolver = system_resolve,
    ) -> None:
        self.settings = settings
        self.db = db
        self.secrets = secrets
        self.clock = clock
        self.transport = transport
        self.dns_resolve = dns_resolve
        self._clients: dict[tuple[str, str], IloqS5Client] = {}

    async def resolve(self, unit_id: str) -> IloqSystemRef:
        return await self.db.read(lambda r: resolve_iloq_system(r, unit_id, self.secrets))

    def port(self, system: IloqSystemRef) -> IloqPort:
        if uses_emulator(self.settings.iloq_mode, system.config):
            return InstrumentedIloq(
                EmulatorIloq(self.db, system.owner_unit_id, self.clock), "emulator"
            )
        assert system.config is not None
        # Keyed by a digest of the whole configuration: changed credentials get a new client.
        digest = hashlib.sha256(repr(_fields(system.config)).encode()).hexdigest()
        cache_key = (system.owner_unit_id, digest)
        client = self._clients.get(cache_key)
        if client is None:
            client = IloqS5Client(
                system.config,
                timeout=self.settings.iloq_timeout_seconds,
                transport=self.transport,
                allow_private=self.settings.iloq_allow_private,
                resolve=self.dns_resolve,
            )
            self._clients[cache_key] = client
        return InstrumentedIloq(client, "s5")

    def check_service_address(self, address: str, field: str) -> None:
        """The rules of a ``serviceAddress`` when it is saved (the connection is vetted again).

        ``emulator:`` addresses pass; any other must be an https URL without
        credentials, query or fragment, and not a private IP literal unless
        KEYAUTOMAT_ILOQ_ALLOW_PRIVATE is set. Host names are resolved and vetted
        at every connection, not here: a name can change its answer later.
        """
        if address.strip().lower().startswith(EMULATOR_SCHEME):
            return
        try:
            check_url(address, allow_private=self.settings.iloq_allow_private, allow_query=False)
        except UnsafeTarget as exc:
            raise InvalidInput(field, exc.reason) from exc

    async def port_for(self, unit_id: str) -> IloqPort:
        """The port of the locking system serving ``unit_id``."""
        return self.port(await self.resolve(unit_id))


def _fields(config: IloqApiConfig) -> tuple[str, str, str, str]:
    return (config.username, config.password, config.customer_code, config.service_address)
