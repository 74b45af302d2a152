"""Keys: iLOQ keys and mechanical keys with their status and storage, adding and editing
mechanical keys, and the staff handovers of manual-storage keys (docs/console.md, "Keys").

Every change calls the use case the API's route calls (``service_layer/mechanical_keys.py``;
the handovers are the contract pages' forms, ``contracts/mechanical/custody.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from keyautomat.domain.errors import Conflict, InvalidInput
from keyautomat.domain.iloq import IloqKey
from keyautomat.domain.mechanical import MechanicalKey, Storage
from keyautomat.domain.model import Product
from keyautomat.entrypoints.console.forms import form_errors
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
from keyautomat.service_layer import console_views, iloq_keys, mechanical_keys
from keyautomat.service_layer.console_views import Choice, KeyContract
from keyautomat.service_layer.mechanical_keys import KeyUpdate
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal

router = APIRouter(prefix="/keys", include_in_schema=False)

PAGE_SIZE = 25
NOTICES = ("keys.created", "keys.saved")
# The API's names of a key's fields, as the form names them.
KEY_FIELDS = {
    "id": "key_id",
    "rfidHex": "rfid",
    "selectedStorage.automatId": "automat_id",
    "selectedStorage.manualStorageInfo": "manual_info",
    "selectedStorage": "home",
    "shared": "shared",
    "name": "name",
}


@dataclass(frozen=True, slots=True)
class KeysPage:
    mechanical: Page[MechanicalKey]
    targets: dict[str, Storage]  # by object id: where each key is due (F9)
    contracts: dict[str, KeyContract]  # by object id
    iloq: Page[IloqKey]
    automats: dict[str, str]  # names of the automats the keys are in or belong to


def key_path(key_id: str) -> str:
    return f"{PREFIX}/keys/mechanical/{quote(key_id, safe='')}"


@router.get("")
async def key_list(request: Request, me: SignedIn) -> HTMLResponse:
    query = request.query_params
    mechanical_page = PageRequest.parse(query.get("after"), None, default_limit=PAGE_SIZE)
    iloq_page = PageRequest.parse(query.get("iloq_after"), None, default_limit=PAGE_SIZE)
    search = form_text(dict(query), "q", max_length=100)
    container = console_of(request).container
    now = container.clock.now()

    def work(session: Session) -> KeysPage:
        mechanical = mechanical_keys.list_keys(
            session, me.principal, mechanical_page, search=search
        )
        items = list(mechanical.items)
        iloq = iloq_keys.list_keys(session, me.principal, iloq_page)
        places = [k.automat_id for k in iloq.items]
        places += [k.stored_automat_id for k in items] + [k.selected_automat_id for k in items]
        return KeysPage(
            mechanical,
            mechanical_keys.target_storages(session, items, now),
            console_views.key_contracts(session, me.principal, [k.object_id for k in items], now),
            iloq,
            console_views.automat_names(session, places),
        )

    page = await container.db.run(work)
    return render(
        request,
        "keys.html",
        section="keys",
        p=page,
        mechanical_page=mechanical_page,
        iloq_page=iloq_page,
        q=search or "",
        key_path=key_path,
        contract_path=lambda public_id: (
            f"{PREFIX}/contracts/mechanical/{quote(public_id, safe='')}"
        ),
        notice=notice_text(query.get("notice"), NOTICES),
    )


# --- adding and editing a mechanical key ------------------------------------------------

FORM_FIELDS = ("key_id", "name", "rfid", "home", "automat_id", "manual_info", "shared", "away")


async def _key_form(
    request: Request,
    principal: Principal,
    *,
    key: MechanicalKey | None,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    container = console_of(request).container
    choices = await container.db.run(
        lambda s: console_views.contract_choices(
            s, principal, Product.KEY30, with_keys=False, waiting_too=True
        )
    )
    automats: list[Choice] = choices.automats
    return render(
        request,
        "key_form.html",
        status=status,
        section="keys",
        key=key,
        automats=automats,
        values=values,
        errors=errors or {},
        action=f"{key_path(key.id)}/edit" if key else f"{PREFIX}/keys/mechanical/new",
    )


def _home(submitted: Submission) -> Storage:
    if submitted.form.get("home") == "manual":
        return Storage.parse(
            None, submitted.text("manual_info", max_length=500) or "", "selectedStorage"
        )
    return Storage.parse(submitted.text("automat_id", max_length=16) or "", None, "selectedStorage")


@router.get("/mechanical/new")
async def new_page(request: Request, me: SignedIn) -> HTMLResponse:
    return await _key_form(request, me.principal, key=None, values={"home": "automat"})


@router.post("/mechanical/new")
async def create(request: Request, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    now = container.clock.now()
    try:
        key_id = submitted.required("key_id", max_length=128)
        selected = _home(submitted)

        def work(session: Session) -> None:
            mechanical_keys.create_key(
                session,
                principal,
                key_id=key_id,
                name=submitted.text("name"),
                organization_unit_id=None,
                rfid_hex=submitted.text("rfid", max_length=64),
                selected=selected,
                shared=submitted.form.get("shared") == "1",
                away=submitted.form.get("away") == "1",
                now=now,
            )

        await container.db.run(work)
    except (InvalidInput, Conflict) as exc:
        values = {k: submitted.form.get(k, "") for k in FORM_FIELDS}
        status = 400 if isinstance(exc, InvalidInput) else 409
        return await _key_form(
            request,
            principal,
            key=None,
            values=values,
            errors=form_errors(exc, KEY_FIELDS),
            status=status,
        )
    return see_other(f"{PREFIX}/keys", notice="keys.created")


@router.get("/mechanical/{key_id}/edit")
async def edit_page(request: Request, key_id: str, me: SignedIn) -> HTMLResponse:
    container = console_of(request).container
    key = await container.db.run(lambda s: mechanical_keys.get_key(s, me.principal, key_id))
    values: dict[str, Any] = {
        "name": key.name or "",
        "rfid": key.rfid_hex or "",
        "home": "automat" if key.selected.is_device else "manual",
        "automat_id": key.selected_automat_id or "",
        "manual_info": key.selected_manual_info or "",
        "shared": "1" if key.shared else "",
    }
    return await _key_form(request, me.principal, key=key, values=values)


@router.post("/mechanical/{key_id}/edit")
async def edit(request: Request, key_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    try:
        change = KeyUpdate(
            name=submitted.text("name"),
            rfid_hex=submitted.text("rfid", max_length=64),
            selected=_home(submitted),
            shared=submitted.form.get("shared") == "1",
            given=frozenset({"name", "rfid_hex", "shared"}),
        )
        await container.db.run(lambda s: mechanical_keys.update_key(s, principal, key_id, change))
    except (InvalidInput, Conflict) as exc:
        key = await container.db.run(lambda s: mechanical_keys.get_key(s, principal, key_id))
        values = {k: submitted.form.get(k, "") for k in FORM_FIELDS}
        return await _key_form(
            request,
            principal,
            key=key,
            values=values,
            errors=form_errors(exc, KEY_FIELDS),
            status=400,
        )
    return see_other(f"{PREFIX}/keys", notice="keys.saved")
