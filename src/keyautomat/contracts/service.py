"""The one contract flow: create, get, list, change and delete, for every kind.

Use cases take parsed commands (each kind's ``wire`` module parses the request)
and return the :class:`~keyautomat.contracts.model.Contract` the route turns into
its response. They run in one unit of work (``store``) and never commit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from keyautomat.contracts import rules
from keyautomat.contracts.kind import ContractKind, New
from keyautomat.contracts.model import (
    UNSET,
    CodeGrant,
    Contract,
    ContractChange,
    ContractKey,
    ListFilters,
    Period,
    PlannedKey,
    Slot,
)
from keyautomat.contracts.rules import ContractType
from keyautomat.contracts.store import ContractStore
from keyautomat.domain import webhooks as wh
from keyautomat.domain.errors import Conflict, InvalidInput, NotFound
from keyautomat.domain.ids import new_object_id, new_pincode
from keyautomat.domain.notifications import Contact, ContractView, KeyView, NotificationType
from keyautomat.domain.notifications import ContractType as ViewType
from keyautomat.domain.text import one_line
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal

# Draws of a random code before giving up: with 6 digits, a clash is one in 10^6
# per code already valid on the automat at the time.
PINCODE_DRAWS = 50
# Outbox job: at a contract's start, is a key it waits for still out? (succession.py)
LATE_KIND = "contract-key-late"


# --- views of a contract ------------------------------------------------------------------


def notification_view(
    store: ContractStore, kind: ContractKind[Any], contract: Contract
) -> ContractView:
    automats = store.automat_views(k.automat_id for k in contract.keys if k.automat_id)
    names = kind.key_names(store, contract)
    awaiting = contract.awaiting_verification
    return ContractView(
        kind=kind.view_kind,
        contract_id=contract.id,
        contract_type=ViewType(contract.contract_type.wire_name),
        organization_unit_id=contract.organization_unit_id,
        start=contract.start,
        end=contract.end,
        contact=contract.contact,
        keys=tuple(
            KeyView(
                id=k.key_id,
                name=names.get(k.stored_id),
                # No code before the signature: the automat does not release the key yet.
                pincode=None if awaiting else k.pincode,
                automat=automats.get(k.automat_id) if k.automat_id else None,
                storage_info=k.manual_info,
            )
            for k in contract.keys
            if not k.in_history
        ),
        pick_up_info=contract.pick_up_info,
        signature_link=kind.signature_link(contract) if awaiting else None,
    )


def publish_key_update(
    store: ContractStore,
    contract: Contract,
    key: ContractKey,
    now: datetime,
    *,
    once: str | None = None,
) -> None:
    """``contract-update`` of one key (webhooks.md §5.2); keys in manual storage have no
    automat and no code."""
    store.publish(
        contract.organization_unit_id,
        wh.EventType.CONTRACT_UPDATE,
        wh.contract_update_data(
            contract_type=contract.contract_type.wire_name,
            contract_id=contract.public_id,
            contract_object_id=contract.id,
            key_id=key.key_id,
            start=contract.start,
            end=contract.end,
            pincode=key.pincode if key.in_automat else None,
            device_id=key.automat_id,
        ),
        now,
        once=once,
    )


def publish_contract_update(store: ContractStore, contract: Contract, now: datetime) -> None:
    """One ``contract-update`` per key still in the contract."""
    for key in contract.keys:
        if not key.in_history:
            publish_key_update(store, contract, key, now)


def contact_line(contact: Contact | None) -> str | None:
    """Who to call about a contract, on one line of a notice to staff: name, phone, email."""
    if contact is None:
        return None
    parts = [contact.name, contact.phone_number, contact.email]
    return one_line(", ".join(p for p in parts if p), 200)


def publish_status(
    store: ContractStore,
    contract: Contract,
    key: ContractKey,
    state: str,
    at: datetime,
    locker_index: int | None = None,
    *,
    once: str | None = None,
) -> None:
    """``key-status`` of one key (webhooks.md §5.1, and our own states: docs/webhooks.md)."""
    in_automat = key.automat_id is not None and key.locker_index is not None
    where = locker_index if locker_index is not None else key.locker_index
    store.publish(
        contract.organization_unit_id,
        wh.EventType.KEY_STATUS,
        wh.key_status_data(
            state=str(state),
            key_id=key.key_id,
            contract_id=contract.public_id,
            contract_object_id=contract.id,
            device_id=key.automat_id if in_automat else None,
            locker_index=where if in_automat else None,
        ),
        at,
        once=once,
    )


# --- pincodes -----------------------------------------------------------------------------


def code_taken(
    store: ContractStore,
    kind: ContractKind[Any],
    automat_id: str,
    code: str,
    window: tuple[datetime, datetime | None],
    ignore_contract: str | None = None,
) -> bool:
    # A code valid on the automat is taken, and so are codes not on their automat: those
    # waiting for a signature (their kind defers codes; this covers held ones as well) or
    # those held back while their key is out with another contract (back to back). One
    # question to the store (one statement).
    return store.code_taken(
        automat_id, code, *window, unsynced=kind.defers_codes, ignore_contract=ignore_contract
    )


def choose_pincode(
    store: ContractStore,
    kind: ContractKind[Any],
    automat_id: str,
    given: str | None,
    window: tuple[datetime, datetime | None],
    *,
    taken: set[tuple[str, str]],
    field: str,
) -> str:
    """The caller's code if free on the automat over the window (else 400 naming ``field``),
    or a fresh random one, re-drawn on a clash (gaps.md C8). ``taken`` holds the
    (automat, code) pairs already chosen for this contract."""
    if given is not None:
        if (automat_id, given) in taken or code_taken(store, kind, automat_id, given, window):
            raise InvalidInput(field, "Pincode already in use")
        taken.add((automat_id, given))
        return given
    for _ in range(PINCODE_DRAWS):
        code = new_pincode()
        if (automat_id, code) not in taken and not code_taken(
            store, kind, automat_id, code, window
        ):
            taken.add((automat_id, code))
            return code
    raise RuntimeError(f"no free pincode found after {PINCODE_DRAWS} draws")


def put_code_on_automat(
    store: ContractStore,
    kind: ContractKind[Any],
    contract: Contract,
    key: ContractKey,
    *,
    checked: bool = False,
) -> None:
    """Make the key's automat honour its code over the contract's window (next sync).
    ``checked``: :func:`code_taken` has just cleared the code over this window in this
    transaction, so the store need not ask again."""
    ctype = contract.contract_type
    window = rules.pincode_window(ctype, contract.start, contract.end)
    purpose = rules.pincode_purpose(ctype)
    grant = CodeGrant.for_key(
        contract, key, window, purpose, program_first=kind.program_first(ctype)
    )
    key.pincode_id = store.add_pincode(grant, checked=checked)


def put_due_codes(store: ContractStore, kind: ContractKind[Any], contract: Contract) -> None:
    """Put on their automats the codes that are due there (a signature was given): not
    those held back while their key is out, which go on when it is back."""
    for key in contract.keys:
        if key.due_on_automat:
            put_code_on_automat(store, kind, contract, key)
            store.set_key(contract.id, key.position, pincode_id=key.pincode_id)


def schedule_late_check(
    store: ContractStore, contract: Contract, key: ContractKey, now: datetime
) -> None:
    """A held key's contract checks at its start whether the key is back (succession.py);
    once per start (a PATCH of the start plans the check again)."""
    store.enqueue(
        LATE_KIND,
        {"contractId": contract.id, "position": key.position},
        now=now,
        ref=f"contract:{contract.id}:late",
        due_at=max(contract.start, now),
        once=f"key-late:{contract.id}:{key.position}:{contract.start.isoformat()}",
    )


def _new_key(position: int, planned: PlannedKey) -> ContractKey:
    """A key a contract has just booked: no code yet, waiting."""
    return ContractKey(
        position=position,
        key_id=planned.key_id,
        stored_id=planned.stored_id,
        automat_id=planned.automat_id,
        locker_index=planned.locker_index,
        manual_info=planned.manual_info,
        pincode=None,
        pincode_id=None,
        status=None,
        in_history=False,
    )


def add_key(
    store: ContractStore,
    kind: ContractKind[Any],
    contract: Contract,
    planned: PlannedKey,
    now: datetime,
) -> ContractKey:
    """One key more for the rest of a running contract (a replacement for a lost one): a
    fresh code, its locker and key reserved from now, the code on the automat, and a
    ``contract-update`` of the key. The kind chose it with its automat locked."""
    assert planned.automat_id is not None
    assert planned.locker_index is not None
    key = _new_key(max(k.position for k in contract.keys) + 1, planned)
    ctype = contract.contract_type
    window = rules.pincode_window(ctype, contract.start, contract.end)
    key.pincode = choose_pincode(
        store, kind, planned.automat_id, None, window, taken=set(), field="pincode"
    )
    slot = Slot(planned.automat_id, planned.locker_index, planned.reserved_key_id)
    store.reserve(
        contract.id,
        key.position,
        slot,
        max(contract.start, now),
        rules.reservation_until(ctype, contract.end),
    )
    if not contract.awaiting_verification:
        put_code_on_automat(store, kind, contract, key, checked=True)
    contract.keys.append(key)
    store.insert_key(contract, key)
    publish_key_update(store, contract, key, now, once=f"key-added:{contract.id}:{key.position}")
    return key


# --- create -------------------------------------------------------------------------------


def create(
    store: ContractStore,
    kind: ContractKind[New],
    principal: Principal,
    new: New,
    *,
    now: datetime,
) -> Contract:
    draft = kind.plan(store, principal, new, now)
    terms = draft.terms
    contract_id = new_object_id(now.timestamp())
    contract = Contract(
        id=contract_id,
        kind=kind.name,
        public_id=draft.public_id or contract_id,
        organization_unit_id=principal.organization_unit_id,
        contract_type=terms.contract_type,
        start=terms.start.astimezone(UTC),
        end=terms.end.astimezone(UTC) if terms.end else None,
        contact=terms.contact,
        request=draft.request,
        end_evaluated_at=None,
        completed_at=None,
        iloq_person_id=terms.iloq_person_id,
        free_locker_after_fetch=terms.free_locker_after_fetch,
        user_verification=terms.user_verification,
        pick_up_info=terms.pick_up_info,
        signature_token=draft.signature_token,
        link_expires_at=draft.link_expires_at,
    )
    store.insert(contract, root_unit_id=draft.root_unit_id, now=now)
    window = rules.pincode_window(terms.contract_type, terms.start, terms.end)
    until = rules.reservation_until(terms.contract_type, terms.end)
    taken: set[tuple[str, str]] = set()
    for position, planned in enumerate(draft.keys):
        key = _new_key(position, planned)
        contract.keys.append(key)
        if planned.automat_id is None:
            continue  # manual storage: staff hand it over, no code
        assert planned.locker_index is not None
        key.pincode = choose_pincode(
            store,
            kind,
            planned.automat_id,
            planned.given_pincode,
            window,
            taken=taken,
            field=draft.pincode_field.format(position),
        )
        slot = Slot(planned.automat_id, planned.locker_index, planned.reserved_key_id)
        store.reserve(contract_id, position, slot, terms.start, until)
        if not planned.in_place:
            # Booked back to back: the key is out with the previous user; the code goes
            # on the automat when the key is back (succession.offer).
            key.held_since = now
        elif not contract.awaiting_verification:
            put_code_on_automat(store, kind, contract, key, checked=True)
    store.insert_keys(contract)
    for key in contract.keys:
        if key.held_since is not None:
            schedule_late_check(store, contract, key, now)
    publish_contract_update(store, contract, now)
    view = notification_view(store, kind, contract)
    store.notify(view, NotificationType.CONTRACT_CREATED, now=now)
    if contract.awaiting_verification:
        store.notify(view, NotificationType.CONTRACT_SIGNATURE_REQUESTED, now=now)
    store.schedule_reminders(view, now)
    store.schedule_end(contract, now, fresh=True)
    return contract


# --- read ---------------------------------------------------------------------------------


def get(
    store: ContractStore,
    kind: ContractKind[Any],
    principal: Principal,
    public_id: str,
    *,
    for_update: bool = False,
) -> Contract:
    root = kind.root_unit_id(store, principal)
    contract = store.find(kind.name, public_id, principal, root, for_update=for_update)
    if contract is None:
        raise NotFound("Contract")
    return contract


def list_contracts(
    store: ContractStore,
    kind: ContractKind[Any],
    principal: Principal,
    page: PageRequest,
    filters: ListFilters,
    *,
    now: datetime,
) -> Page[Contract]:
    """Oldest first; the period filters as gaps.md C14 defines them."""
    root = kind.root_unit_id(store, principal)
    items, has_next = store.list_page(kind.name, principal, page, filters, root, now)
    return Page(items, page.offset + len(items), page.limit, has_next)


# --- change -------------------------------------------------------------------------------


def resync_codes(
    store: ContractStore, kind: ContractKind[Any], contract: Contract, now: datetime
) -> None:
    """The codes still in use take the contract's (new) window: removed, checked against
    the other contracts' codes then, and put back unless a signature is awaited or the
    key is out with another contract (then its check at the start is planned again)."""
    window = rules.pincode_window(contract.contract_type, contract.start, contract.end)
    for key in contract.keys:
        if key.automat_id is None or key.pincode is None or key.in_history:
            continue  # no code, or a code retired with its key or its freed locker
        if key.pincode_id is not None:
            store.remove_pincode(key.automat_id, key.pincode_id)
            key.pincode_id = None
        if code_taken(store, kind, key.automat_id, key.pincode, window, contract.id):
            raise Conflict(f"Pincode of key {key.key_id} is in use by another contract then")
        if key.held_since is not None:
            schedule_late_check(store, contract, key, now)
        elif not contract.awaiting_verification:
            put_code_on_automat(store, kind, contract, key, checked=True)
        store.set_key(contract.id, key.position, pincode_id=key.pincode_id)


def update(
    store: ContractStore,
    kind: ContractKind[Any],
    principal: Principal,
    public_id: str,
    change: ContractChange,
    *,
    now: datetime,
) -> Contract:
    """PATCH (endpoints.md §3.5, §9.5, gaps.md C15)."""
    contract = get(store, kind, principal, public_id, for_update=True)
    ctype = contract.contract_type
    start = change.start if change.start is not None else contract.start
    end = contract.end
    if change.changes_end and not kind.ignores_end(ctype):
        if change.end is None and kind.end_required(ctype):
            raise InvalidInput("end", "is required for default contracts")
        end = change.end
    rules.check_changed_period(
        old_start=contract.start,
        old_end=contract.end,
        start=start,
        end=end,
        progressed=contract.progressed,
        now=now,
    )
    was_awaiting = contract.awaiting_verification
    terms = kind.change_terms(store, contract, change, now)
    period_changed = start != contract.start or end != contract.end
    if period_changed:
        live = [k for k in contract.keys if not k.in_history]
        store.lock_automats(k.automat_id for k in live)
        until = rules.reservation_until(ctype, end)
        kind.check_period_free(store, contract, Period(start, end, until))
        if contract.end_evaluated_at is None:
            store.move_reservations(contract.id, start, until)
    values: dict[str, Any] = {"start": start, "end": end, "updated_at": now}
    contract.start, contract.end = start, end
    if change.changes_contact:
        contract.contact = change.contact
        person = change.iloq_person_id
        contract.iloq_person_id = None if person is UNSET else person
        values["contact"] = contract.contact
    if period_changed and end is not None and end > now and contract.end_evaluated_at is not None:
        values["end_evaluated_at"] = contract.end_evaluated_at = None
    store.update(contract, values)
    if terms:
        store.update_terms(contract.id, terms)
    if period_changed or was_awaiting != contract.awaiting_verification:
        resync_codes(store, kind, contract, now)
    publish_contract_update(store, contract, now)
    view = notification_view(store, kind, contract)
    store.notify(view, NotificationType.CONTRACT_UPDATED, now=now)
    if "user_verification" in terms and contract.awaiting_verification:
        store.notify(
            view, NotificationType.CONTRACT_SIGNATURE_REQUESTED, now=now, event=now.isoformat()
        )
    store.reschedule_reminders(view, now)
    store.schedule_end(contract, now)
    return contract


# --- delete -------------------------------------------------------------------------------


def remove(
    store: ContractStore, kind: ContractKind[Any], contract: Contract, now: datetime
) -> None:
    """Delete a loaded contract: refused in half-finished states (endpoints.md §3.6, §9.6,
    gaps.md C16). A deleted contract blocks nothing, not even its past."""
    reason = rules.delete_refusal(contract.contract_type, [k.status for k in contract.keys])
    if reason is not None:
        raise InvalidInput("id", f"Contract cannot be deleted: {reason}")
    store.lock_automats(k.automat_id for k in contract.keys)
    for key in contract.keys:
        if key.pincode_id is not None and key.automat_id is not None:
            store.remove_pincode(key.automat_id, key.pincode_id)
    store.release(contract.id, None, contract.start)
    store.clear_codes(contract.id)
    store.update(contract, {"deleted_at": now, "updated_at": now})
    kind.after_delete(store, contract)
    store.cancel_reminders(contract.id)
    store.cancel_end(contract.id)


def delete(
    store: ContractStore,
    kind: ContractKind[Any],
    principal: Principal,
    public_id: str,
    *,
    now: datetime,
) -> None:
    remove(store, kind, get(store, kind, principal, public_id, for_update=True), now)


__all__ = [
    "ContractType",
    "choose_pincode",
    "create",
    "delete",
    "get",
    "list_contracts",
    "notification_view",
    "publish_contract_update",
    "remove",
    "update",
]
