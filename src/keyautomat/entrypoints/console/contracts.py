"""Contracts: the list (both kinds, period filters, search), one contract with its timeline,
and creating, changing and deleting one, resending a message, and staff handovers of
manual-storage keys (docs/console.md, "Contracts").

A form becomes the body the API would receive, parsed by the kind's own ``wire`` module,
and goes to the contract use case the API's route calls (``contracts/service.py``,
``contracts/mechanical/custody.py``): the rules and their errors are the API's, and a
refused field is shown next to the form field it came from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from keyautomat.bootstrap import Container
from keyautomat.contracts import service
from keyautomat.contracts.iloq import routes as iloq_routes
from keyautomat.contracts.iloq import wire as iloq_wire
from keyautomat.contracts.kind import ContractKind
from keyautomat.contracts.mechanical import custody
from keyautomat.contracts.mechanical import wire as mechanical_wire
from keyautomat.contracts.mechanical.kind import MechanicalKind
from keyautomat.contracts.model import Contract, ListFilters
from keyautomat.contracts.routes import BeforeCreate, WireFormat
from keyautomat.contracts.rules import ContractType
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from keyautomat.domain.model import Product
from keyautomat.domain.notifications import LANGUAGES, Contact
from keyautomat.domain.times import format_utc
from keyautomat.entrypoints.console.forms import (
    form_errors,
    local_input,
    wall_clock,
    zone_of,
)
from keyautomat.entrypoints.console.strings import t
from keyautomat.entrypoints.console.web import (
    PREFIX,
    SignedIn,
    Submission,
    Submitted,
    console_of,
    form_text,
    notice_text,
    render,
    see_other,
)
from keyautomat.service_layer import access_rights, console_views, mechanical_keys, notifications
from keyautomat.service_layer.console_views import ContractChoices, ContractSearch
from keyautomat.service_layer.iloq import AccessRight, IloqError
from keyautomat.service_layer.pagination import PageRequest
from keyautomat.service_layer.principal import Principal

router = APIRouter(prefix="/contracts", include_in_schema=False)

PAGE_SIZE = 25
KINDS = ("iloq", "mechanical")
WIRES: dict[str, WireFormat] = {"iloq": iloq_wire, "mechanical": mechanical_wire}
PERIODS = ("ongoing", "future", "ended")
NOTICES = (
    "contract.created",
    "contract.saved",
    "contract.deleted",
    "contract.resent",
    "contract.handed_over",
    "contract.given_back",
)
# The access-rights picker and the mechanical keys offer this many at once; a search
# narrows them.
PICKER_SIZE = 100


def _kind(container: Container, name: str) -> ContractKind[Any]:
    if name not in KINDS:
        raise NotFound("Contract")
    kind: ContractKind[Any] = container.contract_kinds[name]
    return kind


def _path(kind: str, public_id: str) -> str:
    """A contract's page: mechanical ids are the caller's, so they are quoted."""
    return f"{PREFIX}/contracts/{kind}/{quote(public_id, safe='')}"


# --- the list ---------------------------------------------------------------------------


@router.get("")
async def contract_list(request: Request, me: SignedIn) -> HTMLResponse:
    query = request.query_params
    page = PageRequest.parse(query.get("after"), query.get("limit"), default_limit=PAGE_SIZE)
    chosen = [p for p in query.getlist("period") if p in PERIODS]
    periods = ListFilters(
        ongoing="ongoing" in chosen or None,
        future="future" in chosen or None,
        ended="ended" in chosen or None,
    )
    text = form_text(dict(query), "q", max_length=console_views.MAX_SEARCH)
    # Viewers never see a pincode, so a code cannot be searched for by one either: the
    # search would tell which contract has it.
    search = ContractSearch(periods, text, codes=me.role.writes)
    container = console_of(request).container
    now = container.clock.now()
    found = await container.db.run(
        lambda s: console_views.contract_list(s, me.principal, page, search, now)
    )
    return render(
        request,
        "contracts.html",
        section="contracts",
        page=found,
        request_page=page,
        chosen=chosen,
        q=text or "",
        paging=[("period", p) for p in chosen] + ([("q", text)] if text else []),
        path=_path,
        notice=notice_text(query.get("notice"), NOTICES),
    )


# --- forms: times, contacts, errors -----------------------------------------------------


def _wire_time(submitted: Submission, field: str, zone: ZoneInfo) -> str | None:
    """A wall-clock field as the API's UTC time text."""
    moment = wall_clock(submitted, field, zone)
    return None if moment is None else format_utc(moment)


