"""The console's group pages over HTTP: groups and their members, creating, renaming and
deleting a group, an automat joining and leaving one; admins change, others read."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.model import OrgUnitType
from tests.conftest import Tenant, make_tenant
from tests.console_support import add_user, console_client, sign_in
from tests.devices import install


@pytest.fixture
def browser(container: Container) -> Iterator[TestClient]:
    with console_client(container) as client:
        yield client


def test_an_admin_creates_a_device_group_adds_and_removes_an_automat_and_deletes_it(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    automat = install(acme, name="Harbour <1>")
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    refused = browser.post("/console/groups/new", data={"csrf": csrf, "name": "", "type": "1"})
    assert refused.status_code == 400
    assert 'id="e-name"' in refused.text
    wrong_type = browser.post("/console/groups/new", data={"csrf": csrf, "name": "x", "type": "7"})
    assert 'id="e-type"' in wrong_type.text
    created = browser.post(
        "/console/groups/new",
        data={"csrf": csrf, "name": "Downtown <east>", "type": "1", "customer_id": "dt"},
        follow_redirects=False,
    )
    assert created.status_code == 303
    page = created.headers["location"].split("?")[0]
    match = re.fullmatch(r"/console/groups/([0-9a-f]{24})", page)
    assert match is not None
    group_id = match.group(1)
    joined = browser.post(f"{page}/join", data={"csrf": csrf, "automat_id": automat["id"]})
    assert "The automat is in the group." in joined.text
    assert "Harbour &lt;1&gt;" in joined.text
    assert [g["id"] for g in acme.api.get(f"/automats/{automat['id']}")["groups"]] == [group_id]
    listing = browser.get("/console/groups").text
    assert "Downtown &lt;east&gt;" in listing
    left = browser.post(f"{page}/leave", data={"csrf": csrf, "automat_id": automat["id"]})
    assert "The automat has left the group." in left.text
    assert acme.api.get(f"/automats/{automat['id']}")["groups"] == []
    renamed = browser.post(f"{page}/edit", data={"csrf": csrf, "name": "Uptown"})
    assert "Uptown" in renamed.text
    deleted = browser.post(f"{page}/delete", data={"csrf": csrf})
    assert "The group is deleted." in deleted.text
    assert acme.api.get("/groups")["data"] == []


def test_operators_read_groups_but_change_none_and_a_parents_group_is_404(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient
) -> None:
    group = acme.api.post("/groups", {"name": "Parent group", "type": 1, "customerId": "p"})
    child = make_tenant(
        container, http, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    csrf = sign_in(browser, "op@acme.fi")
    assert "Parent group" in browser.get("/console/groups").text
    assert "New group" not in browser.get("/console/groups").text
    answer = browser.post("/console/groups/new", data={"csrf": csrf, "name": "x", "type": "1"})
    assert answer.status_code == 403
    assert (
        browser.post(f"/console/groups/{group['id']}/delete", data={"csrf": csrf}).status_code
        == 403
    )
    browser.cookies.clear()
    add_user(container, child.unit_id, "east@acme.fi")
    csrf = sign_in(browser, "east@acme.fi")
    assert "Parent group" not in browser.get("/console/groups").text
    assert browser.get(f"/console/groups/{group['id']}").status_code == 404
    answer = browser.post(f"/console/groups/{group['id']}/delete", data={"csrf": csrf})
    assert answer.status_code == 404
    assert len(acme.api.get("/groups")["data"]) == 1
