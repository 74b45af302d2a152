"""What happens to iLOQ contract keys at the automats: just-in-time programming, fetch,
return, and the end of a contract (gaps.md C9-C13; docs/contracts.md).

* :class:`KeyProgrammer` runs after a ``code-entered`` of a ``program_first``
  pincode has committed: it writes the contract's access rights into the key
  through the iLOQ port, outside any database transaction, records the outcome
  in a following one, and only then lets the gateway open the locker. Any
  failure keeps the locker shut (fail closed); the code stays valid for a retry
  and repeated failures raise a ``DEVICE_ERROR`` alarm.
* :func:`on_automat_event` runs inside the transaction that applies a device
  event and moves keys through their statuses.
* :class:`ContractJobs` handles the outbox rows ``contract-end`` (C12, once)
  and ``iloq-wipe`` (a returned key is wiped blank, with retries).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.device_protocol import CodeEntered
from keyautomat.adapters.orm_contracts import contract_keys, contracts
from keyautomat.adapters.orm_devices import device_pincodes
from keyautomat.adapters.orm_iloq import iloq_keys
from keyautomat.domain import webhooks as wh
from keyautomat.domain.contracts import OPEN_END, ContractType, KeyStatus, end_outcome, is_out
from keyautomat.domain.devices import AutomatEvent, AutomatEventType, code_type_for
from keyautomat.domain.notifications import ContractView, NotificationType
from keyautomat.service_layer import contract_steps, devices, notifications, outbox, webhooks
from keyautomat.service_layer import contracts as core
from keyautomat.service_layer import iloq_keys as registry
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.delivery import GiveUp, RetryLater
from keyautomat.service_layer.iloq import IloqError, IloqPort, ensure_key
from keyautomat.service_layer.iloq_contracts import (
    WIPE_KIND,
    ContractRow,
    KeyRow,
    load_contract,
    notification_view,
)
from keyautomat.service_layer.outbox import OutboxMessage

log = logging.getLogger(__name__)

c = contracts
ck = contract_keys

# A code entered longer ago than this (an event queued while the automat was
# offline) no longer opens anything: nobody is standing at the locker.
MAX_CODE_AGE = timedelta(seconds=30)
# Consecutive programming failures of one key before the automat gets a DEVICE_ERROR.
ALARM_AFTER_FAILURES = 3


class DatabaseRunner(Protocol):
    async def run(self, work: Any) -> Any: ...


class PortLookup(Protocol):
    async def port_for(self, unit_id: str) -> IloqPort: ...


# --- just-in-time programming --------------------------------------------------------------


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


def programming_plan(
    session: Session, automat_id: str, code: CodeEntered, occurred_at: datetime, now: datetime
) -> ProgrammingPlan | bool | None:
    """What to write into the key behind this code; None when the code is not one the
    server must program for, False when the locker must stay shut."""
    p = device_pincodes
    held = session.execute(
        select(p.c.program_first).where(p.c.id == code.pincode_id, p.c.automat_id == automat_id)
    ).first()
    if held is None or not held.program_first:
        return None
    # With the key out (a default contract's return) the device opened at once.
    inside = session.scalar(
        select(orm.lockers.c.is_key_inside).where(
            orm.lockers.c.automat_id == automat_id,
            orm.lockers.c.locker_index == code.locker_index,
        )
    )
    if not inside:
        return None
    row = session.execute(
        select(ck, c.c.organization_unit_id, c.c.contract_type, c.c.start, c.c.end)
        .join(c, c.c.id == ck.c.contract_id)
        .where(ck.c.pincode_id == code.pincode_id, c.c.deleted_at.is_(None))
    ).first()
    if row is None or row.in_history or now - occurred_at > MAX_CODE_AGE:
        return False
    key_id = code.key_id or row.key_id
    if key_id != row.key_id:
        log.warning(
            "locker %s/%s holds %s, not the contract's key", automat_id, row.locker_index, key_id
        )
        return False
    key = session.execute(
        select(iloq_keys.c.name, iloq_keys.c.blocked).where(iloq_keys.c.id == key_id)
    ).first()
    if key is not None and key.blocked:
        return False
    contract = load_contract(session, row.contract_id)
    return ProgrammingPlan(
        contract_id=row.contract_id,
        position=row.position,
        unit_id=row.organization_unit_id,
        key_id=key_id,
        key_name=key.name if key is not None else key_id,
        access_right_ids=contract.access_right_ids,
        valid_from=contract.start,
        valid_until=contract.end,
        person_id=contract.iloq_person_id,
    )


def record_programmed(session: Session, plan: ProgrammingPlan, now: datetime) -> None:
    session.execute(
        update(ck)
        .where(ck.c.contract_id == plan.contract_id, ck.c.position == plan.position)
        .values(programmed_at=now, program_failures=0)
    )


def record_failure(session: Session, plan: ProgrammingPlan, automat_id: str, now: datetime) -> None:
    failures = session.execute(
        update(ck)
        .where(ck.c.contract_id == plan.contract_id, ck.c.position == plan.position)
        .values(program_failures=ck.c.program_failures + 1)
        .returning(ck.c.program_failures)
    ).scalar_one()
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


# --- progress from device events ------------------------------------------------------------


def _key_at(
    session: Session, automat_id: str, locker_index: int | None, *conditions: Any
) -> tuple[ContractRow, KeyRow] | None:
    if locker_index is None:
        return None
    row = session.execute(
        select(ck.c.contract_id, ck.c.position)
        .join(c, c.c.id == ck.c.contract_id)
        .where(
            ck.c.automat_id == automat_id,
            ck.c.locker_index == locker_index,
            ck.c.in_history.is_(False),
            c.c.deleted_at.is_(None),
            c.c.kind == "iloq",
            *conditions,
        )
        .order_by(c.c.start)
        .limit(1)
    ).first()
    if row is None:
        return None
    contract = load_contract(session, row.contract_id)
    key = next(k for k in contract.keys if k.position == row.position)
    return contract, key


def _retire_pincode(session: Session, contract: ContractRow, key: KeyRow) -> None:
    """The key left this contract for good: its code goes, and it is history (C13)."""
    if key.pincode_id is not None and key.automat_id is not None:
        devices.remove_pincode(session, key.automat_id, key.pincode_id)
    contract_steps.set_key(
        session, contract.id, key, pincode=None, pincode_id=None, in_history=True
    )


def _publish_status(
    session: Session, contract: ContractRow, key: KeyRow, state: KeyStatus, at: datetime
) -> None:
    device = key.automat_id is not None and key.locker_index is not None
    webhooks.publish(
        session,
        organization_unit_id=contract.organization_unit_id,
        event_type=wh.EventType.KEY_STATUS,
        data=wh.key_status_data(
            state=state.value,
            key_id=key.key_id,
            contract_id=contract.id,
            contract_object_id=contract.id,
            device_id=key.automat_id if device else None,
            locker_index=key.locker_index if device else None,
        ),
        occurred_at=at,
        now=at,
    )


def _notify(
    session: Session, contract: ContractRow, type_: NotificationType, key: KeyRow, at: datetime
) -> None:
    view = notification_view(session, load_contract(session, contract.id))
    notifications.notify(session, view, type_, now=at, key_id=key.key_id, event=at.isoformat())


def on_automat_event(session: Session, event: AutomatEvent) -> None:
    """Registered in ``devices.event_handlers``; runs in the device event's transaction."""
    if event.type == AutomatEventType.CODE_ENTERED:
        _code_entered(session, event)
    elif event.type == AutomatEventType.KEY_REMOVED:
        _key_removed(session, event)
    elif event.type == AutomatEventType.KEY_INSERTED:
        _key_inserted(session, event)


