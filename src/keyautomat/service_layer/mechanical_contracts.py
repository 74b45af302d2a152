"""Mechanical key contracts: create, read, change, delete (spec endpoints §9, gaps.md F1-F11).

Built on the shared contract core: a mechanical contract is a ``contracts`` row
of kind ``mechanical`` (contract type 1, default), one ``contract_keys`` row per
key (``key_id`` = the key's ``mechanical_keys.object_id``), reservations of the
automat lockers of device keys, and pincodes per automat through
``devices.add_pincode``/``remove_pincode``. What is mechanical-only lives in
``mechanical_contracts``: the caller's id, ``freeLockerAfterFetch``,
``userVerification``, the pick-up info and the signature. Progress at the
automats, staff handovers and the end are in ``mechanical_progress.py``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.orm_contracts import contract_keys, contracts
from keyautomat.adapters.orm_mechanical import mechanical_contracts, strong_auth_units
from keyautomat.adapters.orm_mechanical import mechanical_keys as mk
from keyautomat.domain import webhooks as wh
from keyautomat.domain.contact import parse_contact
from keyautomat.domain.contracts import (
    MAX_KEYS_PER_CONTRACT,
    OPEN_END,
    ContractType,
    KeyStatus,
    check_pincode,
)
from keyautomat.domain.devices import secret_hash
from keyautomat.domain.errors import Conflict, InvalidInput, NotFound
from keyautomat.domain.ids import new_object_id
from keyautomat.domain.mechanical import MechanicalKey, Storage, check_signature_image
from keyautomat.domain.model import Product
from keyautomat.domain.notifications import (
    AutomatView,
    Contact,
    ContractKind,
    ContractView,
    KeyView,
    NotificationType,
)
from keyautomat.domain.notifications import ContractType as NotifyContractType
from keyautomat.domain.times import parse_time
from keyautomat.service_layer import contract_steps, devices, notifications
from keyautomat.service_layer import contracts as core
from keyautomat.service_layer.contract_steps import schedule_end
from keyautomat.service_layer.contracts import Slot
from keyautomat.service_layer.mechanical_keys import root_unit_of
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal, in_scope

KIND = ContractKind.MECHANICAL.value
MAX_ID = 128
VERIFICATIONS = ("0", "1", "2")

c = contracts
ck = contract_keys
mc = mechanical_contracts

# The signature page's address; the app sets it from ``public_url`` (None: a relative link).
signature_base_url: list[str] = []


# --- input --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyInput:
    id: str
    automat_id: str | None = None
    pincode: str | None = None
    manual_info: str | None = None
    kind: str | None = None  # "device", "manual", or None (from the key's storage)


@dataclass(frozen=True, slots=True)
class NewContract:
    public_id: str | None
    start: datetime
    end: datetime | None
    contact: Contact
    keys: list[KeyInput]
    user_verification: str
    pick_up_info: str | None
    free_locker_after_fetch: bool


def parse_verification(value: Any) -> str:
    """F3: "0"/"1"/"2" or the numbers 0/1/2; None means "0"."""
    if value is None:
        return "0"
    if isinstance(value, bool):
        raise InvalidInput("userVerification", 'must be "0", "1" or "2"')
    if isinstance(value, int) and value in (0, 1, 2):
        return str(value)
    if isinstance(value, str) and value in VERIFICATIONS:
        return value
    raise InvalidInput("userVerification", 'must be "0", "1" or "2"')


def _contact(value: Any) -> Contact:
    if value is None:
        raise InvalidInput("contact", "is required")
    if not isinstance(value, Mapping):
        raise InvalidInput("contact", "must be an object")
    contact = parse_contact(value)
    if contact is None:
        raise InvalidInput("contact", "is required")
    return contact


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(name, "must be a non-empty string")
    return value


def _key_inputs(value: Any) -> list[KeyInput]:  # noqa: PLR0912 - one rule per field
    if not isinstance(value, list) or not value:
        raise InvalidInput("keys", "must be a non-empty array")
    if len(value) > MAX_KEYS_PER_CONTRACT:
        raise InvalidInput("keys", f"must hold at most {MAX_KEYS_PER_CONTRACT} keys")
    result: list[KeyInput] = []
    for index, item in enumerate(value):
        name = f"keys.{index}"
        if not isinstance(item, Mapping):
            raise InvalidInput(name, "must be an object")
        key_id = item.get("id")
        if not isinstance(key_id, str) or not key_id:
            raise InvalidInput(f"{name}.id", "is required")
        if any(k.id == key_id for k in result):
            raise InvalidInput(f"{name}.id", "repeats a key given earlier")
        info = item.get("storageInfo")
        if info is None:
            result.append(KeyInput(key_id))
            continue
        if not isinstance(info, Mapping):
            raise InvalidInput(f"{name}.storageInfo", "must be an object")
        manual = info.get("manualStorageInfo")
        automat = info.get("automatId")
        pincode = info.get("pincode")
        if manual is not None and (automat is not None or pincode is not None):
            raise InvalidInput(
                f"{name}.storageInfo", "give automatId/pincode or manualStorageInfo, not both"
            )
        if manual is not None:
            if not isinstance(manual, str) or not manual.strip():
                raise InvalidInput(f"{name}.storageInfo.manualStorageInfo", "must not be empty")
            result.append(KeyInput(key_id, manual_info=manual, kind="manual"))
            continue
        if automat is not None and (not isinstance(automat, str) or not automat):
            raise InvalidInput(f"{name}.storageInfo.automatId", "must be a non-empty string")
        if pincode is not None:
            reason = check_pincode(pincode)
            if reason is not None:
                raise InvalidInput(f"{name}.storageInfo.pincode", reason)
        kind = "device" if automat is not None or pincode is not None else None
        result.append(KeyInput(key_id, automat_id=automat, pincode=pincode, kind=kind))
    return result


def parse_new_contract(body: Any, now: datetime) -> NewContract:
    """The flat ``CreateMechanicalKeyContractDto`` (endpoints.md §9.3)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("body", "must be an object")
    public_id = body.get("id")
    if public_id is not None and (
        not isinstance(public_id, str)
        or not 1 <= len(public_id) <= MAX_ID
        or not public_id.isprintable()
        or "/" in public_id
    ):
        raise InvalidInput("id", "must be 1-128 printable characters without '/'")
    if body.get("start") is None:
        raise InvalidInput("start", "is required")
    start = parse_time(body["start"], "start")
    end = parse_time(body["end"], "end") if body.get("end") is not None else None
    if end is not None:
        if end <= start:
            raise InvalidInput("end", "must be after start")
        if end <= now:
            raise InvalidInput("end", "must be in the future")
    contact = _contact(body.get("contact"))
    keys = _key_inputs(body.get("keys"))
    free = body.get("freeLockerAfterFetch")
    if free is not None and not isinstance(free, bool):
        raise InvalidInput("freeLockerAfterFetch", "must be a boolean")
    return NewContract(
        public_id=public_id,
        start=start,
        end=end,
        contact=contact,
        keys=keys,
        user_verification=parse_verification(body.get("userVerification")),
        pick_up_info=_optional_text(body, "pickUpInfoForManualStorageKeys"),
        free_locker_after_fetch=bool(free),
    )


