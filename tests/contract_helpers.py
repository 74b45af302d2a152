"""Builders for contract tests: active key20 automats with keys in lockers, seeded directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.iloq.emulator import EmulatedSystem
from keyautomat.adapters.orm_contracts import contract_keys
from keyautomat.adapters.orm_iloq import iloq_emu_access_rights
from keyautomat.bootstrap import Container
from keyautomat.domain.model import LifecycleState
from keyautomat.domain.times import format_utc
from tests.conftest import Tenant
from tests.devices import install

RIGHT = "fdef8481-98ad-42b8-b4b6-4eade261e281"


def grant_access_right(container: Container, unit_id: str, right_id: str = RIGHT) -> None:
    """Make ``right_id`` an API-enabled right of the emulated system owned by ``unit_id``."""
    rights = iloq_emu_access_rights

    def work(session: Session) -> None:
        if session.scalar(select(rights.c.id).where(rights.c.id == right_id)) is None:
            EmulatedSystem(session, unit_id).add_access_right("Main door", id=right_id)

    container.db.transaction(work)


def stocked_automat(
    container: Container, tenant: Tenant, *, keys: int = 3, empty: int = 2, name: str = "A1"
) -> tuple[str, list[str]]:
    """An active key20 automat with ``keys`` keys in lockers 0.. and ``empty`` empty lockers,
    in a unit whose locking system offers ``RIGHT``."""
    grant_access_right(container, tenant.unit_id)
    automat = install(tenant, name=name)
    key_ids = [str(uuid.uuid4()) for _ in range(keys)]

    def work(session: Session) -> None:
        session.execute(
            update(orm.automats)
            .where(orm.automats.c.id == automat["id"])
            .values(lifecycle_state=LifecycleState.ACTIVE, hw_id=f"HW-{automat['id']}")
        )
        rows: list[dict[str, Any]] = [
            {
                "automat_id": automat["id"],
                "locker_index": i,
                "is_key_inside": i < keys,
                "key_id": key_ids[i] if i < keys else None,
                "key_name": key_ids[i][:7].upper() if i < keys else None,
            }
            for i in range(keys + empty)
        ]
        session.execute(insert(orm.lockers), rows)

    container.db.transaction(work)
    return automat["id"], key_ids


def group_of(tenant: Tenant, automat_ids: list[str]) -> str:
    """A new device group of the tenant's holding ``automat_ids``; its id."""
    group = tenant.api.post("/groups", {"name": "G", "type": 1, "customerId": "g"})
    for automat_id in automat_ids:
        tenant.api.patch(f"/automats/{automat_id}", {"groups": [group["id"]]})
    return str(group["id"])


def booked_keys(container: Container) -> tuple[int, int, int]:
    """Keys booked by contracts, distinct keys among them, distinct lockers among them: all
    three equal when nothing is booked twice."""
    k = contract_keys

    def work(session: Session) -> tuple[int, int, int]:
        booked, keys = session.execute(
            select(func.count(), func.count(func.distinct(k.c.key_id)))
        ).one()
        lockers = select(k.c.automat_id, k.c.locker_index).distinct().subquery()
        distinct_lockers = session.scalar(select(func.count()).select_from(lockers)) or 0
        return int(booked), int(keys), int(distinct_lockers)

    return container.db.transaction(work)


def default_contract(automat_id: str, **extra: Any) -> dict[str, Any]:
    """A valid iLOQ default-contract body for one key of ``automat_id``, ``extra`` on top."""
    start, end = period()
    body = {
        "contractType": 1,
        "accessRightIds": [RIGHT],
        "numberOfKeys": 1,
        "keyAutomatId": automat_id,
        "start": start,
        "end": end,
    }
    body.update(extra)
    return {"input": body}


def period(hours_from_now: float = -1, length_hours: float = 48) -> tuple[str, str]:
    start = datetime.now(UTC) + timedelta(hours=hours_from_now)
    end = start + timedelta(hours=length_hours)
    return iso(start), iso(end)


def iso(value: datetime) -> str:
    return format_utc(value)
