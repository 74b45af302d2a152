"""A built-in iLOQ S5 locking system, kept in our database, one per owning organization unit.

It models what keyautomat relies on (docs/iloq.md): real estates, security
accesses (access rights) with their ``api_enabled`` and ``default_access``
flags, persons, keys with the rights and time limits written in them, the
blocklist, and a log of every programming with its time.

Programming follows the iLOQ S5 public API: changes are first *planned* on the
key (``PUT Keys/{id}/SecurityAccesses``) and take effect when the key is
*ordered* (``POST Keys/{id}/Order``), which is the moment the key is written.
``EmulatedSystem`` is that state machine on a session; ``EmulatorIloq`` is the
iLOQ port on top of it, one transaction per call; ``entrypoints.iloq_emulator_http``
serves the same system in the shape of the iLOQ S5 public API.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import IntEnum

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm_iloq as t
from keyautomat.adapters.db import Database
from keyautomat.service_layer.clock import Clock
from keyautomat.service_layer.iloq import (
    AccessRight,
    IloqPermanentError,
    KeyInfo,
    ProgrammingRecord,
    filter_access_rights,
    sort_access_rights,
)

PLANNING = "planning"
PROGRAMMED = "programmed"
PLANNED = "planned"
WRITTEN = "written"


class CanOrder(IntEnum):
    """The subset of iLOQ's ``CanOrderKeyResultType`` the emulator can answer."""

    OK = 0
    WRONG_STATE = 4  # only keys in planning state can be ordered
    BLOCKLISTED = 8
    NO_PERSON = 13