# --- stored contracts ---------------------------------------------------------------------


@dataclass(slots=True)
class KeyRow:
    position: int
    object_id: str
    key_id: str  # the caller's key id
    automat_id: str | None
    locker_index: int | None
    manual_info: str | None
    pincode: str | None
    pincode_id: str | None
    status: str | None
    in_history: bool
    opened_at: datetime | None  # when the contract's code last opened the locker

    @property
    def is_device(self) -> bool:
        return self.automat_id is not None


@dataclass(slots=True)
class ContractRow:
    id: str  # internal, 24 hex
    public_id: str
    organization_unit_id: str
    start: datetime
    end: datetime | None
    contact: Contact | None
    free_locker_after_fetch: bool
    user_verification: str
    pick_up_info: str | None
    # The signature link's token, known only in the transaction that minted it (the
    # database keeps its hash): the contractSignatureRequested message carries it.
    signature_token: str | None
    signed_at: datetime | None
    end_evaluated_at: datetime | None
    completed_at: datetime | None
    keys: list[KeyRow] = field(default_factory=list)

    @property
    def awaiting_signature(self) -> bool:
        return self.user_verification == "1" and self.signed_at is None

    @property
    def is_manual(self) -> bool:
        return any(not k.is_device for k in self.keys)


def load_contract(session: Session, contract_id: str, *, for_update: bool = False) -> ContractRow:
    stmt = (
        select(c, mc)
        .join(mc, mc.c.contract_id == c.c.id)
        .where(c.c.id == contract_id, c.c.kind == KIND, c.c.deleted_at.is_(None))
    )
    if for_update and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=c)
    row = session.execute(stmt).first()
    if row is None:
        raise NotFound("Contract")
    request = json.loads(row.request)
    contract = ContractRow(
        id=row.id,
        public_id=row.public_id,
        organization_unit_id=row.organization_unit_id,
        start=row.start,
        end=row.end,
        contact=Contact.from_json(json.loads(row.contact)) if row.contact else None,
        free_locker_after_fetch=bool(row.free_locker_after_fetch),
        user_verification=row.user_verification,
        pick_up_info=row.pick_up_info,
        signature_token=None,
        signed_at=row.signed_at,
        end_evaluated_at=row.end_evaluated_at,
        completed_at=row.completed_at,
    )
    stored = request.get("keys", [])
    for key in session.execute(
        select(ck).where(ck.c.contract_id == contract_id).order_by(ck.c.position)
    ).all():
        asked = stored[key.position] if key.position < len(stored) else {}
        contract.keys.append(
            KeyRow(
                position=key.position,
                object_id=key.key_id,
                key_id=asked.get("id", key.key_id),
                automat_id=key.automat_id,
                locker_index=key.locker_index,
                manual_info=asked.get("manualStorageInfo"),
                pincode=key.pincode,
                pincode_id=key.pincode_id,
                status=key.status,
                in_history=bool(key.in_history),
                opened_at=key.programmed_at,
            )
        )
    return contract