def _code_entered(session: Session, event: AutomatEvent) -> None:
    pincode_id = event.data.get("pincodeId")
    if pincode_id is None or event.code is None:
        return
    row = session.execute(
        select(
            ck.c.contract_id,
            ck.c.key_id,
            ck.c.locker_index,
            c.c.contract_type,
            c.c.organization_unit_id,
        )
        .join(c, c.c.id == ck.c.contract_id)
        .where(ck.c.pincode_id == pincode_id, c.c.kind == "iloq")
    ).first()
    if row is None:
        return
    returning = row.contract_type == ContractType.RETURN
    webhooks.publish(
        session,
        organization_unit_id=row.organization_unit_id,
        event_type=wh.EventType.CODE_ENTERED,
        data=wh.code_entered_data(
            code_type=code_type_for("return" if returning else "default"),
            code=event.code,
            device_id=event.automat_id,
            locker_index=row.locker_index,
            key_id=row.key_id,
            # webhooks.md §5.3: return codes carry no contractId.
            contract_id=None if returning else row.contract_id,
            contract_object_id=row.contract_id,
        ),
        occurred_at=event.occurred_at,
        now=event.occurred_at,
    )


def _key_removed(session: Session, event: AutomatEvent) -> None:
    # Only a key programmed for its contract since it was last put back counts as
    # fetched: a service opening or a staff removal is not a handover.
    found = _key_at(
        session,
        event.automat_id,
        event.locker_index,
        c.c.contract_type.in_([int(ContractType.DEFAULT), int(ContractType.FETCH)]),
        ck.c.programmed_at.is_not(None),
        ck.c.status.is_(None) | (ck.c.status == KeyStatus.RETURNED),
    )
    if found is None:
        return
    contract, key = found
    if event.key_id is not None and event.key_id != key.key_id:
        return
    at = event.occurred_at
    contract_steps.set_key(session, contract.id, key, status=KeyStatus.FETCHED.value, fetched_at=at)
    if contract.contract_type is ContractType.FETCH:
        # The key is the user's now: the locker is free and the key leaves our automat.
        _retire_pincode(session, contract, key)
        core.release(session, contract.id, key.position, at)
        if session.execute(select(iloq_keys.c.id).where(iloq_keys.c.id == key.key_id)).first():
            registry.take_key(session, key.key_id)
        session.execute(
            update(orm.lockers)
            .where(
                orm.lockers.c.automat_id == event.automat_id,
                orm.lockers.c.locker_index == event.locker_index,
                orm.lockers.c.key_id == key.key_id,
            )
            .values(key_id=None, key_name=None, is_key_inside=False)
        )
        contract_steps.complete_if_done(session, contract.id, at)
    _publish_status(session, contract, key, KeyStatus.FETCHED, at)
    _notify(session, contract, NotificationType.CONTRACT_KEY_FETCHED, key, at)


