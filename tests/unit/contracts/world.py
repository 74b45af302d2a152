"""A small world for the contract unit tests: one caller, one automat, and contracts created
through the real flow (``service.create``) on the fake store.

A real kind's ``plan`` reads the database (keys, lockers, groups); :class:`Scripted`
plans exactly the draft it is given instead, so that everything after the plan
runs as in production. Events after creation go through whichever kinds a test
names: the real ones for the hooks that only use the store, :class:`Scripted` (the
base hooks) where a real hook would need SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from keyautomat.contracts import service
from keyautomat.contracts.kind import ContractKind
from keyautomat.contracts.model import Contract, Draft, PlannedKey, Terms
from keyautomat.contracts.rules import ContractType
from keyautomat.contracts.store import ContractStore, KeyFacts
from keyautomat.domain.devices import AutomatEvent, AutomatEventType
from keyautomat.domain.model import Role
from keyautomat.domain.notifications import AutomatView, Contact
from keyautomat.domain.notifications import ContractKind as ViewKind
from keyautomat.service_layer.principal import Principal
from tests.unit.contracts.fakes import FakeContractStore

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
START = NOW - HOUR
END = NOW + 5 * HOUR
UNIT = "ou-1"
CALLER = Principal("sa-1", UNIT, f"/{UNIT}/", 1, Role.INTEGRATION)
OUTSIDER = Principal("sa-2", "ou-2", "/ou-2/", 1, Role.INTEGRATION)
AUTOMAT = "000001"
CONTACT = Contact(name="Jane Guest", email="jane@example.com")


class Scripted(ContractKind[Draft]):
    """An iLOQ-named kind that books the draft it is given and keeps every base hook."""

    name: ClassVar[str] = "iloq"
    view_kind: ClassVar[ViewKind] = ViewKind.ILOQ

    def plan(self, store: ContractStore, principal: Principal, new: Draft, now: datetime) -> Draft:
        return new


class ScriptedMechanical(Scripted):
    """The mechanical counterpart: its codes may be chosen before a signature."""

    name: ClassVar[str] = "mechanical"
    view_kind: ClassVar[ViewKind] = ViewKind.MECHANICAL
    defers_codes: ClassVar[bool] = True


def new_store(**facts: KeyFacts) -> FakeContractStore:
    """The caller's unit and another one, one automat, and mechanical keys by object id."""
    return FakeContractStore(
        unit_paths={UNIT: f"/{UNIT}/", "ou-2": "/ou-2/"},
        facts=facts,
        automats={AUTOMAT: AutomatView(AUTOMAT, "Lobby", None, "Main street 1", "Europe/Helsinki")},
    )


def facts(
    *,
    name: str | None = None,
    shared: bool = False,
    rfid_hex: str | None = None,
    at: tuple[str, int] | None = None,
) -> KeyFacts:
    """A mechanical key as the register has it; ``at`` is the locker it is in."""
    return KeyFacts(
        name=name,
        shared=shared,
        rfid_hex=rfid_hex,
        stored_automat_id=at[0] if at else None,
        stored_locker_index=at[1] if at else None,
        selected_manual_info=None,
    )


def draft(
    contract_type: ContractType = ContractType.DEFAULT,
    *,
    keys: int = 1,
    start: datetime = START,
    end: datetime | Literal["by type"] | None = "by type",
    manual: bool = False,
    pincodes: tuple[str, ...] = (),
    free_locker_after_fetch: bool = False,
    user_verification: str = "0",
    in_place: bool = True,
) -> Draft:
    """A new contract of ``keys`` keys, ``key-0``... in lockers 0... of :data:`AUTOMAT`
    (or in manual storage); fetch contracts have no end unless given one."""
    if end == "by type":
        end = None if contract_type is ContractType.FETCH else END
    returning = contract_type is ContractType.RETURN
    planned = [
        PlannedKey(
            key_id=f"key-{i}",
            stored_id=f"key-{i}",
            automat_id=None if manual else AUTOMAT,
            locker_index=None if manual else i,
            manual_info="Shelf 1" if manual else None,
            given_pincode=pincodes[i] if i < len(pincodes) else None,
            reserved_key_id=None if manual or returning else f"key-{i}",
            in_place=in_place,
        )
        for i in range(keys)
    ]
    token = "signature-token" if user_verification == "1" else None
    return Draft(
        terms=Terms(
            contract_type=contract_type,
            start=start,
            end=end,
            contact=CONTACT,
            free_locker_after_fetch=free_locker_after_fetch,
            user_verification=user_verification,
        ),
        keys=planned,
        request={},
        signature_token=token,
    )


def create(
    store: FakeContractStore,
    contract_type: ContractType = ContractType.DEFAULT,
    *,
    kind: Scripted | None = None,
    now: datetime = NOW,
    **options: Any,
) -> Contract:
    """A contract created by the real flow, as :func:`draft` describes it."""
    new = draft(contract_type, **options)
    return service.create(store, kind or Scripted(), CALLER, new, now=now)


def event(
    type_: AutomatEventType,
    locker_index: int | None = 0,
    *,
    key_id: str | None = None,
    code: str | None = None,
    at: datetime = NOW,
    event_id: int = 1,
    **data: Any,
) -> AutomatEvent:
    """An event of :data:`AUTOMAT` as the device layer records it."""
    return AutomatEvent(
        id=event_id,
        automat_id=AUTOMAT,
        type=type_,
        occurred_at=at,
        locker_index=locker_index,
        key_id=key_id,
        code=code,
        data=data,
    )
