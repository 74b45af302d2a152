"""The emulated locking systems served in the shape of the iLOQ S5 public API (``/api/v2``).

It answers the calls that ``s5_client.IloqS5Client`` makes (docs/iloq.md lists
them), so the client is tested against a real HTTP server. A session is
created with the customer code, user name and password of an organization
unit's ``iloqApiUser``; that unit's emulated system then serves the session.
Errors carry iLOQ's ``{"Message": ...}`` body. One extension that a real
system does not have, ``GET /api/v2/emulator/ProgrammingLog``, exposes the
programming log for tests and demonstrations.

Run on its own port with ``create_emulator_app(container)`` and uvicorn.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.iloq.emulator import PLANNING, EmulatedSystem
from keyautomat.bootstrap import Container
from keyautomat.domain.times import format_utc
from keyautomat.service_layer.iloq import IloqPermanentError, KeyInfo

T = TypeVar("T")
SESSION_SECONDS = 30 * 60
# iLOQ's key State is an enum the public documentation does not spell out;
# the emulator uses its own two values and nothing depends on them.
STATE_NUMBER = {PLANNING: 1, "programmed": 2}


class EmulatorError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class EmulatorSession:
    unit_id: str
    lock_group_id: str | None
    expires: float


def iloq_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return format_utc(value)


def parse_iloq_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:  # iLOQ sends local times without offset; the emulator reads UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class GetUrlParam(Body):
    customer_code: str = Field(alias="CustomerCode")


class CreateSessionParam(Body):
    customer_code: str = Field(alias="CustomerCode")
    user_name: str = Field(alias="UserName")
    password: str = Field(alias="Password")


class SetLockGroupParam(Body):
    lock_group_id: str = Field(alias="LockGroup_ID")


class KeyFields(Body):
    fnkey_id: str | None = Field(default=None, alias="FNKey_ID")
    description: str | None = Field(default=None, alias="Description")
    person_id: str | None = Field(default=None, alias="Person_ID")


class KeyParam(Body):
    key: KeyFields = Field(alias="Key")


class TimeLimitSlot(Body):
    slot_no: int = Field(alias="SlotNo")
    limit_date: str | None = Field(default=None, alias="LimitDateLg")


class UpdateSecurityAccessesParam(Body):
    security_access_ids: list[str] = Field(default_factory=list, alias="SecurityAccessIds")
    time_limit_slots: list[TimeLimitSlot] = Field(default_factory=list, alias="TimeLimitSlots")


def key_json(info: KeyInfo, state: str) -> dict[str, Any]:
    return {
        "FNKey_ID": info.id,
        "Description": info.name,
        "Person_ID": info.person_id,
        "RealEstate_ID": None,
        "State": STATE_NUMBER.get(state, 0),
        "ExpireDate": iloq_time(info.valid_until),
        "InfoText": "",
        "ROM_ID": None,
    }


@dataclass
class EmulatorState:
    container: Container
    sessions: dict[str, EmulatorSession] = field(default_factory=dict)

    async def on_system(self, unit_id: str, work: Callable[[EmulatedSystem], T]) -> T:
        return await self.container.db.run(lambda s: work(EmulatedSystem(s, unit_id)))

    def session(self, session_id: str | None) -> EmulatorSession:
        found = self.sessions.get(session_id or "")
        if found is None or found.expires < time.monotonic():
            raise EmulatorError(401, "Session is not valid")
        found.expires = time.monotonic() + SESSION_SECONDS
        return found


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


State = Annotated[EmulatorState, Depends(_state)]
SessionHeader = Annotated[str | None, Header(alias="SessionId")]


def _unit(state: State, session_id: SessionHeader = None) -> str:
    """The unit whose system the session serves; the lock group must be chosen first."""
    found = state.session(session_id)
    if found.lock_group_id is None:
        raise EmulatorError(401, "Lock group has not been set for the session")
    return found.unit_id


Unit = Annotated[str, Depends(_unit)]
router = APIRouter(prefix="/api/v2")


def create_emulator_app(container: Container) -> FastAPI:
    """A FastAPI app serving every emulated system of ``container``'s database."""
    app = FastAPI(title="keyautomat iLOQ S5 emulator", openapi_url=None, docs_url=None)
    app.state.emulator = EmulatorState(container)
    app.include_router(router)

    @app.exception_handler(EmulatorError)
    async def _emulator_error(_request: Request, exc: EmulatorError) -> JSONResponse:
        return JSONResponse({"Message": exc.message}, status_code=exc.status)

    @app.exception_handler(IloqPermanentError)
    async def _refused(_request: Request, exc: IloqPermanentError) -> JSONResponse:
        status = 404 if "does not exist in the locking system" in str(exc) else 400
        return JSONResponse({"Message": str(exc)}, status_code=status)

    return app