def _root(session: Session, principal: Principal) -> str:
    return root_unit_of(principal.own_unit(session).path)


def scoped_contract(
    session: Session, principal: Principal, public_id: str, *, for_update: bool = False
) -> ContractRow:
    found = session.scalar(
        select(c.c.id)
        .join(mc, mc.c.contract_id == c.c.id)
        .where(
            mc.c.root_unit_id == _root(session, principal),
            mc.c.public_id == public_id,
            c.c.deleted_at.is_(None),
            in_scope(c.c.organization_unit_id, principal),
        )
    )
    if found is None:
        raise NotFound("Contract")
    return load_contract(session, found, for_update=for_update)


# --- responses ----------------------------------------------------------------------------


def _storage_info(key: KeyRow) -> dict[str, Any]:
    if key.is_device:
        return {"pincode": key.pincode, "automatId": key.automat_id}
    return {"manualStorageInfo": key.manual_info}


def to_wire(session: Session, contract: ContractRow) -> dict[str, Any]:
    """``MechanicalKeyContract`` (endpoints.md §9.1)."""
    return {
        "id": contract.public_id,
        "start": wh.format_time(contract.start),
        "end": wh.format_time(contract.end) if contract.end else None,
        "contact": notifications.contact_response(
            session, contract.organization_unit_id, contract.contact
        ),
        "keys": [
            {
                "id": key.key_id,
                "storageInfo": _storage_info(key),
                "status": key.status,
                "inHistory": key.in_history,
            }
            for key in contract.keys
        ],
        "freeLockerAfterFetch": contract.free_locker_after_fetch,
        "userVerification": contract.user_verification,
        "pickUpInfoForManualStorageKeys": contract.pick_up_info,
    }


def signature_link(token: str | None) -> str | None:
    if token is None:
        return None
    base = signature_base_url[0].rstrip("/") if signature_base_url else ""
    return f"{base}/sign/{token}"


def notification_view(session: Session, contract: ContractRow) -> ContractView:
    a = orm.automats
    automat_ids = {k.automat_id for k in contract.keys if k.automat_id}
    automats = {
        row.id: AutomatView(row.id, row.name, row.label, row.address, row.timezone)
        for row in session.execute(
            select(a.c.id, a.c.name, a.c.label, a.c.address, a.c.timezone).where(
                a.c.id.in_(automat_ids)
            )
        )
    }
    names: dict[str, str | None] = dict(
        session.execute(
            select(mk.c.object_id, mk.c.name).where(
                mk.c.object_id.in_([k.object_id for k in contract.keys])
            )
        ).all()
    )
    return ContractView(
        kind=ContractKind.MECHANICAL,
        contract_id=contract.id,
        contract_type=NotifyContractType.DEFAULT,
        organization_unit_id=contract.organization_unit_id,
        start=contract.start,
        end=contract.end,
        contact=contract.contact,
        keys=tuple(
            KeyView(
                id=k.key_id,
                name=names.get(k.object_id),
                # No code before the signature: the automat does not release the key yet.
                pincode=None if contract.awaiting_signature else k.pincode,
                automat=automats.get(k.automat_id) if k.automat_id else None,
                storage_info=k.manual_info,
            )
            for k in contract.keys
            if not k.in_history
        ),
        pick_up_info=contract.pick_up_info,
        signature_link=signature_link(contract.signature_token)
        if contract.awaiting_signature
        else None,
    )


def publish_contract_update(session: Session, contract: ContractRow, now: datetime) -> None:
    """One ``contract-update`` per key (webhooks.md §5.2); manual keys omit deviceId/pincode."""
    contract_steps.publish_key_updates(
        session,
        organization_unit_id=contract.organization_unit_id,
        contract_type=ContractType.DEFAULT.wire_name,
        contract_id=contract.public_id,
        contract_object_id=contract.id,
        start=contract.start,
        end=contract.end,
        keys=[
            (k.key_id, k.pincode if k.is_device else None, k.automat_id)
            for k in contract.keys
            if not k.in_history
        ],
        now=now,
    )


# --- create -------------------------------------------------------------------------------