class EmulatedSystem:
    """The locking system owned by ``unit_id``, read and changed through ``session``."""

    def __init__(self, session: Session, unit_id: str) -> None:
        self.session = session
        self.unit_id = unit_id

    # --- set-up (what an installer does in iLOQ Manager) -----------------

    def add_real_estate(
        self,
        name: str,
        *,
        parent_id: str | None = None,
        id: str | None = None,  # noqa: A002
    ) -> str:
        real_estate_id = id or str(uuid.uuid4())
        self.session.execute(
            insert(t.iloq_emu_real_estates).values(
                id=real_estate_id, organization_unit_id=self.unit_id, name=name, parent_id=parent_id
            )
        )
        return real_estate_id

    def add_access_right(
        self,
        name: str,
        *,
        real_estate_id: str | None = None,
        api_enabled: bool = True,
        default_access: bool = False,
        id: str | None = None,  # noqa: A002
    ) -> str:
        right_id = id or str(uuid.uuid4())
        self.session.execute(
            insert(t.iloq_emu_access_rights).values(
                id=right_id,
                organization_unit_id=self.unit_id,
                name=name,
                real_estate_id=real_estate_id,
                api_enabled=api_enabled,
                default_access=default_access,
            )
        )
        return right_id

    def add_person(
        self,
        first_name: str,
        last_name: str,
        *,
        id: str | None = None,  # noqa: A002
        is_default: bool = False,
    ) -> str:
        person_id = id or str(uuid.uuid4())
        self.session.execute(
            insert(t.iloq_emu_persons).values(
                id=person_id,
                organization_unit_id=self.unit_id,
                first_name=first_name,
                last_name=last_name,
                is_default=is_default,
            )
        )
        return person_id

    # --- reading -----------------------------------------------------------

    def real_estates(self) -> list[tuple[str, str, str | None]]:
        """``(id, name, parent_id)`` of every real estate."""
        r = t.iloq_emu_real_estates
        rows = self.session.execute(
            select(r.c.id, r.c.name, r.c.parent_id)
            .where(r.c.organization_unit_id == self.unit_id)
            .order_by(r.c.name, r.c.id)
        ).all()
        return [(row.id, row.name, row.parent_id) for row in rows]

    def real_estate_paths(self) -> dict[str, str]:
        """Each real estate's path from the top, names joined by `` / ``."""
        estates = {rid: (name, parent) for rid, name, parent in self.real_estates()}
        return {rid: real_estate_path(estates, rid) for rid in estates}

    def access_rights(self) -> list[tuple[AccessRight, str | None]]:
        """Every access right with its real-estate id."""
        a = t.iloq_emu_access_rights
        paths = self.real_estate_paths()
        rows = self.session.execute(select(a).where(a.c.organization_unit_id == self.unit_id)).all()
        rights = [
            (
                AccessRight(
                    id=row.id,
                    name=row.name,
                    real_estate_path=paths.get(row.real_estate_id) if row.real_estate_id else None,
                    default_access=row.default_access,
                    api_enabled=row.api_enabled,
                ),
                row.real_estate_id,
            )
            for row in rows
        ]
        order = {r.id: i for i, r in enumerate(sort_access_rights(r for r, _ in rights))}
        return sorted(rights, key=lambda pair: order[pair[0].id])

    def key(self, key_id: str) -> KeyInfo | None:
        k = t.iloq_emu_keys
        row = self.session.execute(
            select(k).where(k.c.organization_unit_id == self.unit_id, k.c.id == key_id)
        ).first()
        if row is None:
            return None
        return KeyInfo(
            id=row.id,
            name=row.description,
            person_id=row.person_id,
            access_right_ids=tuple(self._rights_of(key_id, WRITTEN)),
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            blocked=self.is_blocklisted(key_id),
            programmed_at=row.programmed_at,
        )

    def all_keys(self) -> list[KeyInfo]:
        k = t.iloq_emu_keys
        ids = self.session.scalars(
            select(k.c.id).where(k.c.organization_unit_id == self.unit_id).order_by(k.c.id)
        ).all()
        return [info for key_id in ids if (info := self.key(key_id)) is not None]

    def key_state(self, key_id: str) -> str | None:
        """``planning`` while changes wait for an order, else ``programmed``."""
        k = t.iloq_emu_keys
        return self.session.scalar(
            select(k.c.state).where(k.c.organization_unit_id == self.unit_id, k.c.id == key_id)
        )

    def planned_rights(self, key_id: str) -> list[str]:
        return self._rights_of(key_id, PLANNED)

    def is_blocklisted(self, key_id: str) -> bool:
        b = t.iloq_emu_blocklist
        return (
            self.session.scalar(
                select(b.c.key_id).where(
                    b.c.organization_unit_id == self.unit_id, b.c.key_id == key_id
                )
            )
            is not None
        )

    def blocklist(self) -> list[str]:
        b = t.iloq_emu_blocklist
        return list(
            self.session.scalars(
                select(b.c.key_id)
                .where(b.c.organization_unit_id == self.unit_id)
                .order_by(b.c.added_at, b.c.key_id)
            )
        )

    def log(self, key_id: str | None = None) -> list[ProgrammingRecord]:
        lg = t.iloq_emu_programming_log
        stmt = select(lg).where(lg.c.organization_unit_id == self.unit_id)
        if key_id is not None:
            stmt = stmt.where(lg.c.key_id == key_id)
        return [
            ProgrammingRecord(
                key_id=row.key_id,
                action=row.action,
                access_right_ids=tuple(row.access_right_ids.split()),
                person_id=row.person_id,
                valid_from=row.valid_from,
                valid_until=row.valid_until,
                at=row.at,
            )
            for row in self.session.execute(stmt.order_by(lg.c.id))
        ]

    def default_person_id(self) -> str:
        """The person keys are registered to when no ``iloqPersonId`` is given (C18)."""
        p = t.iloq_emu_persons
        found = self.session.scalar(
            select(p.c.id).where(p.c.organization_unit_id == self.unit_id, p.c.is_default)
        )
        return found or self.add_person("keyautomat", "handover", is_default=True)

    # --- changing keys ---------------------------------------------------

    def create_key(self, key_id: str, description: str, now: datetime) -> KeyInfo:
        if self.key(key_id) is not None:
            raise IloqPermanentError(f"key {key_id} already exists")
        self.session.execute(
            insert(t.iloq_emu_keys).values(
                organization_unit_id=self.unit_id,
                id=key_id,
                description=description,
                state=PROGRAMMED,  # a blank key holds exactly what it was enrolled with: nothing
                created_at=now,
            )
        )
        created = self.key(key_id)
        assert created is not None
        return created

    def assign_person(self, key_id: str, person_id: str | None) -> None:
        """Register the key to a person at its next order; None means the default person (C18)."""
        self._require_key(key_id)
        self._update_key(key_id, planned_person_id=self._person(person_id))

    def plan(
        self,
        key_id: str,
        access_right_ids: Sequence[str],
        *,
        valid_from: datetime | None,
        valid_until: datetime | None,
    ) -> None:
        """Stage rights and time limits on the key; nothing is written until ``order``."""
        self._require_key(key_id)
        if self.is_blocklisted(key_id):
            raise IloqPermanentError(f"key {key_id} is blocklisted and cannot be changed")
        if valid_from and valid_until and valid_until <= valid_from:
            raise IloqPermanentError("the end time limit must be after the start time limit")
        wanted = list(dict.fromkeys(access_right_ids))
        known = {r.id: r for r, _ in self.access_rights()}
        for right_id in wanted:
            right = known.get(right_id)
            if right is None:
                raise IloqPermanentError(f"access right {right_id} does not exist")
            if not right.api_enabled:
                raise IloqPermanentError(
                    f"access right {right_id} is not enabled for the public API"
                )
        r = t.iloq_emu_key_rights
        self.session.execute(
            delete(r).where(
                r.c.organization_unit_id == self.unit_id, r.c.key_id == key_id, r.c.kind == PLANNED
            )
        )
        if wanted:
            self.session.execute(
                insert(r),
                [
                    {
                        "organization_unit_id": self.unit_id,
                        "key_id": key_id,
                        "access_right_id": right_id,
                        "kind": PLANNED,
                    }
                    for right_id in wanted
                ],
            )
        self._update_key(
            key_id, state=PLANNING, planned_valid_from=valid_from, planned_valid_until=valid_until
        )

    def can_order(self, key_id: str) -> CanOrder:
        self._require_key(key_id)
        if self.is_blocklisted(key_id):
            return CanOrder.BLOCKLISTED
        k = t.iloq_emu_keys
        row = self.session.execute(
            select(k.c.state, k.c.person_id, k.c.planned_person_id).where(
                k.c.organization_unit_id == self.unit_id, k.c.id == key_id
            )
        ).one()
        if row.state != PLANNING:
            return CanOrder.WRONG_STATE
        if row.planned_person_id is None and row.person_id is None:
            return CanOrder.NO_PERSON
        return CanOrder.OK

    def order(self, key_id: str, now: datetime) -> KeyInfo:
        """Write the planned changes into the key and log the programming with its time."""
        verdict = self.can_order(key_id)
        if verdict is not CanOrder.OK:
            raise IloqPermanentError(f"key {key_id} cannot be ordered ({verdict.name.lower()})")
        k, r = t.iloq_emu_keys, t.iloq_emu_key_rights
        row = self.session.execute(
            select(k).where(k.c.organization_unit_id == self.unit_id, k.c.id == key_id)
        ).one()
        rights = self._rights_of(key_id, PLANNED)
        person = row.planned_person_id or row.person_id
        mine = (r.c.organization_unit_id == self.unit_id) & (r.c.key_id == key_id)
        self.session.execute(delete(r).where(mine, r.c.kind == WRITTEN))
        self.session.execute(update(r).where(mine, r.c.kind == PLANNED).values(kind=WRITTEN))
        self._update_key(
            key_id,
            state=PROGRAMMED,
            person_id=person,
            valid_from=row.planned_valid_from,
            valid_until=row.planned_valid_until,
            planned_person_id=None,
            planned_valid_from=None,
            planned_valid_until=None,
            programmed_at=now,
        )
        self._write_log(
            key_id,
            "program" if rights else "wipe",
            rights,
            person,
            row.planned_valid_from,
            row.planned_valid_until,
            now,
        )
        written = self.key(key_id)
        assert written is not None
        return written

    def program(
        self,
        key_id: str,
        access_right_ids: Sequence[str],
        *,
        valid_from: datetime | None,
        valid_until: datetime | None,
        person_id: str | None,
        now: datetime,
    ) -> KeyInfo:
        self.assign_person(key_id, person_id)
        self.plan(key_id, access_right_ids, valid_from=valid_from, valid_until=valid_until)
        return self.order(key_id, now)

    def wipe(self, key_id: str, now: datetime) -> KeyInfo:
        """Erase rights and time limits; the key stays registered to its person."""
        self.plan(key_id, [], valid_from=None, valid_until=None)
        return self.order(key_id, now)

    def can_blocklist(self, key_id: str) -> bool:
        """As in iLOQ: a key already listed, or holding no rights, cannot be added."""
        info = self.key(key_id)
        if info is None:
            raise IloqPermanentError(f"key {key_id} does not exist in the locking system")
        return not info.blocked and not info.is_blank

    def add_to_blocklist(self, key_id: str, now: datetime) -> None:
        """Blocklist a key that holds rights (a lost or stolen one); listing twice is a no-op."""
        if self.is_blocklisted(key_id):
            return
        if not self.can_blocklist(key_id):
            raise IloqPermanentError(f"key {key_id} holds no access rights to block")
        self.session.execute(
            insert(t.iloq_emu_blocklist).values(
                organization_unit_id=self.unit_id, key_id=key_id, added_at=now
            )
        )
        self._write_log(key_id, "blocklist", [], None, None, None, now)

    # --- helpers -------------------------------------------------------------

    def _require_key(self, key_id: str) -> None:
        k = t.iloq_emu_keys
        found = self.session.scalar(
            select(k.c.id).where(k.c.organization_unit_id == self.unit_id, k.c.id == key_id)
        )
        if found is None:
            raise IloqPermanentError(f"key {key_id} does not exist in the locking system")

    def _person(self, person_id: str | None) -> str:
        if person_id is None:
            return self.default_person_id()
        p = t.iloq_emu_persons
        found = self.session.scalar(
            select(p.c.id).where(p.c.organization_unit_id == self.unit_id, p.c.id == person_id)
        )
        # A real system already knows the person the integrator names (it got the id
        # from iLOQ); the emulator has never met them, so it enrols them on first use.
        return found or self.add_person("iLOQ", "person", id=person_id)

    def _rights_of(self, key_id: str, kind: str) -> list[str]:
        r = t.iloq_emu_key_rights
        return list(
            self.session.scalars(
                select(r.c.access_right_id)
                .where(
                    r.c.organization_unit_id == self.unit_id, r.c.key_id == key_id, r.c.kind == kind
                )
                .order_by(r.c.access_right_id)
            )
        )

    def _update_key(self, key_id: str, **values: object) -> None:
        k = t.iloq_emu_keys
        self.session.execute(
            update(k)
            .where(k.c.organization_unit_id == self.unit_id, k.c.id == key_id)
            .values(**values)
        )

    def _write_log(
        self,
        key_id: str,
        action: str,
        rights: Sequence[str],
        person_id: str | None,
        valid_from: datetime | None,
        valid_until: datetime | None,
        now: datetime,
    ) -> None:
        self.session.execute(
            insert(t.iloq_emu_programming_log).values(
                organization_unit_id=self.unit_id,
                key_id=key_id,
                action=action,
                access_right_ids=" ".join(rights),
                person_id=person_id,
                valid_from=valid_from,
                valid_until=valid_until,
                at=now,
            )
        )