def _key_inserted(session: Session, event: AutomatEvent) -> None:
    found = _key_at(
        session,
        event.automat_id,
        event.locker_index,
        (
            (c.c.contract_type == int(ContractType.DEFAULT))
            & ck.c.status.in_([KeyStatus.FETCHED.value, KeyStatus.NOT_RETURNED.value])
        )
        | (
            (c.c.contract_type == int(ContractType.RETURN))
            & (ck.c.status.is_(None) | (ck.c.status == KeyStatus.NOT_RETURNED.value))
        ),
    )
    if found is None:
        return
    contract, key = found
    if event.key_id is not None and event.key_id != key.key_id:
        return  # another key in the locker: not this contract's return
    at = event.occurred_at
    contract_steps.set_key(
        session,
        contract.id,
        key,
        status=KeyStatus.RETURNED.value,
        returned_at=at,
        programmed_at=None,
    )
    late = key.status == KeyStatus.NOT_RETURNED
    if contract.contract_type is ContractType.RETURN or late:
        _retire_pincode(session, contract, key)
        core.release(session, contract.id, key.position, at)
        contract_steps.complete_if_done(session, contract.id, at)
    ours = True
    if contract.contract_type is ContractType.RETURN and event.locker_index is not None:
        ours = registry.receive_returned_key(
            session,
            organization_unit_id=contract.organization_unit_id,
            key_id=key.key_id,
            automat_id=event.automat_id,
            locker_index=event.locker_index,
            now=at,
        )
    if ours:
        # Default and return contracts hand back blank keys (C10); the worker wipes them.
        outbox.enqueue(
            session,
            WIPE_KIND,
            {
                "unitId": contract.organization_unit_id,
                "keyId": key.key_id,
                "returnedAt": at.isoformat(),
            },
            now=at,
            ref=f"key:{key.key_id}",
        )
    _publish_status(session, contract, key, KeyStatus.RETURNED, at)
    _notify(session, contract, NotificationType.CONTRACT_KEY_RETURNED, key, at)