def _contact(submitted: Submission, kept: Contact | None = None) -> dict[str, Any] | None:
    """The form's contact in the wire format; None when the form gave none. What the form
    does not show of a stored contact (its own notification choices) is kept."""
    name = submitted.text("contact_name")
    email = submitted.text("contact_email", max_length=254)
    phone = submitted.text("contact_phone", max_length=64)
    if name is None and email is None and phone is None:
        return None
    contact: dict[str, Any] = {
        "name": name,
        "email": email,
        "phoneNumber": phone,
        "language": submitted.text("contact_language", max_length=8),
        "sendSms": submitted.form.get("contact_sms") == "1",
        "sendEmail": submitted.form.get("contact_email_on") == "1",
    }
    if kept is not None and kept.notifications is not None:
        contact["notifications"] = kept.notifications
    return contact


def _contact_values(contact: Contact | None) -> dict[str, str]:
    if contact is None:
        return {}
    return {
        "contact_name": contact.name,
        "contact_email": contact.email or "",
        "contact_phone": contact.phone_number or "",
        "contact_language": contact.language or "",
        "contact_sms": "1" if contact.send_sms else "",
        "contact_email_on": "1" if contact.send_email else "",
    }


CONTACT_FIELDS = (
    "contact_name",
    "contact_email",
    "contact_phone",
    "contact_language",
    "contact_sms",
    "contact_email_on",
)
# Where the API's field names (first part) land on the forms.
FORM_FIELDS = {
    "contractType": "contract_type",
    "accessRightIds": "access_right",
    "keyAutomatId": "automat_id",
    "groupId": "group_id",
    "keyIds": "key_ids",
    "numberOfKeys": "number_of_keys",
    "pincodes": "pincodes",
    "start": "start",
    "end": "end",
    "timezone": "timezone",
    "contact": "contact_name",
    "contact.name": "contact_name",
    "contact.email": "contact_email",
    "contact.phoneNumber": "contact_phone",
    "contact.language": "contact_language",
    "id": "public_id",
    "keys": "key",
    "userVerification": "user_verification",
    "pickUpInfoForManualStorageKeys": "pick_up_info",
    "freeLockerAfterFetch": "free_locker",
}


# --- creating an iLOQ contract ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Picker:
    """The access rights the form offers (the API's use case), or why there are none."""

    rights: list[AccessRight]
    more: bool
    error: str | None


async def _picker(container: Container, principal: Principal, search: str | None) -> Picker:
    try:
        found = await access_rights.list_access_rights(
            principal,
            PageRequest(0, PICKER_SIZE),
            search=search,
            default_only=False,
            systems=container.iloq,
            cache=container.access_rights_cache,
        )
    except (IloqError, DomainError):
        return Picker([], False, t("contract.rights.unavailable"))
    return Picker(list(found.items), found.has_next, None)


def _new_form(
    request: Request,
    template: str,
    status: int,
    values: dict[str, str],
    lists: dict[str, list[str]] | None,
    errors: dict[str, str] | None,
    **choices: Any,
) -> HTMLResponse:
    """A create form, empty or with what was typed and why it was refused."""
    return render(
        request,
        template,
        status=status,
        section="contracts",
        values=values,
        lists=lists or {},
        errors=errors or {},
        languages=LANGUAGES,
        **choices,
    )


def _default_zone(container: Container, principal: Principal) -> Any:
    return container.db.run(
        lambda s: notifications.load_settings(s, principal.organization_unit_id).timezone
    )


