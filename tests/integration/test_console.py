"""The web console over HTTP: signing in and out, CSRF, roles, scoping and the automat pages.
(The browser tests, tests/e2e/test_console_browser.py, drive the same pages in Chromium.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select
from starlette.testclient import TestClient

from keyautomat.adapters.orm_devices import device_alarms
from keyautomat.bootstrap import Container
from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.ids import new_object_id
from keyautomat.domain.model import OrgUnitType
from tests.conftest import Tenant, make_tenant
from tests.console_support import PASSWORD, add_user, console_client, csrf_of, sign_in


@pytest.fixture
def browser(container: Container) -> Iterator[TestClient]:
    with console_client(container) as client:
        yield client


def _install(tenant: Tenant, name: str = "Mainstreet 1") -> str:
    automat: str = tenant.api.post(
        "/automats/install",
        {
            "name": name,
            "address": "Mannerheimintie 1",
            "postalCode": "00100",
            "postalOffice": "Helsinki",
            "timezone": "Europe/Helsinki",
            "product": "key20",
        },
    )["id"]
    return automat


def test_the_root_leads_to_the_console_and_an_unsigned_visit_to_the_login_page(
    browser: TestClient,
) -> None:
    assert browser.get("/", follow_redirects=False).headers["location"] == "/console/"
    answer = browser.get("/console/automats", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=%2Fconsole%2Fautomats"


def test_signing_in_sets_a_session_cookie_that_scripts_cannot_read_and_shows_the_dashboard(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "Anna@Acme.fi")
    form = browser.get("/console/login")
    answer = browser.post(
        "/console/login",
        data={"csrf": csrf_of(form.text), "email": "anna@acme.fi", "password": PASSWORD},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "keyautomat_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # no https public URL configured
    page = browser.get("/console/")
    assert page.status_code == 200
    assert "Dashboard" in page.text
    assert "Anna@Acme.fi" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    answers = []
    for email, password in (("anna@acme.fi", "wrong password!"), ("nobody@acme.fi", PASSWORD)):
        form = browser.get("/console/login")
        answers.append(
            browser.post(
                "/console/login",
                data={"csrf": csrf_of(form.text), "email": email, "password": password},
            )
        )
    assert [a.status_code for a in answers] == [401, 401]
    assert all("The email or the password is wrong." in a.text for a in answers)
    assert "keyautomat_session" not in browser.cookies


def test_a_login_without_the_forms_token_is_refused(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    answer = browser.post("/console/login", data={"email": "anna@acme.fi", "password": PASSWORD})
    assert answer.status_code == 403
    assert "keyautomat_session" not in browser.cookies


def test_wrong_passwords_block_the_account_even_for_the_right_one_then_it_signs_in_again(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    free = container.settings.console_login_failures_per_account

    def attempt(password: str) -> int:
        form = browser.get("/console/login")
        return browser.post(
            "/console/login",
            data={"csrf": csrf_of(form.text), "email": "anna@acme.fi", "password": password},
            follow_redirects=False,
        ).status_code

    assert [attempt("wrong password!") for _ in range(free + 1)] == [401] * (free + 1)
    assert attempt(PASSWORD) == 429


def test_a_state_changing_request_without_the_csrf_token_is_refused_and_changes_nothing(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    sign_in(browser, "anna@acme.fi")
    automat_id = _install(acme)
    answer = browser.post(f"/console/automats/{automat_id}/uninstall", data={})
    assert answer.status_code == 403
    assert acme.api.get(f"/automats/{automat_id}")["lifecycleState"] == "waitingForInstall"
    answer = browser.post("/console/logout", data={"csrf": "forged"})
    assert answer.status_code == 403
    assert browser.get("/console/", follow_redirects=False).status_code == 200


def test_signing_out_ends_the_session_for_good(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    token = browser.cookies["keyautomat_session"]
    answer = browser.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert answer.headers["location"] == "/console/login?out=1"
    browser.cookies.set("keyautomat_session", token, path="/console")
    assert browser.get("/console/", follow_redirects=False).status_code == 303


def test_a_user_of_a_child_unit_sees_only_its_subtree_and_a_parents_automat_is_404(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    child = make_tenant(
        container, browser, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    parents = _install(acme, "Parent automat")
    childs = _install(child, "Child automat")
    add_user(container, child.unit_id, "east@acme.fi", ConsoleRole.VIEWER)
    sign_in(browser, "east@acme.fi")
    listing = browser.get("/console/automats").text
    assert "Child automat" in listing
    assert "Parent automat" not in listing
    assert browser.get(f"/console/automats/{childs}").status_code == 200
    answer = browser.get(f"/console/automats/{parents}")
    assert answer.status_code == 404
    assert "Parent automat" not in answer.text
    assert browser.get(f"/console/automats/{parents}/live").status_code == 404


def test_an_admin_installs_an_automat_with_the_form_and_sees_its_installation_pincode(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    form = {
        "csrf": csrf,
        "name": "Harbour <office>",
        "organization_unit_id": acme.unit_id,
        "address": "Satamakatu 3",
        "postal_code": "00160",
        "postal_office": "Helsinki",
        "timezone": "Europe/Helsinki",
        "product": "key30",
    }
    answer = browser.post("/console/automats/new", data=form, follow_redirects=False)
    assert answer.status_code == 303
    page = browser.get(answer.headers["location"])
    (automat,) = acme.api.get("/automats")["data"]
    assert automat["installationPincode"] in page.text
    assert "Harbour &lt;office&gt;" in page.text  # escaped, never markup
    assert "<office>" not in page.text
    # A refused field is shown next to the field, and nothing is installed.
    refused = browser.post("/console/automats/new", data={**form, "timezone": "Mars/Base"})
    assert refused.status_code == 400
    assert "IANA time zone" in refused.text
    assert len(acme.api.get("/automats")["data"]) == 1


def test_an_admin_edits_replaces_and_uninstalls_through_the_same_rules_as_the_api(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    automat_id = _install(acme)
    edit = {"csrf": csrf, "name": "Renamed", "label": "B", "timezone": "Europe/Stockholm"}
    browser.post(f"/console/automats/{automat_id}/edit", data=edit)
    automat = acme.api.get(f"/automats/{automat_id}")
    assert (automat["name"], automat["label"], automat["timezone"]) == (
        "Renamed",
        "B",
        "Europe/Stockholm",
    )
    before = automat["installationPincode"]
    browser.post(f"/console/automats/{automat_id}/replace", data={"csrf": csrf})
    assert acme.api.get(f"/automats/{automat_id}")["installationPincode"] != before
    page = browser.post(f"/console/automats/{automat_id}/uninstall", data={"csrf": csrf})
    assert "The automat is uninstalled." in page.text
    assert acme.api.get(f"/automats/{automat_id}")["lifecycleState"] == "deactivated"


def test_operators_acknowledge_alarms_viewers_change_nothing_and_neither_installs(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    automat_id = _install(acme)
    alarm_id = new_object_id()
    now = container.clock.now()
    container.db.transaction(
        lambda s: s.execute(
            insert(device_alarms).values(
                id=alarm_id, automat_id=automat_id, alarm_type="door-forced", started_at=now
            )
        )
    )
    add_user(container, acme.unit_id, "viewer@acme.fi", ConsoleRole.VIEWER)
    operator = add_user(container, acme.unit_id, "operator@acme.fi", ConsoleRole.OPERATOR)
    acknowledge = f"/console/automats/{automat_id}/alarms/{alarm_id}/acknowledge"

    csrf = sign_in(browser, "viewer@acme.fi")
    assert "door-forced" in browser.get("/console/").text
    assert browser.post(acknowledge, data={"csrf": csrf}).status_code == 403
    browser.cookies.clear()

    csrf = sign_in(browser, "operator@acme.fi")
    assert browser.get("/console/automats/new").status_code == 403
    page = browser.post(acknowledge, data={"csrf": csrf})
    assert "The alarm is acknowledged." in page.text
    acknowledged_by = container.db.transaction(
        lambda s: s.scalar(select(device_alarms.c.acknowledged_by))
    )
    assert acknowledged_by == operator


def test_changing_the_password_needs_the_current_one_and_ends_the_other_sessions(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    add_user(container, acme.unit_id, "anna@acme.fi")
    csrf = sign_in(browser, "anna@acme.fi")
    new = "a much better passphrase"
    wrong = browser.post(
        "/console/account/password",
        data={"csrf": csrf, "current": "not it at all", "new": new, "confirm": new},
    )
    assert wrong.status_code == 400
    assert "The current password is wrong." in wrong.text
    short = browser.post(
        "/console/account/password",
        data={"csrf": csrf, "current": PASSWORD, "new": "short", "confirm": "short"},
    )
    assert short.status_code == 400
    assert "at least 12 characters" in short.text
    done = browser.post(
        "/console/account/password",
        data={"csrf": csrf, "current": PASSWORD, "new": new, "confirm": new},
    )
    assert "Your password is changed." in done.text
    browser.cookies.clear()
    form = browser.get("/console/login")
    old = browser.post(
        "/console/login",
        data={"csrf": csrf_of(form.text), "email": "anna@acme.fi", "password": PASSWORD},
    )
    assert old.status_code == 401
    sign_in(browser, "anna@acme.fi", new)


def test_no_console_route_is_in_the_openapi_document(browser: TestClient) -> None:
    document = browser.get("/v2/openapi.json").json()
    assert not [path for path in document["paths"] if "console" in path]


def test_assets_are_served_by_keyautomat_itself_and_may_be_cached(browser: TestClient) -> None:
    for name, kind in (("console.css", "text/css"), ("console.js", "javascript")):
        answer = browser.get(f"/console/static/{name}")
        assert answer.status_code == 200
        assert kind in answer.headers["content-type"]
        assert answer.headers["cache-control"] == "public, max-age=86400"


def test_an_unknown_console_page_is_an_html_404(browser: TestClient) -> None:
    answer = browser.get("/console/nothing/here")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
