"""The console's key page over HTTP: iLOQ and mechanical keys with status and storage,
adding and editing mechanical keys, staff handovers, roles and scoping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.model import OrgUnitType
from keyautomat.service_layer import iloq_keys
from tests.conftest import Tenant, make_tenant
from tests.console_support import add_user, console_client, sign_in
from tests.contract_helpers import stocked_automat
from tests.devices import install


@pytest.fixture
def browser(container: Container) -> Iterator[TestClient]:
    with console_client(container) as client:
        yield client


def test_an_operator_adds_and_edits_a_mechanical_key_with_the_apis_rules(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    automat = install(acme, product="key30", name="Desk automat")
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    csrf = sign_in(browser, "op@acme.fi")
    form = browser.get("/console/keys/mechanical/new")
    assert "Desk automat" in form.text  # key30 automats are offered
    new = {
        "csrf": csrf,
        "key_id": "flat-3",
        "name": "Flat 3 <main door>",
        "home": "manual",
        "manual_info": "Front desk, drawer 2",
    }
    refused = browser.post("/console/keys/mechanical/new", data={**new, "rfid": "not hex"})
    assert refused.status_code == 400
    assert 'id="e-rfid"' in refused.text
    empty = browser.post("/console/keys/mechanical/new", data={**new, "manual_info": ""})
    assert 'id="e-manual_info"' in empty.text
    added = browser.post("/console/keys/mechanical/new", data=new)
    assert "The key is added." in added.text
    assert "Flat 3 &lt;main door&gt;" in added.text
    assert "Front desk, drawer 2" in added.text
    again = browser.post("/console/keys/mechanical/new", data=new)
    assert again.status_code == 409
    assert "already exists" in again.text
    key = acme.api.get("/mechanical/keys/flat-3")
    assert key["storage"] == {"manualStorageInfo": "Front desk, drawer 2"}

    edit = {
        "csrf": csrf,
        "name": "Flat 3",
        "rfid": "1a00d1",
        "home": "automat",
        "automat_id": automat["id"],
        "shared": "1",
    }
    assert browser.get("/console/keys/mechanical/flat-3/edit").status_code == 200
    saved = browser.post("/console/keys/mechanical/flat-3/edit", data=edit)
    assert "Saved." in saved.text
    key = acme.api.get("/mechanical/keys/flat-3")
    assert (key["name"], key["rfidHex"], key["shared"]) == ("Flat 3", "1A00D1", True)
    assert key["selectedStorage"] == {"automatId": automat["id"]}


def test_iloq_keys_show_the_locker_they_are_in_and_mechanical_keys_their_contract(
    container: Container, browser: TestClient, acme: Tenant
) -> None:
    automat_id, key_ids = stocked_automat(container, acme, keys=1)
    now = datetime.now(UTC)

    def register(session: Session) -> None:
        iloq_keys.register_key(
            session, organization_unit_id=acme.unit_id, key_id=key_ids[0], name="K-1", now=now
        )
        iloq_keys.place_key(session, key_ids[0], automat_id, 0)

    container.db.transaction(register)
    acme.api.post(
        "/mechanical/keys",
        {"id": "m", "selectedStorage": {"manualStorageInfo": "Desk"}, "away": False},
    )
    acme.api.post(
        "/mechanical/keycontracts",
        {
            "id": "stay-7",
            "start": now.isoformat().replace("+00:00", "Z"),
            "contact": {"name": "John"},
            "keys": [{"id": "m"}],
        },
    )
    add_user(container, acme.unit_id, "op@acme.fi", ConsoleRole.OPERATOR)
    csrf = sign_in(browser, "op@acme.fi")
    page = browser.get("/console/keys").text
    assert "K-1" in page
    assert "A1, locker 0" in page
    assert "stay-7" in page
    handed = browser.post(
        "/console/contracts/mechanical/stay-7/handover", data={"csrf": csrf, "key_id": "m"}
    )
    assert "The key is recorded as handed over." in handed.text
    assert acme.api.get("/mechanical/keys/m")["status"] == {"available": False}
    assert "Taken back from the guest" in browser.get("/console/keys").text


def test_viewers_read_keys_but_change_none_and_a_child_unit_sees_only_its_own(
    container: Container, browser: TestClient, acme: Tenant, http: TestClient
) -> None:
    acme.api.post(
        "/mechanical/keys",
        {"id": "parent-key", "selectedStorage": {"manualStorageInfo": "Desk"}, "away": False},
    )
    child = make_tenant(
        container, http, name="Acme East", parent_id=acme.unit_id, unit_type=OrgUnitType.COMPANY
    )
    child.api.post(
        "/mechanical/keys",
        {"id": "child-key", "selectedStorage": {"manualStorageInfo": "Desk"}, "away": False},
    )
    add_user(container, child.unit_id, "east@acme.fi", ConsoleRole.VIEWER)
    csrf = sign_in(browser, "east@acme.fi")
    page = browser.get("/console/keys").text
    assert "child-key" in page
    assert "parent-key" not in page
    assert "Add a mechanical key" not in page
    assert browser.get("/console/keys/mechanical/parent-key/edit").status_code == 404
    answer = browser.post(
        "/console/keys/mechanical/child-key/edit",
        data={"csrf": csrf, "home": "manual", "manual_info": "Elsewhere"},
    )
    assert answer.status_code == 403
    assert child.api.get("/mechanical/keys/child-key")["selectedStorage"] == {
        "manualStorageInfo": "Desk"
    }
