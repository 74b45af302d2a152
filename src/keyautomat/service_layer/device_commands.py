"""Device commands handed from an API process to the gateway holding the device.

An API process that does not hold a device's lease writes the command here and
notifies :data:`COMMAND_CHANNEL`; the gateway holding the device claims it (once),
runs it and writes its answer, notifying :data:`ANSWER_CHANNEL`. The API process
reads the answer and deletes the row. The code travels encrypted with the secret
key, and no row outlives its deadline by more than a pruning interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, bindparam, delete, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters.db import notify
from keyautomat.adapters.orm_devices import device_commands

# PostgreSQL channels: "<command id>:<hwId>" to the gateways, "<command id>" back.
COMMAND_CHANNEL = "keyautomat_command"
ANSWER_CHANNEL = "keyautomat_answer"


class CommandKind(StrEnum):
    SEND = "send"
    CANCEL = "cancel"


# The answer of a cancel, which has no result of its own (gaps.md D7).
CANCELLED = "CANCELLED"
# The answer of a send that went out and was acknowledged; a failure is its reason.
SENT = "SENT"
# What the caller reads when no gateway claimed the command in time (it is withdrawn),
# or the row is gone: nobody will answer.
UNANSWERED = "UNANSWERED"


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    automat_id: str
    hw_id: str
    kind: CommandKind
    sealed_code: str
    proximity: bool


_CLAIM = (
    update(device_commands)
    .where(
        device_commands.c.id == bindparam("b_id"),
        device_commands.c.claimed_by.is_(None),
        device_commands.c.expires_at > bindparam("b_now", type_=device_commands.c.expires_at.type),
    )
    .values(claimed_by=bindparam("b_gateway_id"))
    .returning(
        device_commands.c.id,
        device_commands.c.automat_id,
        device_commands.c.hw_id,
        device_commands.c.kind,
        device_commands.c.code,
        device_commands.c.proximity,
    )
)
_ANSWER = (
    update(device_commands)
    .where(device_commands.c.id == bindparam("b_id"))
    .values(answer=bindparam("b_answer"))
)
_READ_ANSWER = select(
    device_commands.c.answer, device_commands.c.claimed_by, device_commands.c.expires_at
).where(device_commands.c.id == bindparam("id"))
_WITHDRAW = (
    delete(device_commands)
    .where(device_commands.c.id == bindparam("id"), device_commands.c.claimed_by.is_(None))
    .returning(device_commands.c.id)
)
_FORGET = delete(device_commands).where(device_commands.c.id == bindparam("id"))


def issue(session: Session, command: Command, expires_at: datetime) -> None:
    """Queue the command for the device's gateway, which must claim it before
    ``expires_at``, and wake the gateways at the commit."""
    session.execute(
        device_commands.insert().values(
            id=command.id,
            automat_id=command.automat_id,
            hw_id=command.hw_id,
            kind=command.kind.value,
            code=command.sealed_code,
            proximity=command.proximity,
            expires_at=expires_at,
        )
    )
    notify(session, COMMAND_CHANNEL, f"{command.id}:{command.hw_id}")


def claim(session: Session, command_id: str, gateway_id: str, now: datetime) -> Command | None:
    """The command, now this gateway's to run; None when another claimed it or it expired."""
    row = session.execute(
        _CLAIM, {"b_id": command_id, "b_gateway_id": gateway_id, "b_now": now}
    ).first()
    if row is None:
        return None
    return Command(
        row.id, row.automat_id, row.hw_id, CommandKind(row.kind), row.code, row.proximity
    )


def answer(session: Session, command_id: str, outcome: str) -> None:
    """Record the outcome and wake the API process waiting for it (a no-op once it gave up)."""
    session.execute(_ANSWER, {"b_id": command_id, "b_answer": outcome})
    notify(session, ANSWER_CHANNEL, command_id)


def answer_of(session: Session, command_id: str, now: datetime) -> str | None:
    """The command's answer; :data:`UNANSWERED` when nobody claimed it before its deadline
    (it is withdrawn, so that no gateway runs it later) or it is gone; None while waiting."""
    row = session.execute(_READ_ANSWER, {"id": command_id}).first()
    if row is None:
        return UNANSWERED
    if row.answer is not None:
        return str(row.answer)
    unclaimed_too_long = row.claimed_by is None and row.expires_at <= now
    if unclaimed_too_long and session.execute(_WITHDRAW, {"id": command_id}).first() is not None:
        return UNANSWERED
    return None


def forget(session: Session, command_id: str) -> None:
    session.execute(_FORGET, {"id": command_id})


def waiting(session: Session, now: datetime) -> list[tuple[str, str]]:
    """(id, hwId) of commands nobody has claimed yet, e.g. while a gateway reconnected."""
    rows = session.execute(
        select(device_commands.c.id, device_commands.c.hw_id).where(
            and_(device_commands.c.claimed_by.is_(None), device_commands.c.expires_at > now)
        )
    )
    return [(row.id, row.hw_id) for row in rows]


def prune(session: Session, before: datetime) -> int:
    """Delete commands whose deadline passed before ``before`` (their caller gave up)."""
    result = session.execute(delete(device_commands).where(device_commands.c.expires_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]
