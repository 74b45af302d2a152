"""Just-in-time programming of iLOQ keys, and wiping the keys that came back (C9, C10).

:class:`KeyProgrammer` is the device gateway's ``before_open``: after a
``code-entered`` of a ``program_first`` pincode has committed, it writes the
contract's access rights into the key through the iLOQ port, outside any
database transaction, records the outcome in a following one, and only then
lets the gateway open the locker. Any failure keeps the locker shut (fail
closed); the code stays valid for a retry and repeated failures raise a
``DEVICE_ERROR`` alarm. :class:`WipeJob` handles the ``iloq-wipe`` outbox rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.device_protocol import CodeEntered
from keyautomat.adapters.orm_devices import device_pincodes
from keyautomat.adapters.orm_iloq import iloq_keys
from keyautomat.contracts.store import SqlContractStore
from keyautomat.service_layer import devices
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.delivery import GiveUp, RetryLater
from keyautomat.service_layer.iloq import IloqError, IloqPort, ensure_key
from keyautomat.service_layer.outbox import OutboxMessage

log = logging.getLogger(__name__)

# A code entered longer ago than this (an event queued while the automat was
# offline) no longer opens anything: nobody is standing at the locker.
MAX_CODE_AGE = timedelta(seconds=30)
# Consecutive programming failures of one key before the automat gets a DEVICE_ERROR.
ALARM_AFTER_FAILURES = 3


class DatabaseRunner(Protocol):
    async def run(self, work: Any) -> Any: ...


class PortLookup(Protocol):
    async def port_for(self, unit_id: str) -> IloqPort: ...


@dataclass(frozen=True, slots=True)
class ProgrammingPlan:
    contract_id: str
    position: int
    unit_id: str
    key_id: str
    key_name: str
    access_right_ids: list[str]
    valid_from: datetime
    valid_until: datetime | None
    person_id: str | None


_PROGRAM_FIRST = select(device_pincodes.c.program_first).where(
    device_pincodes.c.id == bindparam("pincode_id"),
    device_pincodes.c.automat_id == bindparam("automat_id"),
)
_KEY_INSIDE = select(orm.lockers.c.is_key_inside).where(
    orm.lockers.c.automat_id == bindparam("automat_id"),
    orm.lockers.c.locker_index == bindparam("locker_index"),
)
_KEY = select(iloq_keys.c.name, iloq_keys.c.blocked).where(iloq_keys.c.id == bindparam("id"))


def programming_plan(
    session: Session, automat_id: str, code: CodeEntered, occurred_at: datetime, now: datetime
) -> ProgrammingPlan | bool | None:
    """What to write into the key behind this code; None when the code is not one the
    server must program for, False when the locker must stay shut."""
    where = {"automat_id": automat_id}
    held = session.execute(_PROGRAM_FIRST, {**where, "pincode_id": code.pincode_id}).first()
    if held is None or not held.program_first:
        return None
    # With the key out (a default contract's return) the device opened at once.
    if not session.scalar(_KEY_INSIDE, {**where, "locker_index": code.locker_index}):
        return None
    store = SqlContractStore(session)
    ref = store.key_with_code(code.pincode_id) if code.pincode_id else None
    contract = store.load(ref.contract_id) if ref is not None else None
    if ref is None or contract is None or now - occurred_at > MAX_CODE_AGE:
        return False
    key = contract.key_at(ref.position)
    key_id = code.key_id or key.key_id
    if key_id != key.key_id:
        log.warning(
            "locker %s/%s holds %s, not the contract's key", automat_id, key.locker_index, key_id
        )
        return False
    known = session.execute(_KEY, {"id": key_id}).first()
    if known is not None and known.blocked:
        return False
    return ProgrammingPlan(
        contract_id=contract.id,
        position=key.position,
        unit_id=contract.organization_unit_id,
        key_id=key_id,
        key_name=known.name if known is not None else key_id,
        access_right_ids=contract.access_right_ids,
        valid_from=contract.start,
        valid_until=contract.end,
        person_id=contract.iloq_person_id,
    )


def record_programmed(session: Session, plan: ProgrammingPlan, now: datetime) -> None:
    SqlContractStore(session).set_key(
        plan.contract_id, plan.position, opened_at=now, program_failures=0
    )


def record_failure(session: Session, plan: ProgrammingPlan, automat_id: str, now: datetime) -> None:
    failures = SqlContractStore(session).count_program_failure(plan.contract_id, plan.position)
    if failures >= ALARM_AFTER_FAILURES:
        devices.raise_alarm(session, automat_id, "DEVICE_ERROR", now, now)


class KeyProgrammer:
    """The gateway's ``before_open``: program the key, then say whether the locker may open."""

    def __init__(self, db: DatabaseRunner, systems: PortLookup, clock: Clock) -> None:
        self.db = db
        self.systems = systems
        self.clock = clock

    async def __call__(
        self, automat_id: str, code: CodeEntered, occurred_at: datetime
    ) -> bool | None:
        now = self.clock.now()
        plan = await self.db.run(lambda s: programming_plan(s, automat_id, code, occurred_at, now))
        if plan is None or plan is False:
            return plan
        assert isinstance(plan, ProgrammingPlan)
        try:
            port = await self.systems.port_for(plan.unit_id)
            await ensure_key(port, plan.key_id, plan.key_name)
            await port.program_key(
                plan.key_id,
                plan.access_right_ids,
                valid_from=plan.valid_from,
                valid_until=plan.valid_until,
                person_id=plan.person_id,
            )
        except IloqError as exc:
            log.warning("programming key %s failed: %s; the locker stays shut", plan.key_id, exc)
            failed_at = self.clock.now()
            await self.db.run(lambda s: record_failure(s, plan, automat_id, failed_at))
            return False
        done_at = self.clock.now()
        await self.db.run(lambda s: record_programmed(s, plan, done_at))
        return True


class WipeJob:
    """The ``iloq-wipe`` outbox handler: a returned key is wiped blank, with retries."""

    def __init__(self, db: DatabaseRunner, systems: PortLookup) -> None:
        self.db = db
        self.systems = systems

    async def __call__(self, message: OutboxMessage) -> None:
        key_id = message.payload["keyId"]
        returned_at = datetime.fromisoformat(message.payload["returnedAt"])
        # A key handed out again since its return holds a new contract's rights now.
        if await self.db.run(lambda s: SqlContractStore(s).reprogrammed_since(key_id, returned_at)):
            return
        try:
            port = await self.systems.port_for(message.payload["unitId"])
            if await port.get_key(key_id) is None:
                # Unknown to iLOQ (a return naming a new key, C17): enrolled now it is blank
                # already, and iLOQ cannot order a key that has no person anyway.
                await port.create_key(key_id=key_id, name=key_id)
                return
            await port.wipe_key(key_id)
        except IloqError as exc:
            if exc.permanent:
                raise GiveUp(str(exc)) from exc
            raise RetryLater(str(exc)) from exc
