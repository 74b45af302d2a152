"""The organization: the unit tree, service accounts and console users of the subtree
(docs/console.md, "Organization"). Admins only.

Every change calls the use case the API's route (or the command line) calls:
``service_layer/accounts.py`` for units and service accounts, ``console_users.py`` for
console users. A new service account's private key and a new user's password are on the
answer to the form only: only the public key and the password's hash are kept.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from keyautomat.domain.console import ConsoleRole, email_key, generate_password
from keyautomat.domain.errors import Conflict, Forbidden, InvalidInput
from keyautomat.domain.model import OrgUnitType
from keyautomat.entrypoints.console.forms import FORM, form_errors
from keyautomat.entrypoints.console.gate import Busy
from keyautomat.entrypoints.console.strings import t
from keyautomat.entrypoints.console.web import (
    PREFIX,
    SignedIn,
    Submission,
    Submitted,
    console_of,
    notice_text,
    render,
    see_other,
)
from keyautomat.service_layer import accounts, console_users, console_views
from keyautomat.service_layer.console_views import Choice
from keyautomat.service_layer.principal import Principal

router = APIRouter(prefix="/organization", include_in_schema=False)

NOTICES = ("organization.unit_created", "organization.account_deleted")
# The page has three forms; their fields are named apart (one page, one set of ids).
FORMS = {
    "unit": {
        "name": "unit_name",
        "customerId": "unit_customer_id",
        "type": "unit_type",
        "parentId": "unit_parent_id",
    },
    "account": {
        "name": "account_name",
        "organizationUnitId": "account_unit",
        "role": "account_role",
    },
    "user": {"email": "user_email", "organizationUnitId": "user_unit", "role": "user_role"},
}


async def _page(
    request: Request,
    principal: Principal,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    **shown: object,
) -> HTMLResponse:
    container = console_of(request).container
    found = await container.db.run(lambda s: console_views.organization(s, principal))
    # Only platform operators may create organizations (type 0); the use case says so too.
    unit_types: list[OrgUnitType] = [
        u
        for u in OrgUnitType
        if principal.is_platform_operator or u is not OrgUnitType.ORGANIZATION
    ]
    return render(
        request,
        "organization.html",
        status=status,
        section="organization",
        o=found,
        # The units as choices, indented by depth (em spaces: the list is text, not markup).
        unit_choices=[Choice(u.id, "\u2003" * u.depth + u.name) for u in found.units],
        unit_types=unit_types,
        roles=list(ConsoleRole),
        errors=errors or {},
        values=values or {},
        notice=notice_text(request.query_params.get("notice"), NOTICES),
        **shown,
    )


@router.get("")
async def organization_page(request: Request, me: SignedIn) -> HTMLResponse:
    return await _page(request, me.principal)


def _refused(exc: InvalidInput | Conflict | Forbidden, form: str) -> dict[str, str]:
    """A refused field of one of the page's forms; what is no field's, as ``_<form>``."""
    errors = form_errors(exc, FORMS[form])
    if FORM in errors:
        errors[f"_{form}"] = errors.pop(FORM)
    return errors


def _kept(submitted: Submission) -> dict[str, str]:
    return {k: v for k, v in submitted.form.items() if k != "csrf"}


@router.post("/units")
async def create_unit(request: Request, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    principal.require_admin()
    container = console_of(request).container
    now = container.clock.now()
    try:
        name = submitted.required("unit_name")
        kind = submitted.required("unit_type", max_length=1)
        if kind not in {str(int(u)) for u in OrgUnitType}:
            raise InvalidInput("unit_type", "is not a unit type")

        def work(session: Session) -> None:
            accounts.create_organization_unit(
                session,
                principal,
                name=name,
                customer_id=submitted.text("unit_customer_id"),
                type=int(kind),
                parent_id=submitted.text("unit_parent_id", max_length=24),
                iloq_api_user=None,
                secrets=container.secrets,
                now=now,
            )

        await container.db.run(work)
    except (InvalidInput, Conflict, Forbidden) as exc:
        errors = _refused(exc, "unit")
        return await _page(request, principal, status=400, errors=errors, values=_kept(submitted))
    return see_other(f"{PREFIX}/organization", notice="organization.unit_created")


@router.post("/service-accounts")
async def create_service_account(request: Request, submitted: Submitted) -> Response:
    """The private key is on this answer only, with a download link of its own."""
    principal = submitted.identity.principal
    principal.require_admin()
    container = console_of(request).container
    now = container.clock.now()
    try:
        name = submitted.required("account_name")
        unit_id = submitted.required("account_unit", max_length=24)
        created = await container.db.run(
            lambda s: accounts.create_service_account(
                s,
                principal,
                organization_unit_id=unit_id,
                name=name,
                role=submitted.text("account_role", max_length=16),
                now=now,
            )
        )
    except (InvalidInput, Conflict, Forbidden) as exc:
        errors = _refused(exc, "account")
        return await _page(request, principal, status=400, errors=errors, values=_kept(submitted))
    pem = created.private_key_pem
    return await _page(
        request,
        principal,
        new_account=created.account,
        private_key=pem,
        private_key_url="data:application/x-pem-file;base64,"
        + base64.b64encode(pem.encode()).decode(),
    )


@router.post("/service-accounts/{account_id}/delete")
async def delete_service_account(
    request: Request, account_id: str, submitted: Submitted
) -> Response:
    principal = submitted.identity.principal
    principal.require_admin()
    container = console_of(request).container
    await container.db.run(lambda s: accounts.delete_service_account(s, principal, account_id))
    return see_other(f"{PREFIX}/organization", notice="organization.account_deleted")


@router.post("/users")
async def create_user(request: Request, submitted: Submitted) -> Response:
    """A console user with a generated password, shown on this answer only (as ``keyautomat
    user add`` prints it once)."""
    principal = submitted.identity.principal
    principal.require_admin()
    console = console_of(request)
    now = console.container.clock.now()
    password = generate_password()
    try:
        email = submitted.required("user_email", max_length=254)
        email_key(email, "user_email")
        unit_id = submitted.required("user_unit", max_length=24)
        try:
            role = ConsoleRole(submitted.required("user_role", max_length=16))
        except ValueError:
            raise InvalidInput("user_role", "must be admin, operator or viewer") from None
        try:
            password_hash = await console.gate.hash(password)
        except Busy:
            errors = {"_user": t("login.busy")}
            return await _page(request, principal, status=503, errors=errors)
        user = await console.container.db.run(
            lambda s: console_users.create_user(
                s,
                principal,
                email=email,
                organization_unit_id=unit_id,
                role=role,
                password_hash=password_hash,
                now=now,
            )
        )
    except (InvalidInput, Conflict, Forbidden) as exc:
        errors = _refused(exc, "user")
        return await _page(request, principal, status=400, errors=errors, values=_kept(submitted))
    return await _page(request, principal, new_user=user, password=password)
