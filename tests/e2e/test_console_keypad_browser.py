"""The virtual automat in a real browser: Debian's Chromium, driven by Playwright, types a
contract's pincode on the keypad of a simulated automat (the demo's, in the process of
``keyautomat serve --demo``; and a ``keyautomat simulate --console-control`` on
Mosquitto) by clicking its buttons, and sees the door open and the key taken. A real
automat has no keypad; viewers and forms without the CSRF token cannot press.

Chromium is launched as in tests/e2e/test_console_browser.py (its ``browser`` fixture).
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import update

from keyautomat.adapters import orm
from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.domain.console import ConsoleRole
from keyautomat.entrypoints.demo import demo_iloq_keys
from tests.conftest import Tenant, make_tenant
from tests.console_support import PASSWORD, add_user
from tests.contract_helpers import iso
from tests.devices import eventually, install
from tests.e2e.mqtt_support import BROKER, over_mqtt
from tests.iloq_helpers import seed_system
from tests.processes import KeyautomatProcess, Processes

# Where to save a screenshot of the keypad mid-handover (docs/images/ for the docs).
SCREENSHOTS = os.environ.get("KEYAUTOMAT_SCREENSHOTS")

# One engine is enough here: the pages' SQL runs on both in
# tests/integration/test_console_keypad.py.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _sign_in(page: Page, server: KeyautomatProcess, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def _type(page: Page, keys: str) -> None:
    """Click the keypad's buttons by their accessible names, as a person would."""
    keypad = page.locator("form.keypad")
    for key in keys:
        keypad.get_by_role("button", name=key, exact=True).click()


def _fetch_contract(api: Client, key_ids: list[str], right: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    created: dict[str, Any] = api.post(
        "/iloq/keycontracts",
        {
            "input": {
                "contractType": 2,
                "accessRightIds": [right],
                "keyIds": key_ids,
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=1)),
            }
        },
    )
    return created


