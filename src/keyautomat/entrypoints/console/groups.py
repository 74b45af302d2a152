"""Groups: device groups (automats) and key groups, their members, and creating, renaming,
deleting them and adding or removing an automat (docs/console.md, "Groups").

Every change calls the use case the API's route calls (``service_layer/groups.py``; an
automat joins or leaves a group by ``automats.update_automat``, as a PATCH of its
``groups`` does), so the rules are the API's: admins change groups, a device group takes
automats of its unit's subtree only.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.model import Group, GroupType
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
from keyautomat.service_layer import automats, groups
from keyautomat.service_layer.groups import Member
from keyautomat.service_layer.pagination import Page, PageRequest
from keyautomat.service_layer.principal import Principal

router = APIRouter(prefix="/groups", include_in_schema=False)

PAGE_SIZE = 25
NOTICES = ("groups.created", "groups.saved", "groups.deleted", "groups.joined", "groups.left")
FIELDS = {"name": "name", "customerId": "customer_id", "type": "type", "groups": "automat_id"}


@dataclass(frozen=True, slots=True)
class GroupsPage:
    page: Page[Group]
    members: dict[str, list[Member]]


@router.get("")
async def group_list(request: Request, me: SignedIn) -> HTMLResponse:
    query = request.query_params
    page = PageRequest.parse(query.get("after"), None, default_limit=PAGE_SIZE)
    search = form_text(dict(query), "q", max_length=100)
    container = console_of(request).container

    def work(session: Session) -> GroupsPage:
        found = groups.list_groups(session, me.principal, page, search=search)
        return GroupsPage(found, groups.members_of(session, list(found.items), me.principal))

    return await _list(request, await container.db.run(work), page, search)


async def _list(
    request: Request,
    found: GroupsPage,
    page: PageRequest,
    search: str | None,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "groups.html",
        status=status,
        section="groups",
        p=found,
        request_page=page,
        q=search or "",
        values=values or {"type": "1"},
        errors=errors or {},
        notice=notice_text(request.query_params.get("notice"), NOTICES),
    )


@router.post("/new")
async def create(request: Request, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    now = container.clock.now()
    try:
        name = submitted.required("name")
        kind = submitted.required("type", max_length=1)

        def work(session: Session) -> str:
            return groups.create_group(
                session,
                principal,
                name=name,
                customer_id=submitted.text("customer_id") or "",
                type=int(kind) if kind in ("1", "2") else 0,
                now=now,
            ).id

        group_id = await container.db.run(work)
    except InvalidInput as exc:
        page = PageRequest(0, PAGE_SIZE)

        def again(session: Session) -> GroupsPage:
            found = groups.list_groups(session, principal, page)
            return GroupsPage(found, groups.members_of(session, list(found.items), principal))

        found = await container.db.run(again)
        values = {k: v for k, v in submitted.form.items() if k != "csrf"}
        errors = form_errors(exc, FIELDS)
        return await _list(request, found, page, None, values=values, errors=errors, status=400)
    return see_other(f"{PREFIX}/groups/{group_id}", notice="groups.created")


# --- one group --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupPage:
    group: Group
    members: list[Member]
    others: list[Member]  # automats of the subtree that may join (device groups)


async def _group_page(request: Request, principal: Principal, group_id: str) -> GroupPage:
    container = console_of(request).container

    def work(session: Session) -> GroupPage:
        group = groups.get_group(session, principal, group_id)
        members = groups.members_of(session, [group], principal)[group.id]
        others: list[Member] = []
        if group.type == GroupType.DEVICE:
            listed = automats.list_automats(session, principal, PageRequest(0, 100))
            inside = {m.id for m in members}
            others = [Member(a.id, a.name) for a in listed.items if a.id not in inside]
        return GroupPage(group, members, others)

    return await container.db.run(work)


def _show(
    request: Request,
    page: GroupPage,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    g = page.group
    return render(
        request,
        "group.html",
        status=status,
        section="groups",
        p=page,
        g=g,
        values=values or {"name": g.name, "customer_id": g.customer_id or ""},
        errors=errors or {},
        notice=notice_text(request.query_params.get("notice"), NOTICES),
    )


@router.get("/{group_id}")
async def group_detail(request: Request, group_id: str, me: SignedIn) -> HTMLResponse:
    return _show(request, await _group_page(request, me.principal, group_id))


@router.post("/{group_id}/edit")
async def edit(request: Request, group_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    try:
        name = submitted.required("name")
        customer_id = submitted.text("customer_id") or ""
        await container.db.run(
            lambda s: groups.update_group(
                s, principal, group_id, name=name, customer_id=customer_id
            )
        )
    except InvalidInput as exc:
        page = await _group_page(request, principal, group_id)
        values = {k: v for k, v in submitted.form.items() if k != "csrf"}
        return _show(request, page, values=values, errors=form_errors(exc, FIELDS), status=400)
    return see_other(f"{PREFIX}/groups/{group_id}", notice="groups.saved")


@router.post("/{group_id}/delete")
async def delete(request: Request, group_id: str, submitted: Submitted) -> Response:
    principal = submitted.identity.principal
    container = console_of(request).container
    await container.db.run(lambda s: groups.delete_group(s, principal, group_id))
    return see_other(f"{PREFIX}/groups", notice="groups.deleted")


async def _membership(
    request: Request, group_id: str, submitted: Submission, *, join: bool
) -> Response:
    """An automat joins or leaves the group: its groups, with or without this one, as a
    PATCH of the automat's ``groups`` would set them."""
    principal = submitted.identity.principal
    container = console_of(request).container
    automat_id = submitted.required("automat_id", max_length=16)

    def work(session: Session) -> None:
        groups.get_group(session, principal, group_id)
        current = [gid for gid, _ in automats.view_automat(session, principal, automat_id).groups]
        wanted = [gid for gid in current if gid != group_id] + ([group_id] if join else [])
        automats.update_automat(session, principal, automat_id, group_ids=wanted)

    try:
        await container.db.run(work)
    except InvalidInput as exc:
        page = await _group_page(request, principal, group_id)
        return _show(request, page, errors=form_errors(exc, FIELDS), status=400)
    notice = "groups.joined" if join else "groups.left"
    return see_other(f"{PREFIX}/groups/{group_id}", notice=notice)


@router.post("/{group_id}/join")
async def join(request: Request, group_id: str, submitted: Submitted) -> Response:
    return await _membership(request, group_id, submitted, join=True)


@router.post("/{group_id}/leave")
async def leave(request: Request, group_id: str, submitted: Submitted) -> Response:
    return await _membership(request, group_id, submitted, join=False)