def _units_with_code(session: Session, customer_code: str) -> list[Any]:
    ou = orm.organization_units
    return list(
        session.execute(
            select(ou.c.id, ou.c.iloq_username, ou.c.iloq_password_encrypted).where(
                ou.c.iloq_customer_code == customer_code
            )
        ).all()
    )


def _lock_group_id(unit_id: str) -> str:
    return f"lockgroup-{unit_id}"


@router.post("/Url/GetUrl")
async def get_url(body: GetUrlParam, request: Request, state: State) -> str:
    """The customer's own base URL: this server when it knows the customer code."""
    known = await state.container.db.run(lambda s: _units_with_code(s, body.customer_code))
    return str(request.base_url).rstrip("/") if known else ""


@router.post("/CreateSession")
async def create_session(body: CreateSessionParam, state: State) -> dict[str, Any]:
    candidates = await state.container.db.run(lambda s: _units_with_code(s, body.customer_code))
    for row in candidates:
        if row.iloq_username != body.user_name or row.iloq_password_encrypted is None:
            continue
        stored = state.container.secrets.decrypt(row.iloq_password_encrypted)
        if secrets.compare_digest(stored.encode(), body.password.encode()):
            token = secrets.token_hex(16)
            state.sessions[token] = EmulatorSession(
                row.id, None, time.monotonic() + SESSION_SECONDS
            )
            return {"Result": 0, "SessionID": token}
    raise EmulatorError(401, "Invalid customer code, user name or password")


@router.get("/LockGroups")
async def lock_groups(state: State, session_id: SessionHeader = None) -> list[dict[str, Any]]:
    found = state.session(session_id)
    return [{"LockGroup_ID": _lock_group_id(found.unit_id), "Name": "Locking system"}]


# ASP.NET routes are case-insensitive and clients spell this one both ways.
@router.post("/SetLockgroup")
@router.post("/SetLockGroup", include_in_schema=False)
async def set_lock_group(
    body: SetLockGroupParam, state: State, session_id: SessionHeader = None
) -> Response:
    found = state.session(session_id)
    if body.lock_group_id != _lock_group_id(found.unit_id):
        raise EmulatorError(400, "Unknown lock group")
    found.lock_group_id = body.lock_group_id
    return Response(status_code=200)


@router.get("/KillSession")
async def kill_session(state: State, session_id: SessionHeader = None) -> Response:
    state.sessions.pop(session_id or "", None)
    return Response(status_code=200)


@router.get("/RealEstates")
async def real_estates(unit: Unit, state: State) -> list[dict[str, Any]]:
    estates = await state.on_system(unit, lambda s: s.real_estates())
    return [{"RealEstate_ID": i, "Name": n, "Parent_ID": p} for i, n, p in estates]


@router.get("/SecurityAccesses")
async def security_accesses(unit: Unit, state: State) -> list[dict[str, Any]]:
    rights = await state.on_system(unit, lambda s: s.access_rights())
    return [
        {
            "SecurityAccess_ID": right.id,
            "Name": right.name,
            "RealEstate_ID": real_estate_id,
            "Zone_ID": None,
            "PublicApiEnabled": right.api_enabled,
            "DefaultAccess": right.default_access,
        }
        for right, real_estate_id in rights
    ]


def _key_json(system: EmulatedSystem, key_id: str) -> dict[str, Any]:
    info = system.key(key_id)
    if info is None:
        raise EmulatorError(404, "Invalid value: key not found")
    return key_json(info, system.key_state(key_id) or "")


@router.get("/Keys")
async def keys(unit: Unit, state: State) -> list[dict[str, Any]]:
    return await state.on_system(unit, lambda s: [_key_json(s, k.id) for k in s.all_keys()])


@router.get("/Keys/{key_id}")
async def key(key_id: str, unit: Unit, state: State) -> dict[str, Any]:
    return await state.on_system(unit, lambda s: _key_json(s, key_id))


@router.post("/Keys")
async def insert_key(body: KeyParam, unit: Unit, state: State) -> dict[str, Any]:
    key_id = body.key.fnkey_id or str(uuid.uuid4())
    now = state.container.clock.now()

    def work(system: EmulatedSystem) -> dict[str, Any]:
        system.create_key(key_id, body.key.description or key_id[:7].upper(), now)
        if body.key.person_id is not None:
            system.assign_person(key_id, body.key.person_id)
        return _key_json(system, key_id)

    return await state.on_system(unit, work)


