"""The console's virtual automat: which automats are simulated, and who pressed what there
(docs/console.md, "The virtual automat"; docs/device-protocol.md §11).

An automat is simulated when the server was told so, never because of what a device
says about itself (a ``hello``'s ``firmware`` could claim anything): the demo
automats that ``serve --demo`` simulates in its own process are marked at start,
and an admin may mark any automat of its subtree. Only a simulated automat has a
keypad page, and only its hwId is ever sent keypad instructions; every key pressed
is recorded here first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.orm_console import console_audit
from keyautomat.domain.errors import NotFound
from keyautomat.domain.ids import new_object_id
from keyautomat.domain.model import LifecycleState
from keyautomat.service_layer.automats import get_automat
from keyautomat.service_layer.principal import Principal, in_scope

a = orm.automats
PRESS = "keypad.press"
MASK = "\u2022"
RECENT_PRESSES = 10
TYPING_GAP = timedelta(seconds=30)
MAX_KEYS_A_LINE = 32


@dataclass(frozen=True, slots=True)
class KeypadTarget:
    """A simulated automat the caller may see: where its simulator listens."""

    automat_id: str
    name: str
    label: str | None
    timezone: str
    lifecycle_state: str
    hw_id: str | None  # None until hardware (its simulator) has bound


@dataclass(frozen=True, slots=True)
class Press:
    at: datetime
    user_email: str
    keys: str  # digits masked


def keypad_target(session: Session, principal: Principal, automat_id: str) -> KeypadTarget:
    """The simulated automat ``automat_id`` of the caller's subtree; NotFound for any other
    (another unit's, a real one, an uninstalled one), so the answer tells nothing more."""
    row = session.execute(
        select(a.c.id, a.c.name, a.c.label, a.c.timezone, a.c.lifecycle_state, a.c.hw_id).where(
            a.c.id == automat_id,
            a.c.simulated.is_(True),
            a.c.lifecycle_state != LifecycleState.DEACTIVATED,
            in_scope(a.c.organization_unit_id, principal),
        )
    ).first()
    if row is None:
        raise NotFound("Automat")
    return KeypadTarget(row.id, row.name, row.label, row.timezone, row.lifecycle_state, row.hw_id)


def is_simulated(session: Session, principal: Principal, automat_id: str) -> bool:
    automat = get_automat(session, principal, automat_id)
    return bool(session.scalar(select(a.c.simulated).where(a.c.id == automat.id)))


def set_simulated(session: Session, principal: Principal, automat_id: str, simulated: bool) -> None:
    """An admin says that a simulator stands for the automat (or no longer does)."""
    principal.require_admin()
    automat = get_automat(session, principal, automat_id)
    session.execute(update(a).where(a.c.id == automat.id).values(simulated=simulated))


def mark_simulated(session: Session, automat_ids: Iterable[str]) -> None:
    """The automats this process simulates itself (``serve --demo``) are simulated."""
    ids = list(automat_ids)
    if ids:
        session.execute(update(a).where(a.c.id.in_(ids)).values(simulated=True))


def masked(keys: str) -> str:
    """The keys as the audit keeps them: digits masked, ``*`` and ``#`` as pressed."""
    return "".join(MASK if key.isdigit() else key for key in keys)


def record_press(
    session: Session,
    principal: Principal,
    email: str,
    target: KeypadTarget,
    keys: str,
    now: datetime,
) -> None:
    """Audit a press before it is sent: operators and admins only."""
    principal.require_operator()
    session.execute(
        insert(console_audit).values(
            id=new_object_id(),
            at=now,
            user_id=principal.service_account_id,
            user_email=email,
            organization_unit_id=principal.organization_unit_id,
            automat_id=target.automat_id,
            action=PRESS,
            detail=masked(keys),
        )
    )


def recent_presses(
    session: Session, target: KeypadTarget, limit: int = RECENT_PRESSES
) -> list[Press]:
    """The latest presses at the automat, newest first, whoever pressed (the page shows
    everyone who may see the automat who typed there). Keys one user pressed in a row,
    each within ``TYPING_GAP`` of the one before, are one line: a code as it was typed."""
    rows = session.execute(
        select(console_audit.c.at, console_audit.c.user_email, console_audit.c.detail)
        .where(console_audit.c.automat_id == target.automat_id, console_audit.c.action == PRESS)
        .order_by(console_audit.c.at.desc(), console_audit.c.id.desc())
        .limit(limit * MAX_KEYS_A_LINE)
    ).all()
    lines: list[Press] = []
    for row in reversed(rows):
        last = lines[-1] if lines else None
        if (
            last is not None
            and last.user_email == row.user_email
            and row.at - last.at <= TYPING_GAP
            and len(last.keys) < MAX_KEYS_A_LINE
        ):
            lines[-1] = Press(row.at, row.user_email, last.keys + row.detail)
        else:
            lines.append(Press(row.at, row.user_email, row.detail))
    return lines[::-1][:limit]
