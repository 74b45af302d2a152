"""How the contract feature plugs into a container: its kinds, its device-event handler,
its outbox jobs, its uninstall guard, the lockers it holds and its reminder conditions
(``bootstrap`` calls :func:`register` in its declared order)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from keyautomat.contracts import overdue, progress, succession
from keyautomat.contracts.iloq.kind import WIPE_KIND, IloqKind
from keyautomat.contracts.iloq.programming import KeyProgrammer, WipeJob
from keyautomat.contracts.kind import ContractKind
from keyautomat.contracts.mechanical import custody, identity
from keyautomat.contracts.mechanical.kind import MechanicalKind
from keyautomat.contracts.service import LATE_KIND
from keyautomat.contracts.store import END_KIND, SqlContractStore
from keyautomat.domain.devices import AutomatEvent
from keyautomat.domain.notifications import ContractView, NotificationType
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.notifications import Condition
from keyautomat.service_layer.outbox import OutboxMessage

if TYPE_CHECKING:
    from keyautomat.bootstrap import Container


def signature_base_url(public_bases: Sequence[str]) -> str:
    """Signature links are absolute when the public URL is known, else relative."""
    if not public_bases:
        return ""
    return public_bases[0].rstrip("/").removesuffix("/v2")


class ContractEvents:
    """The container's handlers of the contract feature (device events, jobs, guards)."""

    def __init__(self, kinds: dict[str, ContractKind[Any]], clock: Clock) -> None:
        self.kinds = kinds
        self.clock = clock

    def on_automat_event(self, session: Session, event: AutomatEvent) -> None:
        progress.on_automat_event(SqlContractStore(session), self.kinds, event)

    def condition(self, session: Session, view: ContractView, type_: NotificationType) -> Condition:
        return progress.condition(SqlContractStore(session), view, type_)

    def automat_in_use(self, session: Session, automat: Any) -> str | None:
        """Uninstall guard (gaps.md D3): ongoing or future contracts still reserve it."""
        now: datetime = self.clock.now()
        contract_id = SqlContractStore(session).automat_in_use(automat.id, now)
        return None if contract_id is None else f"contract {contract_id} still uses this automat"

    def lockers_in_use(self, session: Session, automat_id: str, now: datetime) -> set[int]:
        """Lockers its contracts still reserve: no device report deletes them."""
        return SqlContractStore(session).lockers_in_use(automat_id, now)


def register(container: Container) -> None:
    kinds: dict[str, ContractKind[Any]] = {
        IloqKind.name: IloqKind(),
        MechanicalKind.name: MechanicalKind(
            signature_base_url(container.settings.public_bases),
            timedelta(hours=container.settings.strong_auth_link_hours),
        ),
    }
    container.contract_kinds.update(kinds)
    events = ContractEvents(container.contract_kinds, container.clock)
    wiring = container.wiring
    wiring.device_event_handlers.append(events.on_automat_event)
    wiring.uninstall_guards.append(events.automat_in_use)
    wiring.locker_holds.append(events.lockers_in_use)
    for kind in kinds.values():
        wiring.condition_checkers[kind.view_kind.value] = events.condition
    mechanical = kinds[MechanicalKind.name]
    assert isinstance(mechanical, MechanicalKind)
    custody.register(wiring, mechanical)

    async def end(message: OutboxMessage) -> None:
        contract_id = message.payload["contractId"]
        now = container.clock.now()
        await container.db.run(
            lambda s: progress.evaluate_end(SqlContractStore(s), contract_id, now)
        )

    async def late(message: OutboxMessage) -> None:
        contract_id, position = message.payload["contractId"], message.payload["position"]
        now = container.clock.now()
        await container.db.run(
            lambda s: succession.check_late(
                SqlContractStore(s), container.contract_kinds, contract_id, position, now
            )
        )

    async def overdue_keys(message: OutboxMessage) -> None:
        payload = message.payload
        now = container.clock.now()
        await container.db.run(
            lambda s: overdue.check(
                SqlContractStore(s),
                container.contract_kinds,
                payload["contractId"],
                payload["stage"],
                payload["end"],
                now,
            )
        )

    container.dispatcher.register(END_KIND, end)
    container.dispatcher.register(LATE_KIND, late)
    container.dispatcher.register(overdue.OVERDUE_KIND, overdue_keys)
    retention = timedelta(days=container.settings.strong_auth_retention_days)

    async def prune_strong_auth(now: datetime) -> int:
        return await identity.prune_all(container.db, now, retention)

    container.dispatcher.every(identity.PRUNE_EVERY, "strong-auth-retention", prune_strong_auth)
    container.dispatcher.register(WIPE_KIND, WipeJob(container.db, container.iloq))
    container.devices.before_open = KeyProgrammer(container.db, container.iloq, container.clock)
