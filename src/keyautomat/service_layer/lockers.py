"""Every write of the ``lockers`` table (docs/persistence.md).

A locker shows what its automat last reported (is a key inside, which one),
corrected by the key registers: the iLOQ registry points a locker at the key
it placed there, the mechanical register names the key a device knew only by
its RFID, and a key that leaves for good is forgotten.

``lockers`` is written on the device-event path, so it is written with Core
statements only, and only through this module; nothing maps it to objects, so
no identity map can hold a stale copy of a locker. The statements that run on
device events are built once, with bind parameters.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.device_protocol import LockerState
from keyautomat.domain.mechanical import device_rfid

lk = orm.lockers

_THIS_LOCKER = (
    lk.c.automat_id == bindparam("b_automat_id"),
    lk.c.locker_index == bindparam("b_locker_index"),
)
_EMPTY = {"key_id": None, "key_name": None, "key_rfid": None, "is_key_inside": False}
_INSERT = insert(lk)
_POINT_AT_KEY = (
    update(lk)
    .where(*_THIS_LOCKER)
    .values(
        key_id=bindparam("b_key_id", type_=lk.c.key_id.type),
        # No name given: the one the device reported stays.
        key_name=func.coalesce(bindparam("b_key_name", type_=lk.c.key_name.type), lk.c.key_name),
        is_key_inside=True,
    )
)
_EMPTY_LOCKER = update(lk).where(*_THIS_LOCKER).values(_EMPTY)
_EMPTY_LOCKER_OF_KEY = (
    update(lk).where(*_THIS_LOCKER, lk.c.key_id == bindparam("b_key_id")).values(_EMPTY)
)
_FORGET_KEY = update(lk).where(lk.c.key_id == bindparam("b_key_id")).values(_EMPTY)


def _changed(result: Any) -> bool:
    return bool(result.rowcount)


def report_key(
    session: Session,
    automat_id: str,
    locker_index: int,
    *,
    inside: bool,
    key_id: str | None,
    key_name: str | None,
    rfid: str | None = None,
) -> None:
    """A device reported a key inserted into (``inside``) or removed from a locker.

    A removed key stays assigned to its locker (``key_id``) with ``is_key_inside``
    false; what happens to the assignment is the contracts' business. A locker
    the automat never reported before is added.
    """
    # The tag read of the key inside; none once the key is out.
    values: dict[str, Any] = {
        "is_key_inside": inside,
        "key_rfid": device_rfid(rfid) if inside else None,
    }
    if key_id is not None:
        values["key_id"] = key_id
        if key_name is not None:
            values["key_name"] = key_name
    result = session.execute(
        update(lk)
        .where(lk.c.automat_id == automat_id, lk.c.locker_index == locker_index)
        .values(values)
    )
    if not _changed(result):
        session.execute(_INSERT, {"automat_id": automat_id, "locker_index": locker_index, **values})


def report_inventory(
    session: Session, automat_id: str, reported: Sequence[LockerState], held: Collection[int]
) -> None:
    """A device reported every locker it has: they become what it reported, except that a
    locker in ``held`` (something still needs it: a contract's reservation or a live
    pincode) is never deleted, and keeps the key assigned to it while its key is out.

    The caller has checked the report (``domain.devices.inventory_problem``)."""
    by_index = {locker.locker_index: locker for locker in reported}
    existing = set(session.scalars(select(lk.c.locker_index).where(lk.c.automat_id == automat_id)))
    for index, locker in by_index.items():
        values: dict[str, Any] = {
            "is_key_inside": locker.key_inside,
            "key_rfid": device_rfid(locker.rfid) if locker.key_inside else None,
        }
        if locker.key_id is not None or index not in held:
            # A key reported missing from a held locker is a fact (it is not inside), but
            # the locker stays assigned to the key its contract waits for.
            values.update(key_id=locker.key_id, key_name=locker.key_name)
        if index in existing:
            session.execute(
                update(lk)
                .where(lk.c.automat_id == automat_id, lk.c.locker_index == index)
                .values(values)
            )
        else:
            session.execute(
                _INSERT,
                {
                    "automat_id": automat_id,
                    "locker_index": index,
                    "key_id": locker.key_id,
                    "key_name": locker.key_name,
                    **values,
                },
            )
    gone = existing - set(by_index) - set(held)
    if gone:
        session.execute(
            delete(lk).where(lk.c.automat_id == automat_id, lk.c.locker_index.in_(gone))
        )


def point_at_key(
    session: Session, automat_id: str, locker_index: int, key_id: str, key_name: str | None
) -> bool:
    """The key is inside this locker: the locker shows its id, and ``key_name`` unless
    that is None (the name the device reported stays). False when there is no such locker."""
    result = session.execute(
        _POINT_AT_KEY,
        {
            "b_automat_id": automat_id,
            "b_locker_index": locker_index,
            "b_key_id": key_id,
            "b_key_name": key_name,
        },
    )
    return _changed(result)


def empty(
    session: Session, automat_id: str, locker_index: int, *, only_if_key: str | None = None
) -> None:
    """Nothing is in the locker any more; with ``only_if_key``, only while it still shows
    that key (a key moving on must not clear a locker another key has taken since)."""
    params = {"b_automat_id": automat_id, "b_locker_index": locker_index}
    if only_if_key is None:
        session.execute(_EMPTY_LOCKER, params)
    else:
        session.execute(_EMPTY_LOCKER_OF_KEY, {**params, "b_key_id": only_if_key})


def forget_key(session: Session, key_id: str) -> None:
    """The key left the automats for good (fetched, or taken by staff): no locker shows it,
    not even as the assignment a removed key keeps."""
    session.execute(_FORGET_KEY, {"b_key_id": key_id})