@router.put("/Keys")
async def update_key(body: KeyParam, unit: Unit, state: State) -> Response:
    """Only the person is taken from the key object; null registers the default person."""
    key_id = body.key.fnkey_id
    if not key_id:
        raise EmulatorError(400, "FNKey_ID is required")
    await state.on_system(unit, lambda s: s.assign_person(key_id, body.key.person_id))
    return Response(status_code=200)


@router.get("/Keys/{key_id}/SecurityAccesses")
async def key_security_accesses(
    key_id: str, unit: Unit, state: State, mode: int = 0
) -> dict[str, Any]:
    """What is written in the key (``mode`` is accepted and ignored)."""
    del mode

    def work(system: EmulatedSystem) -> dict[str, Any]:
        info = system.key(key_id)
        if info is None:
            raise EmulatorError(404, "Invalid value: key not found")
        names = {r.id: (r.name, estate) for r, estate in system.access_rights()}
        slots = [
            {"SlotNo": number, "LimitDateLg": iloq_time(moment)}
            for number, moment in ((0, info.valid_from), (1, info.valid_until))
            if moment is not None
        ]
        return {
            "SecurityAccesses": [
                {
                    "SecurityAccess_ID": right_id,
                    "Name": names.get(right_id, ("", None))[0],
                    "RealEstate_ID": names.get(right_id, ("", None))[1],
                }
                for right_id in info.access_right_ids
            ],
            "KeyTimeLimitSlots": slots,
        }

    return await state.on_system(unit, work)


@router.put("/Keys/{key_id}/SecurityAccesses")
async def update_key_security_accesses(
    key_id: str, body: UpdateSecurityAccessesParam, unit: Unit, state: State
) -> Response:
    """Replaces the key's planned rights and its start (slot 0) and end (slot 1) dates."""
    slots = {slot.slot_no: parse_iloq_time(slot.limit_date) for slot in body.time_limit_slots}
    await state.on_system(
        unit,
        lambda s: s.plan(
            key_id, body.security_access_ids, valid_from=slots.get(0), valid_until=slots.get(1)
        ),
    )
    return Response(status_code=200)


@router.get("/Keys/{key_id}/CanOrder")
async def can_order(key_id: str, unit: Unit, state: State) -> int:
    return int(await state.on_system(unit, lambda s: s.can_order(key_id)))


@router.post("/Keys/{key_id}/Order")
async def order(key_id: str, unit: Unit, state: State) -> Response:
    now = state.container.clock.now()
    await state.on_system(unit, lambda s: s.order(key_id, now))
    return Response(status_code=200)


@router.get("/Blacklists")
async def blocklist(unit: Unit, state: State) -> dict[str, Any]:
    return {"FNKey_IDs": await state.on_system(unit, lambda s: s.blocklist())}


@router.get("/Blacklists/CanAddKey/{key_id}")
async def can_add_to_blocklist(key_id: str, unit: Unit, state: State) -> bool:
    return await state.on_system(unit, lambda s: s.can_blocklist(key_id))


@router.post("/Blacklists/AddKey/{key_id}")
async def add_to_blocklist(key_id: str, unit: Unit, state: State) -> Response:
    now = state.container.clock.now()
    await state.on_system(unit, lambda s: s.add_to_blocklist(key_id, now))
    return Response(status_code=200)


@router.get("/emulator/ProgrammingLog")
async def programming_log(
    unit: Unit, state: State, key_id: Annotated[str | None, Query(alias="keyId")] = None
) -> list[dict[str, Any]]:
    """Extension: the emulator's programming log, oldest first."""
    records = await state.on_system(unit, lambda s: s.log(key_id))
    return [
        {
            "FNKey_ID": r.key_id,
            "Action": r.action,
            "SecurityAccessIds": list(r.access_right_ids),
            "Person_ID": r.person_id,
            "StartDate": iloq_time(r.valid_from),
            "EndDate": iloq_time(r.valid_until),
            "TimestampUtc": iloq_time(r.at),
        }
        for r in records
    ]


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory``: the emulator over the database that KEYAUTOMAT_* settings name.

    ``uv run uvicorn --factory keyautomat.entrypoints.iloq_emulator_http:app_from_environment
    --port 8091`` serves the emulated systems of a keyautomat database on port 8091.
    """
    from keyautomat.bootstrap import bootstrap

    return create_emulator_app(bootstrap())