# --- end of contract and wiping -----------------------------------------------------------


def evaluate_end(session: Session, contract_id: str, now: datetime) -> int:
    """C12: at ``end``, keys never fetched and keys still out get their status, once."""
    if not contract_steps.claim_end(session, contract_id, now):
        return 0
    contract = load_contract(session, contract_id)
    assert contract.end is not None
    at = contract.end
    contract_steps.lock_automats_of(session, contract.keys)
    changed = 0
    for key in contract.keys:
        outcome = end_outcome(contract.contract_type, key.status, key.in_history)
        if outcome is None:
            if contract.contract_type is ContractType.DEFAULT and not key.in_history:
                _retire_pincode(session, contract, key)  # returned and back in place: done
            continue
        changed += 1
        contract_steps.set_key(session, contract.id, key, status=outcome.value)
        if outcome is KeyStatus.NOT_FETCHED or contract.contract_type is ContractType.RETURN:
            _retire_pincode(session, contract, key)
            core.release(session, contract.id, key.position, at)
        else:
            # Still out: the locker waits for it, and its code opens it for the return.
            core.set_reservation_until(session, contract.id, key.position, OPEN_END)
            contract_steps.reopen_for_return(session, contract, key)
        _publish_status(session, contract, key, outcome, at)
    contract_steps.complete_if_done(session, contract.id, now)
    core.close_ended(session, contract.id, max(now, at))  # the end is reached: it runs now
    return changed


def condition(
    session: Session, view: ContractView, type_: NotificationType
) -> notifications.Condition:
    """Scheduled messages fire only while they still make sense (notifications.md §2)."""
    row = session.execute(
        select(c.c.deleted_at, c.c.contract_type).where(c.c.id == view.contract_id)
    ).first()
    if row is None or row.deleted_at is not None:
        return notifications.Condition(holds=False, reason="contract deleted")
    if type_ is NotificationType.CONTRACT_START_REMINDER:
        return notifications.HOLDS
    ctype = ContractType(row.contract_type)
    keys = session.execute(
        select(ck.c.key_id, ck.c.status, ck.c.in_history).where(
            ck.c.contract_id == view.contract_id
        )
    ).all()
    missing = tuple(k.key_id for k in keys if is_out(ctype, k.status, bool(k.in_history)))
    if not missing:
        return notifications.Condition(holds=False, reason="every key is back")
    return notifications.Condition(holds=True, missing_key_ids=missing)


class ContractJobs:
    """Outbox handlers of the contracts: the end evaluation and wiping returned keys."""

    def __init__(self, db: DatabaseRunner, systems: PortLookup, clock: Clock) -> None:
        self.db = db
        self.systems = systems
        self.clock = clock

    async def aclose(self) -> None:
        """Nothing to close; present like the other outbox handlers' owners."""

    async def end(self, message: OutboxMessage) -> None:
        contract_id = message.payload["contractId"]
        now = self.clock.now()
        await self.db.run(lambda s: evaluate_end(s, contract_id, now))

    async def wipe(self, message: OutboxMessage) -> None:
        key_id = message.payload["keyId"]
        returned_at = datetime.fromisoformat(message.payload["returnedAt"])
        # A key handed out again since its return holds a new contract's rights now.
        reprogrammed = await self.db.run(
            lambda s: (
                s.execute(
                    select(ck.c.contract_id).where(
                        ck.c.key_id == key_id, ck.c.programmed_at > returned_at
                    )
                ).first()
                is not None
            )
        )
        if reprogrammed:
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
