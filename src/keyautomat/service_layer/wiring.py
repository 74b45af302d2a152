"""The registries features fill at start, owned by one container and reached from its sessions.

Each feature's ``register(container)`` adds its handlers here, in the order
``bootstrap`` declares (``FEATURES``). Nothing is kept in module variables: two
containers in one process (tests, the CLI) have two independent registries.

Use cases run inside a unit of work and receive a ``Session``; the container's
:class:`~keyautomat.adapters.db.Database` puts its ``Wiring`` into every session's
``info``, so the code that applies a device event finds the handlers of the
container whose database it writes to (:func:`wiring_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from keyautomat.adapters.crypto import SecretBox
    from keyautomat.adapters.device_protocol import LockerInventory
    from keyautomat.domain.devices import AutomatEvent
    from keyautomat.domain.mechanical import MechanicalKey, Storage
    from keyautomat.domain.notifications import ContractView, NotificationType

# A device event, in the transaction that records it: contracts turn code-entered /
# key-removed / key-inserted into progress, webhooks turn alarms into deliveries,
# so what a handler writes (an outbox row, a contract update) commits with the event.
AutomatEventHandler = Callable[[Session, "AutomatEvent"], None]
# A full locker report rather than one event: features that keep their own books of
# keys (mechanical keys) follow it in the transaction that rewrites the lockers.
InventoryHandler = Callable[[Session, str, "LockerInventory"], None]
# The lockers of an automat (by index) a feature still needs now or later (contracts:
# their reservations): no device report deletes them (docs/device-protocol.md, "Lockers").
LockerHolds = Callable[[Session, str, datetime], Iterable[int]]
# Why an automat may not be uninstalled now (gaps.md D3), or None.
UninstallGuard = Callable[[Session, Any], "str | None"]
# Whether a scheduled message still applies when it fires (notifications.md §2).
ConditionChecker = Callable[[Session, "ContractView", "NotificationType"], Any]
# F9: the storage of the contract each mechanical key is in or next due for.
TargetStorageResolver = Callable[
    [Session, "Sequence[MechanicalKey]", datetime], "Mapping[str, Storage]"
]
# F8: before a mechanical key is deleted, with the caller's deleteActiveContracts.
KeyDeleteHook = Callable[[Session, "MechanicalKey", bool, datetime], None]


@dataclass
class Wiring:
    device_event_handlers: list[AutomatEventHandler] = field(default_factory=list)
    inventory_handlers: list[InventoryHandler] = field(default_factory=list)
    locker_holds: list[LockerHolds] = field(default_factory=list)
    uninstall_guards: list[UninstallGuard] = field(default_factory=list)
    # By contract kind (``ContractView.kind``); a kind without one: every condition holds.
    condition_checkers: dict[str, ConditionChecker] = field(default_factory=dict)
    target_storage_resolvers: list[TargetStorageResolver] = field(default_factory=list)
    key_delete_hooks: list[KeyDeleteHook] = field(default_factory=list)
    # Seals signature links in outbox payloads (docs/security.md); the container's box.
    link_box: SecretBox | None = None


# A session made outside any container (a migration, a tool): no feature is wired.
_UNWIRED = Wiring()


def wiring_of(session: Session) -> Wiring:
    wiring = session.info.get("wiring")
    return wiring if isinstance(wiring, Wiring) else _UNWIRED