async def _iloq_form(
    request: Request,
    principal: Principal,
    *,
    values: dict[str, str] | None = None,
    lists: dict[str, list[str]] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    container = console_of(request).container
    search = form_text(dict(request.query_params), "rights", max_length=100)
    picker = await _picker(container, principal, search)
    choices: ContractChoices = await container.db.run(
        lambda s: console_views.contract_choices(s, principal, Product.KEY20, with_keys=True)
    )
    defaults = {
        "contract_type": "1",
        "where": "automat",
        "number_of_keys": "1",
        "timezone": await _default_zone(container, principal),
    }
    return _new_form(
        request,
        "contract_iloq_new.html",
        status,
        {**defaults, **(values or {})},
        lists,
        errors,
        picker=picker,
        rights_search=search or "",
        choices=choices,
    )


@router.get("/new/iloq")
async def iloq_new_page(request: Request, me: SignedIn) -> HTMLResponse:
    return await _iloq_form(request, me.principal)


def _iloq_body(submitted: Submission) -> dict[str, Any]:
    """The form as ``CreateIloqKeyContractDto`` (endpoints.md §3.3)."""
    zone = zone_of(submitted)
    contract_type = submitted.required("contract_type", max_length=1)
    where = submitted.form.get("where", "")
    key_ids = submitted.every("key_id", max_length=64) + [
        line.strip()
        for line in (submitted.text("key_ids", max_length=4000) or "").splitlines()
        if line.strip()
    ]
    number = submitted.text("number_of_keys", max_length=3)
    pincodes = submitted.text("pincodes", max_length=400)
    body: dict[str, Any] = {
        "contractType": int(contract_type) if contract_type in ("1", "2", "3") else contract_type,
        "start": _wire_time(submitted, "start", zone),
        "end": _wire_time(submitted, "end", zone),
        "accessRightIds": submitted.every("access_right", max_length=64) or None,
        "keyIds": list(dict.fromkeys(key_ids)) or None,
        "contact": _contact(submitted),
    }
    if where == "automat":
        body["keyAutomatId"] = submitted.text("automat_id", max_length=16)
    elif where == "group":
        body["groupId"] = submitted.text("group_id", max_length=24)
    if number is not None and where != "keys":
        if not number.isascii() or not number.isdigit():
            raise InvalidInput("number_of_keys", "must be a whole number")
        body["numberOfKeys"] = int(number)
    if pincodes is not None:
        body["pincodes"] = [p.strip() for p in pincodes.split(",")]
    return {"input": body}


IloqNewFields = (
    "contract_type",
    "start",
    "end",
    "timezone",
    "where",
    "automat_id",
    "group_id",
    "key_ids",
    "number_of_keys",
    "pincodes",
    *CONTACT_FIELDS,
)


@router.post("/new/iloq")
async def iloq_create(request: Request, submitted: Submitted) -> Response:
    return await _create(request, submitted, ILOQ_FORM)


# --- creating a mechanical contract -----------------------------------------------------


async def _mechanical_form(
    request: Request,
    principal: Principal,
    *,
    values: dict[str, str] | None = None,
    lists: dict[str, list[str]] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    container = console_of(request).container
    search = form_text(dict(request.query_params), "keys", max_length=100)
    found = await container.db.run(
        lambda s: mechanical_keys.list_keys(
            s, principal, PageRequest(0, PICKER_SIZE), search=search
        )
    )
    defaults = {"user_verification": "0", "timezone": await _default_zone(container, principal)}
    return _new_form(
        request,
        "contract_mechanical_new.html",
        status,
        {**defaults, **(values or {})},
        lists,
        errors,
        keys=found,
        keys_search=search or "",
    )


@router.get("/new/mechanical")
async def mechanical_new_page(request: Request, me: SignedIn) -> HTMLResponse:
    return await _mechanical_form(request, me.principal)


def _mechanical_body(submitted: Submission) -> dict[str, Any]:
    """The form as ``CreateMechanicalKeyContractDto`` (endpoints.md §9.3)."""
    zone = zone_of(submitted)
    keys = [{"id": key_id} for key_id in submitted.every("key", max_length=128)]
    return {
        "id": submitted.text("public_id", max_length=128),
        "start": _wire_time(submitted, "start", zone),
        "end": _wire_time(submitted, "end", zone),
        "contact": _contact(submitted),
        "keys": keys,
        "userVerification": submitted.text("user_verification", max_length=1),
        "pickUpInfoForManualStorageKeys": submitted.text("pick_up_info", max_length=500),
        "freeLockerAfterFetch": submitted.form.get("free_locker") == "1",
    }


MechanicalNewFields = (
    "public_id",
    "start",
    "end",
    "timezone",
    "user_verification",
    "pick_up_info",
    "free_locker",
    *CONTACT_FIELDS,
)


@router.post("/new/mechanical")
async def mechanical_create(request: Request, submitted: Submitted) -> Response:
    return await _create(request, submitted, MECHANICAL_FORM)


@dataclass(frozen=True, slots=True)
class NewForm:
    """One kind's create form: how it becomes the API's body, how it is shown again with
    what was typed, and the API's checks before the transaction (iLOQ: the rights)."""

    kind: str
    body: Callable[[Submission], dict[str, Any]]
    show: Callable[..., Awaitable[HTMLResponse]]
    fields: tuple[str, ...]
    lists: tuple[str, ...]  # fields sent several times (checkboxes)
    before: BeforeCreate | None = None


ILOQ_FORM = NewForm(
    "iloq",
    _iloq_body,
    _iloq_form,
    IloqNewFields,
    ("access_right", "key_id"),
    iloq_routes.known_access_rights,
)
MECHANICAL_FORM = NewForm(
    "mechanical", _mechanical_body, _mechanical_form, MechanicalNewFields, ("key",)
)


async def _create(request: Request, submitted: Submission, form: NewForm) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    kind = _kind(container, form.kind)
    now = container.clock.now()
    try:
        new = WIRES[form.kind].parse_new_contract(form.body(submitted), now)
        if form.before is not None:
            await form.before(new, principal, container)
        contract = await container.db.run(
            lambda s: service.create(SqlContractStore(s), kind, principal, new, now=now)
        )
    except (InvalidInput, Conflict) as exc:
        return await form.show(
            request,
            principal,
            values={k: submitted.form.get(k, "") for k in form.fields},
            lists={n: submitted.every(n, max_length=128) for n in form.lists},
            errors=form_errors(exc, FORM_FIELDS),
            status=400 if isinstance(exc, InvalidInput) else 409,
        )
    return see_other(_path(form.kind, contract.public_id), notice="contract.created")


# --- one contract (after the forms: "/new/iloq" names no contract) -------------------


@router.get("/{kind_name}/{public_id}")
async def contract_detail(
    request: Request, kind_name: str, public_id: str, me: SignedIn
) -> HTMLResponse:
    container = console_of(request).container
    kind = _kind(container, kind_name)
    now = container.clock.now()

    def work(session: Session) -> console_views.ContractDetail:
        contract = service.get(SqlContractStore(session), kind, me.principal, public_id)
        return console_views.contract_detail(session, me.principal, contract, now)

    detail = await container.db.run(work)
    return render(
        request,
        "contract.html",
        section="contracts",
        d=detail,
        c=detail.contract,
        base=_path(kind_name, detail.contract.public_id),
        notice=notice_text(request.query_params.get("notice"), NOTICES),
        kinds=ContractType,
    )


# --- changing one -----------------------------------------------------------------------

EDIT_FIELDS = (
    "start",
    "end",
    "timezone",
    "pick_up_info",
    *CONTACT_FIELDS,
)


def _edit_form(
    request: Request,
    kind_name: str,
    detail: console_views.ContractDetail,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "contract_edit.html",
        status=status,
        section="contracts",
        c=detail.contract,
        d=detail,
        base=_path(kind_name, detail.contract.public_id),
        values=values,
        errors=errors,
        languages=LANGUAGES,
    )


async def _detail(
    container: Container, principal: Principal, kind: ContractKind[Any], public_id: str
) -> console_views.ContractDetail:
    now = container.clock.now()

    def work(session: Session) -> console_views.ContractDetail:
        contract = service.get(SqlContractStore(session), kind, principal, public_id)
        return console_views.contract_detail(session, principal, contract, now)

    return await container.db.run(work)


@router.get("/{kind_name}/{public_id}/edit")
async def edit_page(request: Request, kind_name: str, public_id: str, me: SignedIn) -> Response:
    container = console_of(request).container
    detail = await _detail(container, me.principal, _kind(container, kind_name), public_id)
    c, zone = detail.contract, detail.timezone
    values = {
        "start": local_input(c.start, zone),
        "end": local_input(c.end, zone),
        "timezone": zone,
        "pick_up_info": c.pick_up_info or "",
        **_contact_values(c.contact),
    }
    return _edit_form(request, kind_name, detail, values, {})


def _change_body(submitted: Submission, contract: Contract) -> dict[str, Any]:
    """The form as the kind's PATCH body: the period, the contact (whole) and, for
    manual-storage keys, the pick-up information."""
    zone = zone_of(submitted)
    start = _wire_time(submitted, "start", zone)
    body: dict[str, Any] = {"end": _wire_time(submitted, "end", zone)}
    if start is not None:
        body["start"] = start
    contact = _contact(submitted, contract.contact)
    if contract.kind == "iloq":
        if contact is not None:
            contact["iloqPersonId"] = contract.iloq_person_id
        body["contact"] = contact
    elif contact is not None:
        body["contact"] = contact
    if contract.has_manual_keys:
        body["pickUpInfoForManualStorageKeys"] = submitted.text("pick_up_info", max_length=500)
    return body


@router.post("/{kind_name}/{public_id}/edit")
async def edit(request: Request, kind_name: str, public_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    kind = _kind(container, kind_name)
    wire = WIRES[kind_name]
    now = container.clock.now()

    def work(session: Session) -> Contract:
        store = SqlContractStore(session)
        current = service.get(store, kind, principal, public_id)
        change = wire.parse_change(_change_body(submitted, current))
        return service.update(store, kind, principal, public_id, change, now=now)

    try:
        contract = await container.db.run(work)
    except (InvalidInput, Conflict) as exc:
        detail = await _detail(container, principal, kind, public_id)
        errors = form_errors(exc, FORM_FIELDS)
        values = {k: submitted.form.get(k, "") for k in EDIT_FIELDS}
        return _edit_form(request, kind_name, detail, values, errors, status=400)
    return see_other(_path(kind_name, contract.public_id), notice="contract.saved")


@router.post("/{kind_name}/{public_id}/delete")
async def delete(
    request: Request, kind_name: str, public_id: str, submitted: Submitted
) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    kind = _kind(container, kind_name)
    now = container.clock.now()
    await container.db.run(
        lambda s: service.delete(SqlContractStore(s), kind, principal, public_id, now=now)
    )
    return see_other(f"{PREFIX}/contracts", notice="contract.deleted")


@router.post("/{kind_name}/{public_id}/resend")
async def resend(
    request: Request, kind_name: str, public_id: str, submitted: Submitted
) -> Response:
    """Send one of the contract's messages again (``notifications.resend``)."""
    principal = submitted.identity.principal
    container = console_of(request).container
    kind = _kind(container, kind_name)
    message = submitted.required("message_id", max_length=15)
    if not message.isascii() or not message.isdigit():
        raise NotFound("Notification")
    now = container.clock.now()

    def work(session: Session) -> None:
        contract = service.get(SqlContractStore(session), kind, principal, public_id)
        notifications.resend(session, principal, contract.id, int(message), now=now)

    await container.db.run(work)
    return see_other(_path(kind_name, public_id), notice="contract.resent")


# --- staff handovers of manual-storage keys (F11) ---------------------------------------


async def _custody(
    request: Request, public_id: str, submitted: Submission, record: Any, notice: str
) -> Response:
    """A staff handover or return (``custody.record_handover``/``record_return``, the API's
    ``.../handover`` and ``.../return``) of the key the form names."""
    principal = submitted.identity.principal
    container = console_of(request).container
    kind = container.contract_kinds[MechanicalKind.name]
    key_id = submitted.required("key_id", max_length=128)
    now = container.clock.now()
    await container.db.run(lambda s: record(s, kind, principal, public_id, key_id, now=now))
    return see_other(_path("mechanical", public_id), notice=notice)


@router.post("/mechanical/{public_id}/handover")
async def handover(request: Request, public_id: str, submitted: Submitted) -> Response:
    """Staff handed the key to the guest."""
    return await _custody(
        request, public_id, submitted, custody.record_handover, "contract.handed_over"
    )


@router.post("/mechanical/{public_id}/return")
async def give_back(request: Request, public_id: str, submitted: Submitted) -> Response:
    """The guest gave the key back to staff."""
    return await _custody(
        request, public_id, submitted, custody.record_return, "contract.given_back"
    )