def _keys_by_id(session: Session, principal: Principal, ids: Sequence[str]) -> dict[str, Any]:
    """The keys, locked on PostgreSQL (in object id order): two contracts racing for one key
    — a manual key has no automat to lock — see each other's rows (SQLite has one writer)."""
    stmt = (
        select(MechanicalKey)
        .where(
            mk.c.id.in_(list(ids)),
            mk.c.root_unit_id == _root(session, principal),
            in_scope(mk.c.organization_unit_id, principal),
        )
        .order_by(mk.c.object_id)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return {key.id: key for key in session.scalars(stmt)}


def _overlapping(
    session: Session,
    object_id: str,
    start: datetime,
    end: datetime | None,
    *,
    ignore_contract: str | None,
) -> bool:
    """F6: another live mechanical contract holds this key at an overlapping time."""
    conditions = [
        ck.c.key_id == object_id,
        ck.c.in_history.is_(False),
        c.c.kind == KIND,
        c.c.deleted_at.is_(None),
        c.c.completed_at.is_(None),
        or_(c.c.end.is_(None), c.c.end > start),
    ]
    if end is not None:
        conditions.append(c.c.start < end)
    if ignore_contract is not None:
        conditions.append(c.c.id != ignore_contract)
    return (
        session.execute(
            select(ck.c.contract_id).join(c, c.c.id == ck.c.contract_id).where(*conditions).limit(1)
        ).first()
        is not None
    )


def _unsigned_code_in_use(
    session: Session,
    automat_id: str,
    code: str,
    start: datetime,
    end: datetime | None,
    ignore_contract: str | None = None,
) -> bool:
    """Codes of contracts waiting for a signature are not on the automat yet, but taken."""
    conditions = [
        ck.c.automat_id == automat_id,
        ck.c.pincode == code,
        ck.c.pincode_id.is_(None),
        ck.c.in_history.is_(False),
        c.c.deleted_at.is_(None),
        c.c.kind == KIND,
        or_(c.c.end.is_(None), c.c.end > start),
    ]
    if end is not None:
        conditions.append(c.c.start < end)
    if ignore_contract is not None:
        conditions.append(c.c.id != ignore_contract)
    return (
        session.execute(
            select(ck.c.contract_id).join(c, c.c.id == ck.c.contract_id).where(*conditions).limit(1)
        ).first()
        is not None
    )


def _pincode(
    session: Session,
    automat_id: str,
    given: str | None,
    start: datetime,
    end: datetime | None,
    taken: set[tuple[str, str]],
    field_name: str,
) -> str:
    for _ in range(50):
        code = core.choose_pincode(
            session, automat_id, given, start, end, taken=taken, field=field_name
        )
        if not _unsigned_code_in_use(session, automat_id, code, start, end):
            return code
        if given is not None:
            raise InvalidInput(field_name, "Pincode already in use")
    raise RuntimeError("no free pincode found after 50 draws")


def _locker_of(session: Session, key: MechanicalKey, automat_id: str) -> int | None:
    if key.stored_automat_id == automat_id and key.stored_locker_index is not None:
        return key.stored_locker_index
    lk = orm.lockers
    return session.scalar(
        select(lk.c.locker_index)
        .where(lk.c.automat_id == automat_id, lk.c.key_id == key.id)
        .order_by(lk.c.locker_index)
        .limit(1)
    )


def _usable_automat(session: Session, principal: Principal, automat_id: str, name: str) -> None:
    a = orm.automats
    row = session.execute(
        select(a.c.id, a.c.product).where(
            a.c.id == automat_id, in_scope(a.c.organization_unit_id, principal)
        )
    ).first()
    if row is None:
        raise InvalidInput(name, "does not name an automat you can use")
    if row.product != Product.KEY30:
        raise InvalidInput(name, "is not a key30 automat (mechanical keys live in key30 automats)")


@dataclass(slots=True)
class _Planned:
    key: MechanicalKey
    automat_id: str | None
    locker_index: int | None
    manual_info: str | None
    pincode: str | None


def _plan_keys(
    session: Session, principal: Principal, new: NewContract, contract_id: str | None
) -> list[_Planned]:
    found = _keys_by_id(session, principal, [k.id for k in new.keys])
    planned: list[_Planned] = []
    for index, asked in enumerate(new.keys):
        name = f"keys.{index}"
        key = found.get(asked.id)
        if key is None:
            raise InvalidInput(f"{name}.id", "is not a mechanical key you can use")
        device = asked.kind == "device" or (asked.kind is None and key.selected.is_device)
        if not device:
            info = asked.manual_info or key.stored_manual_info or key.selected_manual_info
            planned.append(_Planned(key, None, None, info, None))
            continue
        automat_id = asked.automat_id or key.stored_automat_id or key.selected_automat_id
        if automat_id is None:
            raise InvalidInput(f"{name}.storageInfo.automatId", "is required for this key")
        _usable_automat(session, principal, automat_id, f"{name}.storageInfo.automatId")
        locker = _locker_of(session, key, automat_id)
        if locker is None:
            raise InvalidInput(f"{name}.id", f"is not in a locker of automat {automat_id}")
        planned.append(_Planned(key, automat_id, locker, None, asked.pincode))
    kinds = {p.automat_id is not None for p in planned}
    if len(kinds) > 1:
        raise InvalidInput("keys", "automat keys and manual-storage keys cannot be mixed")
    core.lock_automats(session, [p.automat_id for p in planned if p.automat_id])
    for index, p in enumerate(planned):
        if p.key.shared and p.automat_id is not None:
            continue
        if _overlapping(session, p.key.object_id, new.start, new.end, ignore_contract=contract_id):
            raise Conflict(f"keys.{index}: Overlapping contract for key {p.key.id!r}")
    return planned


def _strong_auth(session: Session, unit_id: str) -> bool:
    return (
        session.scalar(
            select(strong_auth_units.c.organization_unit_id).where(
                strong_auth_units.c.organization_unit_id == unit_id
            )
        )
        is not None
    )


def strong_auth_enabled(session: Session, principal: Principal, unit_id: str) -> bool:
    """Whether ``unit_id`` allows userVerification "2" (F3); admins of its subtree only."""
    principal.require_admin()
    notifications.scoped_unit(session, principal, unit_id)
    return _strong_auth(session, unit_id)


def set_strong_auth(session: Session, principal: Principal, unit_id: str, enabled: bool) -> bool:
    """Enable or disable userVerification "2" for exactly this unit (not its children).

    Idempotent; concurrent enables are harmless (insert ignoring the duplicate).
    Disabling does not touch contracts that already ask for "2"."""
    principal.require_admin()
    notifications.scoped_unit(session, principal, unit_id)
    if enabled:
        devices.insert_ignoring_duplicates(
            session, strong_auth_units, {"organization_unit_id": unit_id}
        )
    else:
        session.execute(
            delete(strong_auth_units).where(strong_auth_units.c.organization_unit_id == unit_id)
        )
    return enabled


def _check_verification(session: Session, unit_id: str, value: str) -> None:
    if value == "2" and not _strong_auth(session, unit_id):
        raise InvalidInput(
            "userVerification", "strong authentication (2) is not enabled for this unit"
        )


def _sync_pincode(session: Session, contract: ContractRow, key: KeyRow) -> str | None:
    assert key.automat_id is not None
    assert key.locker_index is not None
    assert key.pincode
    return devices.add_pincode(
        session,
        key.automat_id,
        code=key.pincode,
        locker_index=key.locker_index,
        valid_from=contract.start,
        valid_until=contract.end,
        purpose="default",
        key_id=key.key_id,
        reference=contract.id,
        program_first=False,  # key30: no iLOQ programming
    )


def create_contract(
    session: Session, principal: Principal, new: NewContract, *, now: datetime
) -> ContractRow:
    unit = principal.own_unit(session)
    root = root_unit_of(unit.path)
    _check_verification(session, unit.id, new.user_verification)
    if new.public_id is not None:
        clash = session.scalar(
            select(mc.c.contract_id)
            .join(c, c.c.id == mc.c.contract_id)
            .where(mc.c.root_unit_id == root, mc.c.public_id == new.public_id)
        )
        if clash is not None:
            raise Conflict(f"A contract with the id {new.public_id!r} already exists")
    planned = _plan_keys(session, principal, new, None)
    manual = planned[0].automat_id is None
    if manual:
        if new.free_locker_after_fetch:
            raise InvalidInput("freeLockerAfterFetch", "is only for automat-key contracts")
        if new.start > now and new.pick_up_info is None:
            raise InvalidInput(
                "pickUpInfoForManualStorageKeys",
                "is required for a manual-storage contract that starts in the future",
            )
    elif new.pick_up_info is not None:
        raise InvalidInput(
            "pickUpInfoForManualStorageKeys", "is only for manual-storage key contracts"
        )

    contract_id = new_object_id(now.timestamp())
    public_id = new.public_id or contract_id
    request = {
        "keys": [
            {"id": p.key.id, "manualStorageInfo": p.manual_info} if manual else {"id": p.key.id}
            for p in planned
        ]
    }
    session.execute(
        insert(c).values(
            id=contract_id,
            kind=KIND,
            organization_unit_id=unit.id,
            contract_type=int(ContractType.DEFAULT),
            start=new.start,
            end=new.end,
            contact=json.dumps(new.contact.to_json(), separators=(",", ":")),
            request=json.dumps(request, separators=(",", ":")),
            created_at=now,
            updated_at=now,
        )
    )
    token = new_signature_token() if new.user_verification == "1" else None
    try:
        with session.begin_nested():
            session.execute(
                insert(mc).values(
                    contract_id=contract_id,
                    root_unit_id=root,
                    public_id=public_id,
                    free_locker_after_fetch=new.free_locker_after_fetch,
                    user_verification=new.user_verification,
                    pick_up_info=new.pick_up_info,
                    signature_token_hash=token_hash(token) if token else None,
                )
            )
    except IntegrityError:
        raise Conflict(f"A contract with the id {public_id!r} already exists") from None
    until = new.end or OPEN_END
    taken: set[tuple[str, str]] = set()
    rows = []
    for position, p in enumerate(planned):
        code = None
        if p.automat_id is not None:
            assert p.locker_index is not None
            code = _pincode(
                session,
                p.automat_id,
                p.pincode,
                new.start,
                new.end,
                taken,
                f"keys.{position}.storageInfo.pincode",
            )
            core.reserve(
                session,
                contract_id,
                position,
                Slot(p.automat_id, p.locker_index, p.key.object_id),
                new.start,
                until,
            )
        rows.append(
            {
                "contract_id": contract_id,
                "position": position,
                "key_id": p.key.object_id,
                "automat_id": p.automat_id,
                "locker_index": p.locker_index,
                "pincode": code,
                "pincode_id": None,
                "status": None,
                "in_history": False,
                "program_failures": 0,
            }
        )
    session.execute(insert(ck), rows)
    contract = load_contract(session, contract_id)
    contract.signature_token = token
    if not contract.awaiting_signature:
        _sync_all(session, contract)
    publish_contract_update(session, contract, now)
    view = notification_view(session, contract)
    notifications.notify(session, view, NotificationType.CONTRACT_CREATED, now=now)
    if contract.awaiting_signature:
        notifications.notify(session, view, NotificationType.CONTRACT_SIGNATURE_REQUESTED, now=now)
    notifications.schedule_reminders(session, view, now=now)
    schedule_end(session, contract, now)
    return contract


def _sync_all(session: Session, contract: ContractRow) -> None:
    """Put the device keys' codes on their automats (next sync)."""
    for key in contract.keys:
        if key.is_device and key.pincode and key.pincode_id is None and not key.in_history:
            key.pincode_id = _sync_pincode(session, contract, key)
            session.execute(
                update(ck)
                .where(ck.c.contract_id == contract.id, ck.c.position == key.position)
                .values(pincode_id=key.pincode_id)
            )


# --- read ---------------------------------------------------------------------------------


def list_contracts(
    session: Session,
    principal: Principal,
    page: PageRequest,
    *,
    ongoing: bool | None,
    ended: bool | None,
    future: bool | None,
    key_id: str | None,
    now: datetime,
) -> Page[ContractRow]:
    """F2: ``after``/``limit`` and the iLOQ filters (none = all, several = union), ``keyId``."""
    stmt = (
        select(c.c.id)
        .join(mc, mc.c.contract_id == c.c.id)
        .where(
            c.c.kind == KIND,
            c.c.deleted_at.is_(None),
            mc.c.root_unit_id == _root(session, principal),
            in_scope(c.c.organization_unit_id, principal),
        )
    )
    period = contract_steps.period_condition(ongoing=ongoing, ended=ended, future=future, now=now)
    if period is not None:
        stmt = stmt.where(period)
    if key_id:
        stmt = stmt.where(
            select(ck.c.contract_id)
            .join(mk, mk.c.object_id == ck.c.key_id)
            .where(ck.c.contract_id == c.c.id, mk.c.id == key_id)
            .exists()
        )
    stmt = stmt.order_by(c.c.created_at, c.c.id).offset(page.offset).limit(page.limit + 1)
    ids = list(session.scalars(stmt))
    has_next = len(ids) > page.limit
    items = [load_contract(session, i) for i in ids[: page.limit]]
    return Page(items, page.offset + len(items), page.limit, has_next)


# --- change -------------------------------------------------------------------------------

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class ContractChange:
    start: datetime | None = None
    end: Any = _UNSET
    contact: Any = _UNSET
    user_verification: str | None = None
    pick_up_info: Any = _UNSET


def parse_change(body: Any) -> ContractChange:
    """``UpdateMechanicalKeyContractDto``: all optional; the contact is replaced whole."""
    if not isinstance(body, Mapping):
        raise InvalidInput("body", "must be an object")
    start = parse_time(body["start"], "start") if body.get("start") is not None else None
    end: Any = _UNSET
    if "end" in body:
        end = None if body["end"] is None else parse_time(body["end"], "end")
    contact: Any = _contact(body["contact"]) if body.get("contact") is not None else _UNSET
    verification = (
        parse_verification(body["userVerification"])
        if body.get("userVerification") is not None
        else None
    )
    pick_up: Any = _UNSET
    if "pickUpInfoForManualStorageKeys" in body:
        pick_up = _optional_text(body, "pickUpInfoForManualStorageKeys")
    return ContractChange(start, end, contact, verification, pick_up)


def update_contract(  # noqa: PLR0912, PLR0915 - the rules of endpoints.md §9.5 in order
    session: Session,
    principal: Principal,
    public_id: str,
    change: ContractChange,
    *,
    now: datetime,
) -> ContractRow:
    """PATCH (endpoints.md §9.5)."""
    contract = scoped_contract(session, principal, public_id, for_update=True)
    start = change.start if change.start is not None else contract.start
    end = contract.end if change.end is _UNSET else change.end
    progressed = any(k.status is not None for k in contract.keys)
    if change.start is not None and change.start != contract.start and progressed:
        raise InvalidInput("start", "cannot change once a key has been fetched")
    if end is not None and end != contract.end and end <= now:
        raise InvalidInput("end", "must be in the future")
    if end is not None and end <= start:
        raise InvalidInput("end", "must be after start")
    values: dict[str, Any] = {"start": start, "end": end, "updated_at": now}
    extra: dict[str, Any] = {}
    token: str | None = None
    verification = contract.user_verification
    if (
        change.user_verification is not None
        and change.user_verification != contract.user_verification
    ):
        if contract.signed_at is not None or progressed:
            raise InvalidInput(
                "userVerification", "cannot change once the contract is signed or a key fetched"
            )
        _check_verification(session, contract.organization_unit_id, change.user_verification)
        verification = change.user_verification
        extra["user_verification"] = verification
        token = new_signature_token() if verification == "1" else None
        extra["signature_token_hash"] = token_hash(token) if token else None
    if change.pick_up_info is not _UNSET:
        if change.pick_up_info is not None and not contract.is_manual:
            raise InvalidInput(
                "pickUpInfoForManualStorageKeys", "is only for manual-storage key contracts"
            )
        extra["pick_up_info"] = change.pick_up_info
    if change.contact is not _UNSET:
        values["contact"] = json.dumps(change.contact.to_json(), separators=(",", ":"))

    period_changed = start != contract.start or end != contract.end
    if period_changed:
        live = [k for k in contract.keys if not k.in_history]
        core.lock_automats(session, [k.automat_id for k in live if k.automat_id])
        shared: dict[str, bool] = dict(
            session.execute(
                select(mk.c.object_id, mk.c.shared).where(
                    mk.c.object_id.in_([k.object_id for k in live])
                )
            ).all()
        )
        for key in live:
            if key.is_device and shared.get(key.object_id):
                continue
            if _overlapping(session, key.object_id, start, end, ignore_contract=contract.id):
                raise Conflict("Overlapping contract")
        if contract.end_evaluated_at is None:
            core.move_reservations(session, contract.id, start, end or OPEN_END)
    session.execute(update(c).where(c.c.id == contract.id).values(values))
    if extra:
        session.execute(update(mc).where(mc.c.contract_id == contract.id).values(extra))
    updated = load_contract(session, contract.id)
    if period_changed or "user_verification" in extra:
        _resync_pincodes(session, updated)
        updated = load_contract(session, contract.id)
    if period_changed and updated.end is not None and updated.end > now:
        session.execute(update(c).where(c.c.id == contract.id).values(end_evaluated_at=None))
        updated.end_evaluated_at = None
    publish_contract_update(session, updated, now)
    if "signature_token_hash" in extra:
        updated.signature_token = token
    view = notification_view(session, updated)
    notifications.notify(session, view, NotificationType.CONTRACT_UPDATED, now=now)
    if "user_verification" in extra and updated.awaiting_signature:
        notifications.notify(
            session,
            view,
            NotificationType.CONTRACT_SIGNATURE_REQUESTED,
            now=now,
            event=now.isoformat(),
        )
    notifications.reschedule(session, view, now=now)
    schedule_end(session, updated, now)
    return updated


def _resync_pincodes(session: Session, contract: ContractRow) -> None:
    """New validity for the codes still on automats; none while a signature is awaited."""
    for key in contract.keys:
        if key.pincode_id is None or key.automat_id is None:
            continue
        devices.remove_pincode(session, key.automat_id, key.pincode_id)
        assert key.pincode is not None
        if core.pincode_in_use(
            session, key.automat_id, key.pincode, contract.start, contract.end
        ) or _unsigned_code_in_use(
            session, key.automat_id, key.pincode, contract.start, contract.end, contract.id
        ):
            raise Conflict(f"Pincode of key {key.key_id} is in use by another contract then")
        key.pincode_id = None
        session.execute(
            update(ck)
            .where(ck.c.contract_id == contract.id, ck.c.position == key.position)
            .values(pincode_id=None)
        )
    if not contract.awaiting_signature:
        _sync_all(session, contract)


def _delete(session: Session, contract: ContractRow, now: datetime) -> None:
    if any(k.status in (KeyStatus.FETCHED, KeyStatus.NOT_RETURNED) for k in contract.keys):
        raise InvalidInput(
            "id", "Contract cannot be deleted: a key has been fetched and not returned"
        )
    contract_steps.lock_automats_of(session, contract.keys)
    for key in contract.keys:
        if key.pincode_id is not None and key.automat_id is not None:
            devices.remove_pincode(session, key.automat_id, key.pincode_id)
    core.release(session, contract.id, None, contract.start)
    session.execute(
        update(ck).where(ck.c.contract_id == contract.id).values(pincode_id=None, pincode=None)
    )
    session.execute(update(c).where(c.c.id == contract.id).values(deleted_at=now, updated_at=now))
    # The caller may use the id again (F5 counts live contracts); the audit row keeps its own.
    session.execute(
        update(mc)
        .where(mc.c.contract_id == contract.id)
        .values(public_id=f"{contract.id}/deleted", signature_token_hash=None)
    )
    notifications.cancel_reminders(session, contract.id)
    contract_steps.cancel_end(session, contract.id)


def delete_contract(
    session: Session, principal: Principal, public_id: str, *, now: datetime
) -> None:
    """DELETE (endpoints.md §9.6): refused while a key is out."""
    _delete(session, scoped_contract(session, principal, public_id, for_update=True), now)


# --- hooks of the key register (F8, F9) ----------------------------------------------------


def _current_contract_keys(session: Session, object_ids: Sequence[str], now: datetime) -> list[Any]:
    return list(
        session.execute(
            select(ck.c.contract_id, ck.c.key_id, ck.c.position, ck.c.automat_id, c.c.request)
            .join(c, c.c.id == ck.c.contract_id)
            .where(
                ck.c.key_id.in_(list(object_ids)),
                ck.c.in_history.is_(False),
                c.c.kind == KIND,
                c.c.deleted_at.is_(None),
                c.c.completed_at.is_(None),
                or_(c.c.end.is_(None), c.c.end > now),
            )
            .order_by(c.c.start, c.c.id)
        ).all()
    )


def target_storages(
    session: Session, keys: Sequence[MechanicalKey], now: datetime
) -> dict[str, Storage]:
    """F9: the storage of the contract each key is in or next due for."""
    result: dict[str, Storage] = {}
    for row in _current_contract_keys(session, [k.object_id for k in keys], now):
        if row.key_id in result:
            continue
        if row.automat_id is not None:
            result[row.key_id] = Storage.device(row.automat_id)
            continue
        stored = json.loads(row.request).get("keys", [])
        info = stored[row.position].get("manualStorageInfo") if row.position < len(stored) else None
        if info:
            result[row.key_id] = Storage.manual(info)
    return result


def before_key_delete(
    session: Session, key: MechanicalKey, delete_active: bool, now: datetime
) -> None:
    """F8: active or future contracts block the delete unless ``deleteActiveContracts``."""
    ids = list(
        dict.fromkeys(r.contract_id for r in _current_contract_keys(session, [key.object_id], now))
    )
    if not ids:
        return
    if not delete_active:
        raise InvalidInput(
            "deleteActiveContracts",
            "the key has active or future contracts; send deleteActiveContracts: true",
        )
    for contract_id in ids:
        _delete(session, load_contract(session, contract_id, for_update=True), now)


def install() -> None:
    from keyautomat.service_layer import mechanical_keys

    if target_storages not in mechanical_keys.target_storage_resolvers:
        mechanical_keys.target_storage_resolvers.append(target_storages)
    if before_key_delete not in mechanical_keys.delete_hooks:
        mechanical_keys.delete_hooks.append(before_key_delete)


# --- signature (userVerification "1") -------------------------------------------------------


def new_signature_token() -> str:
    """The credential of a signature link: 256 random bits."""
    return secrets.token_urlsafe(32)


# What the database keeps of a signature token is the same plain SHA-256 as of a
# device token (the token is random, so no salt is needed): a copy of the database
# (a backup, a dump) then opens no signature page. Migration 0014 applied the same
# rule to the tokens stored before it.
token_hash = secret_hash


def contract_for_token(session: Session, token: str) -> ContractRow:
    found = session.scalar(
        select(mc.c.contract_id)
        .join(c, c.c.id == mc.c.contract_id)
        .where(mc.c.signature_token_hash == token_hash(token), c.c.deleted_at.is_(None))
    )
    if found is None or not token:
        raise NotFound("Signature request")
    return load_contract(session, found)


def sign(
    session: Session, token: str, name: str, data: str | None, *, now: datetime
) -> ContractRow:
    """Store the signature and when it was given; the device keys' codes reach the automats."""
    contract = contract_for_token(session, token)
    if contract.signed_at is not None:
        return contract
    if not name.strip():
        raise InvalidInput("name", "is required")
    if data:
        check_signature_image(data)
    session.execute(
        update(mc)
        .where(mc.c.contract_id == contract.id)
        .values(signed_at=now, signature_name=name.strip(), signature_data=data or None)
    )
    signed = load_contract(session, contract.id)
    _sync_all(session, signed)
    return load_contract(session, contract.id)
