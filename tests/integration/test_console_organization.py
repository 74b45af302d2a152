"""The console's organization page over HTTP: the unit tree, service accounts (the private
key shown once) and console users (the password shown once); admins only, in their subtree."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.model import OrgUnitType
from tests.conftest import TEST_BASE, Tenant, make_tenant
from tests.console_support import add_user, console_client, sign_in

_KEY = re.compile(r'<pre class="body secret-value" id="private-key">([^<]+)</pre>')
_DOWNLOAD = re.compile(r'href="data:application/x-pem-file;base64,([^"]+)" download="([^"]+)"')
_ACCOUNT = re.compile(r"<code class=\"mono\">([0-9a-f]{24})</code>")
_PASSWORD = re.compile(r'<code class="mono secret-value" id="password">([^<]+)</code>')


@pytest.fixture
def browser(container: Container) -> Iterator[TestClient]:
    with console_client(container) as client:
        yield client


def test_an_admin_creates_a_service_account_whose_private_key_is_shown_once_and_signs(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    form = {"csrf": csrf, "account_name": "PMS <prod>", "account_unit": acme.unit_id}
    page = browser.post("/console/organization/service-accounts", data=form)
    assert page.status_code == 200
    key = _KEY.search(page.text)
    download = _DOWNLOAD.search(page.text)
    account = _ACCOUNT.search(page.text)
    assert key is not None
    assert download is not None
    assert account is not None
    pem = key.group(1).replace("&#43;", "+")
    assert "BEGIN" in pem
    assert base64.b64decode(download.group(1)).decode().strip() == pem.strip()
    assert download.group(2) == f"keyautomat-{account.group(1)}.pem"
    assert "PMS &lt;prod&gt;" in page.text
    # The key signs requests, and is never shown again.
    api = Client(
        TEST_BASE, account.group(1), base64.b64decode(download.group(1)).decode(), http=http
    )
    assert api.get("/automats")["data"] == []
    again = browser.get("/console/organization").text
    assert "BEGIN" not in again
    assert account.group(1) in again
    deleted = browser.post(
        f"/console/organization/service-accounts/{account.group(1)}/delete", data={"csrf": csrf}
    )
    assert "The service account is deleted." in deleted.text
    assert account.group(1) not in deleted.text


def test_an_admin_adds_a_unit_and_a_console_user_who_signs_in_with_the_password_shown_once(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    added = browser.post(
        "/console/organization/units",
        data={
            "csrf": csrf,
            "unit_name": "East <wing>",
            "unit_type": "5",
            "unit_parent_id": acme.unit_id,
        },
    )
    assert "The unit is added." in added.text
    assert "East &lt;wing&gt;" in added.text
    user = {
        "csrf": csrf,
        "user_email": "bob@acme.fi",
        "user_unit": acme.unit_id,
        "user_role": "operator",
    }
    assert (
        'id="e-user_email"'
        in browser.post(
            "/console/organization/users", data={**user, "user_email": "not an email"}
        ).text
    )
    page = browser.post("/console/organization/users", data=user)
    password = _PASSWORD.search(page.text)
    assert password is not None
    assert browser.post("/console/organization/users", data=user).status_code == 400  # exists
    browser.cookies.clear()
    sign_in(browser, "bob@acme.fi", password.group(1))
    assert browser.get("/console/organization").status_code == 403  # an operator


def test_operators_may_not_open_it_and_a_child_unit_admin_sees_its_subtree_only(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient
) -> None:
    child = make_tenant(
        container, http, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    csrf = sign_in(browser, "op@acme.fi")
    assert "/console/organization" not in browser.get("/console/").text
    form = {"csrf": csrf, "account_name": "x", "account_unit": acme.unit_id}
    assert browser.post("/console/organization/service-accounts", data=form).status_code == 403
    browser.cookies.clear()
    add_user(container, child.unit_id, "east@acme.fi")
    csrf = sign_in(browser, "east@acme.fi")
    page = browser.get("/console/organization").text
    assert "Acme East" in page
    assert "Acme Housing" not in page
    assert acme.account_id not in page
    outside = browser.post(
        "/console/organization/service-accounts",
        data={"csrf": csrf, "account_name": "x", "account_unit": acme.unit_id},
    )
    assert outside.status_code == 400
    gone = browser.post(
        f"/console/organization/service-accounts/{acme.account_id}/delete", data={"csrf": csrf}
    )
    assert gone.status_code == 404
    # Only platform operators (admins of a root) make organizations and admin accounts.
    assert 'value="0"' not in page
    refused = browser.post(
        "/console/organization/units",
        data={"csrf": csrf, "unit_name": "Another root", "unit_type": "0"},
    )
    assert refused.status_code == 400
    assert "Only platform operators may create organizations" in refused.text
    refused = browser.post(
        "/console/organization/service-accounts",
        data={
            "csrf": csrf,
            "account_name": "x",
            "account_unit": child.unit_id,
            "account_role": "admin",
        },
    )
    assert refused.status_code == 400
    assert "Only platform operators may create admin service accounts" in refused.text
