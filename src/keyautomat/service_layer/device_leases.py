"""Device leases: which gateway process handles each device (docs/deployment.md).

Every gateway subscribes to every device's ``up`` topic and handles a device only
while it holds the device's lease, so that one device's messages are applied by
one process, in order. A lease is taken when it is free or lapsed, renewed in
one statement for all of a gateway's devices, and given up at a clean stop.
Lapsed leases are deleted soon after, so hwIds that only ever sent junk leave
nothing behind for long.

MQTT shared subscriptions would spread one device's messages over the gateways
message by message, which loses their order; hence leases.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from keyautomat.adapters.db import notify
from keyautomat.adapters.orm_devices import device_leases

# PostgreSQL channel: the id of a gateway that gave up its leases, so that the other
# gateways stop taking its devices for held and take them at their next message.
RELEASED_CHANNEL = "keyautomat_leases_released"

_RENEW = (
    update(device_leases)
    .where(
        device_leases.c.gateway_id == bindparam("b_gateway_id"),
        device_leases.c.hw_id.in_(bindparam("b_hw_ids", expanding=True)),
    )
    .values(expires_at=bindparam("b_expires_at", type_=device_leases.c.expires_at.type))
    .returning(device_leases.c.hw_id)
)
_HOLDER = select(device_leases.c.gateway_id, device_leases.c.expires_at).where(
    device_leases.c.hw_id == bindparam("hw_id")
)
_claims: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Lease:
    hw_id: str
    gateway_id: str
    expires_at: datetime


def _claim_statement(session: Session) -> Any:
    """Take the lease when nobody holds it, it has lapsed, or it is already ours."""
    dialect = session.get_bind().dialect.name
    stmt = _claims.get(dialect)
    if stmt is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        new = insert(device_leases)
        now = bindparam("now", type_=device_leases.c.expires_at.type)
        stmt = new.on_conflict_do_update(
            index_elements=[device_leases.c.hw_id],
            set_={
                "gateway_id": new.excluded.gateway_id,
                "expires_at": new.excluded.expires_at,
            },
            where=(device_leases.c.expires_at <= now)
            | (device_leases.c.gateway_id == new.excluded.gateway_id),
        ).returning(device_leases.c.gateway_id)
        _claims[dialect] = stmt
    return stmt


def claim(
    session: Session, hw_id: str, gateway_id: str, now: datetime, length: timedelta
) -> Lease | None:
    """The device's lease after trying to take it: ours, or the holder's that stands;
    None in the rare case that the holder let go between the two statements, twice."""
    expires_at = now + length
    values = {"hw_id": hw_id, "gateway_id": gateway_id, "expires_at": expires_at, "now": now}
    for _attempt in range(2):
        if session.execute(_claim_statement(session), values).first() is not None:
            return Lease(hw_id, gateway_id, expires_at)
        holder = session.execute(_HOLDER, {"hw_id": hw_id}).first()
        if holder is not None:
            return Lease(hw_id, holder.gateway_id, holder.expires_at)
    return None


def renew(
    session: Session, gateway_id: str, now: datetime, length: timedelta, hw_ids: Collection[str]
) -> set[str]:
    """Extend the gateway's leases on ``hw_ids``; those it still held. A lease that lapsed
    and was taken by another gateway is not among them any more."""
    if not hw_ids:
        return set()
    rows = session.execute(
        _RENEW,
        {"b_gateway_id": gateway_id, "b_expires_at": now + length, "b_hw_ids": list(hw_ids)},
    )
    return {row.hw_id for row in rows}


def release(session: Session, gateway_id: str, hw_ids: Collection[str] | None = None) -> int:
    """Give up the gateway's leases on ``hw_ids``, or all of them (a clean stop, the broker
    lost; announced, so that other gateways take the devices at their next message)."""
    stmt = delete(device_leases).where(device_leases.c.gateway_id == gateway_id)
    if hw_ids is not None:
        if not hw_ids:
            return 0
        stmt = stmt.where(device_leases.c.hw_id.in_(list(hw_ids)))
    result = session.execute(stmt)
    if hw_ids is None:
        notify(session, RELEASED_CHANNEL, gateway_id)
    return int(result.rowcount)  # type: ignore[attr-defined]


def clear(session: Session) -> int:
    """Forget every lease: on SQLite, where the process starting is the only gateway, the
    leases of one that died must not keep its devices for their remaining time."""
    result = session.execute(delete(device_leases))
    return int(result.rowcount)  # type: ignore[attr-defined]


def prune(session: Session, before: datetime) -> int:
    """Delete leases that lapsed before ``before`` (their gateway is gone)."""
    result = session.execute(delete(device_leases).where(device_leases.c.expires_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]