def _fetch_contract_with_the_form(
    page: Page, server: KeyautomatProcess, automat_id: str
) -> dict[str, Any]:
    """A fetch contract for a key of ``automat_id`` made on the console's form, as staff
    would; what the API answers for it."""
    page.goto(f"{server.base_url}/console/contracts/new/iloq")
    page.get_by_role("radio", name=re.compile("^Fetch")).check()
    page.get_by_label("Main entrance").check()
    now = datetime.now(ZoneInfo("Europe/Helsinki"))
    page.get_by_label("Start").fill((now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("End", exact=True).fill((now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("radio", name="An automat", exact=True).check()
    page.get_by_label("Automat", exact=True).select_option(value=automat_id)
    page.get_by_role("button", name="Create contract").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("The contract is created."))
    contract_id = urlsplit(page.url).path.rsplit("/", 1)[-1]
    info = json.loads(server.stdout().splitlines()[0])
    with Client.from_key_file(
        info["baseUrl"], info["serviceAccountId"], info["privateKeyFile"]
    ) as api:
        created: dict[str, Any] = api.get(f"/iloq/keycontracts/{contract_id}")
    return created


def _locker_of(api: Client, automat_id: str, key_id: str) -> int:
    """The locker holding ``key_id`` as the server knows it, or -1."""
    lockers = api.get(f"/automats/{automat_id}")["lockers"]
    found = [int(lk["lockerIndex"]) for lk in lockers if (lk["key"] or {}).get("id") == key_id]
    return found[0] if found else -1


def _key_status(api: Client, contract_id: str) -> str:
    status: str = api.get(f"/iloq/keycontracts/{contract_id}")["keys"][0]["status"]
    return status


def _watch_the_handover(page: Page, code: str, locker: int) -> None:
    """Type ``code`` and ``#``; the door opens with the key inside, the key goes, the door
    closes."""
    shown = page.locator(f"#locker-{locker}")
    expect(shown).to_contain_text("key inside")
    expect(shown).to_contain_text("door closed")
    _type(page, code[:2])
    expect(page.get_by_role("status", name="Display")).to_contain_text("Code \u2022\u2022")
    _type(page, code[2:] + "#")
    expect(shown).to_contain_text("door open", timeout=10_000)
    if SCREENSHOTS:  # docs/console.md: the keypad mid-handover
        page.screenshot(path=Path(SCREENSHOTS) / "console-keypad.png", full_page=True)
    expect(shown).to_contain_text("empty", timeout=10_000)
    expect(shown).to_contain_text("door closed", timeout=10_000)
    # The keys pressed are listed, digits masked: the code itself is not on the page.
    expect(page.get_by_text(code)).to_have_count(0)


def test_the_demos_pincode_typed_on_its_virtual_keypad_hands_out_the_key(
    page: Page, processes: Processes
) -> None:
    server = processes.serve("--demo")
    info = json.loads(server.stdout().splitlines()[0])
    key_id = demo_iloq_keys()[0].id
    with Client.from_key_file(
        info["baseUrl"], info["serviceAccountId"], info["privateKeyFile"]
    ) as api:
        automat_id = next(a["id"] for a in api.get("/automats")["data"] if a["label"] == "A")
        # The demo automat has bound and reported the demo key in its lockers.
        eventually(lambda: _locker_of(api, automat_id, key_id) >= 0, timeout=30)
        _sign_in(page, server, info["consoleUser"], info["consolePassword"])
        created = _fetch_contract_with_the_form(page, server, automat_id)
        code = created["keys"][0]["storageInfo"]["pincode"]
        locker = _locker_of(api, automat_id, created["keys"][0]["id"])
        page.goto(f"{server.base_url}/console/automats/{automat_id}")
        page.get_by_role("link", name="Open the virtual automat").click()
        expect(page.get_by_role("heading", name=re.compile("Virtual automat"))).to_be_visible()
        expect(page.get_by_text("Every key you press is recorded")).to_be_visible()
        for key in "0123456789*#":
            expect(page.get_by_role("button", name=key, exact=True)).to_be_enabled()
        _watch_the_handover(page, code, locker)
        eventually(lambda: _key_status(api, created["id"]) == "key-fetched", timeout=10)

        # The contract's timeline shows the code typed and the key fetched.
        page.goto(f"{server.base_url}/console/contracts/iloq/{created['id']}")
        timeline = page.locator("section", has=page.get_by_role("heading", name="Timeline"))
        expect(timeline).to_contain_text("Code entered at the automat")
        expect(timeline).to_contain_text("Key fetched")
        # The dashboard counts the fetch among today's.
        page.goto(f"{server.base_url}/console/")
        fetches = page.locator("p", has_text="keys fetched").locator("strong.figure")
        expect(fetches).to_have_text("1")
        if SCREENSHOTS:  # docs/console.md: a contract's timeline, the dashboard, an automat
            shots = {
                "console-contract": f"/console/contracts/iloq/{created['id']}",
                "console-dashboard": "/console/",
                "console-automat": f"/console/automats/{automat_id}",
            }
            for name, path in shots.items():
                page.goto(f"{server.base_url}{path}")
                page.screenshot(path=Path(SCREENSHOTS) / f"{name}.png", full_page=True)


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    if request.node.get_closest_marker("mqtt") is not None:
        return over_mqtt(settings)
    return settings


def _tenant(container: Container, server: KeyautomatProcess) -> Tenant:
    tenant = make_tenant(container, None)  # type: ignore[arg-type]
    tenant.api = Client(server.api_url, tenant.account_id, tenant.private_key)
    return tenant


@pytest.mark.mqtt
def test_a_simulator_over_mosquitto_marked_simulated_is_driven_from_its_keypad(
    page: Page, processes: Processes, container: Container, settings: Settings
) -> None:
    assert settings.mqtt_url == BROKER
    server = processes.serve()
    tenant = _tenant(container, server)
    system = seed_system(container, tenant.unit_id)
    automat = install(tenant, name="Harbour")
    processes.simulate(
        "--broker",
        BROKER,
        "--prefix",
        settings.mqtt_topic_prefix,
        "--installation-pincode",
        automat["installationPincode"],
        "--lockers",
        "4",
        "--keys",
        "2",
        "--console-control",
    )

    def lockers() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = tenant.api.get(f"/automats/{automat['id']}")["lockers"]
        return found

    eventually(lambda: sum(lk["isKeyInside"] for lk in lockers()) == 2, timeout=20)
    key_id = next(lk["key"]["id"] for lk in lockers() if lk["isKeyInside"])
    locker = _locker_of(tenant.api, automat["id"], key_id)
    add_user(container, tenant.unit_id, "anna@acme.fi")
    _sign_in(page, server, "anna@acme.fi")

    # Not simulated yet: no keypad. An admin ticks the box on the edit form.
    answer = page.goto(f"{server.base_url}/console/automats/{automat['id']}/keypad")
    assert answer is not None
    assert answer.status == 404
    page.goto(f"{server.base_url}/console/automats/{automat['id']}/edit")
    page.get_by_label("Simulated automat").check()
    page.get_by_role("button", name="Save").click()
    page.get_by_role("link", name="Open the virtual automat").click()

    created = _fetch_contract(tenant.api, [key_id], system.front_door)
    code = created["keys"][0]["storageInfo"]["pincode"]
    _watch_the_handover(page, code, locker)
    eventually(lambda: _key_status(tenant.api, created["id"]) == "key-fetched", timeout=10)
    tenant.api.close()


def test_a_real_automat_has_no_keypad_and_viewers_and_forged_forms_cannot_press(
    page: Page, processes: Processes, container: Container
) -> None:
    server = processes.serve()
    tenant = _tenant(container, server)
    real = install(tenant, name="Real one")["id"]
    simulated = install(tenant, name="Simulated one")["id"]
    tenant.api.close()
    container.db.transaction(
        lambda s: s.execute(
            update(orm.automats).where(orm.automats.c.id == simulated).values(simulated=True)
        )
    )
    add_user(container, tenant.unit_id, "olli@acme.fi", ConsoleRole.OPERATOR)
    add_user(container, tenant.unit_id, "vera@acme.fi", ConsoleRole.VIEWER)

    _sign_in(page, server, "olli@acme.fi")
    answer = page.goto(f"{server.base_url}/console/automats/{real}/keypad")
    assert answer is not None
    assert answer.status == 404
    expect(page.get_by_role("button", name="1", exact=True)).to_have_count(0)
    # A press without the form's token, with the browser's own session cookie: 403.
    forged = page.request.post(
        f"{server.base_url}/console/automats/{simulated}/keypad/press", form={"key": "1"}
    )
    assert forged.status == 403
    page.get_by_role("button", name="Sign out").click()

    _sign_in(page, server, "vera@acme.fi")
    page.goto(f"{server.base_url}/console/automats/{simulated}/keypad")
    expect(page.get_by_text("only operators and admins can press keys")).to_be_visible()
    expect(page.get_by_role("button", name="1", exact=True)).to_be_disabled()
    csrf = page.locator("form.keypad input[name=csrf]").get_attribute("value")
    assert csrf
    refused = page.request.post(
        f"{server.base_url}/console/automats/{simulated}/keypad/press",
        form={"csrf": csrf, "key": "1"},
    )
    assert refused.status == 403
    expect(page.get_by_text("Nobody has pressed a key here yet.")).to_be_visible()