def real_estate_path(estates: dict[str, tuple[str, str | None]], real_estate_id: str) -> str:
    """``"Top / Middle / Leaf"``; a cycle or a missing parent ends the walk."""
    names: list[str] = []
    seen: set[str] = set()
    current: str | None = real_estate_id
    while current is not None and current in estates and current not in seen:
        seen.add(current)
        name, parent = estates[current]
        names.append(name)
        current = parent
    return " / ".join(reversed(names))


class EmulatorIloq:
    """The iLOQ port on the emulated system of ``unit_id``: one transaction per call."""

    def __init__(self, db: Database, unit_id: str, clock: Clock) -> None:
        self.db = db
        self.unit_id = unit_id
        self.clock = clock

    def _system(self, session: Session) -> EmulatedSystem:
        return EmulatedSystem(session, self.unit_id)

    async def list_access_rights(
        self, *, search: str | None = None, default_only: bool = False
    ) -> list[AccessRight]:
        rights = await self.db.run(lambda s: [r for r, _ in self._system(s).access_rights()])
        return filter_access_rights(rights, search=search, default_only=default_only)

    async def get_key(self, key_id: str) -> KeyInfo | None:
        return await self.db.run(lambda s: self._system(s).key(key_id))

    async def create_key(self, *, key_id: str, name: str) -> KeyInfo:
        now = self.clock.now()
        return await self.db.run(lambda s: self._system(s).create_key(key_id, name, now))

    async def program_key(
        self,
        key_id: str,
        access_right_ids: Sequence[str],
        *,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        person_id: str | None = None,
    ) -> KeyInfo:
        now = self.clock.now()
        return await self.db.run(
            lambda s: self._system(s).program(
                key_id,
                access_right_ids,
                valid_from=valid_from,
                valid_until=valid_until,
                person_id=person_id,
                now=now,
            )
        )

    async def wipe_key(self, key_id: str) -> KeyInfo:
        now = self.clock.now()
        return await self.db.run(lambda s: self._system(s).wipe(key_id, now))

    async def blocklist_key(self, key_id: str) -> None:
        now = self.clock.now()
        await self.db.run(lambda s: self._system(s).add_to_blocklist(key_id, now))

    async def programming_log(self, key_id: str | None = None) -> list[ProgrammingRecord]:
        return await self.db.run(lambda s: self._system(s).log(key_id))
