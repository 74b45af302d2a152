"""The virtual automat over HTTP: the keypad of a simulated automat types at its simulator
(in-process link, the rig of ``--console-control``), for operators only, every key
audited; a real automat has no keypad. The browser tests drive the same page in
Chromium (tests/e2e/test_console_keypad_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from starlette.routing import Mount
from starlette.testclient import TestClient

from keyautomat.adapters.device_hooks import CONSOLE_ACTIONS
from keyautomat.adapters.orm_console import console_audit
from keyautomat.adapters.passwords import fast_passwords
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from keyautomat.domain.console import ConsoleRole
from keyautomat.simulator import SimulatedAutomat
from keyautomat.simulator.test_hooks import SimulatorHooks
from tests.conftest import Tenant, make_tenant
from tests.console_support import add_user, csrf_of, sign_in
from tests.contract_helpers import iso
from tests.devices import FAST_DEVICE_SETTINGS, Simulators, eventually
from tests.iloq_helpers import bound_automat, first_key, seed_system, synced


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update=FAST_DEVICE_SETTINGS)


@pytest.fixture
def browser(http: TestClient, container: Container) -> TestClient:
    """The application under test (its gateway binds the simulators), whose console hashes
    passwords cheaply and gives up on a silent simulator soon."""
    assert isinstance(http.app, FastAPI)
    console = next(r.app for r in http.app.routes if isinstance(r, Mount) and r.path == "/console")
    assert isinstance(console, FastAPI)
    console.state.console.gate.passwords = fast_passwords()
    container.simulators.timeout = 0.5
    return http


@pytest.fixture
def sims(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container)
    yield simulators
    simulators.stop_all()


def with_console_control(sims: Simulators, sim: SimulatedAutomat) -> None:
    """The rig of ``simulate --console-control`` at ``sim``, listening."""
    rig = SimulatorHooks(sim, sims.link, CONSOLE_ACTIONS)
    sims.running.append((sim, sims.portal.start_task_soon(rig.run)))
    eventually(rig.listening.is_set)


def mark_simulated(browser: TestClient, automat_id: str) -> None:
    """An admin ticks "Simulated automat" on the automat's edit form."""
    page = browser.get(f"/console/automats/{automat_id}/edit")
    assert page.status_code == 200
    assert "Simulated automat" in page.text
    answer = browser.post(
        f"/console/automats/{automat_id}/edit",
        data={
            "csrf": csrf_of(page.text),
            "name": "Mainstreet 1",
            "timezone": "Europe/Helsinki",
            "simulated": "on",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


def simulated_automat(
    container: Container, browser: TestClient, acme: Tenant, sims: Simulators
) -> tuple[str, SimulatedAutomat, str]:
    """A bound simulated automat of acme with the console's rig, marked simulated by
    acme's admin, who is signed in: the automat's id, its simulator and the CSRF token."""
    automat_id, sim, _ = bound_automat(acme, sims)
    with_console_control(sims, sim)
    add_user(container, acme.unit_id, "admin@acme.fi")
    csrf = sign_in(browser, "admin@acme.fi")
    mark_simulated(browser, automat_id)
    return automat_id, sim, csrf


def refused_press(
    browser: TestClient, automat_id: str, csrf: str, key: str = "1"
) -> tuple[int, str]:
    """The status and page of a press that is to be refused."""
    answer = browser.post(
        f"/console/automats/{automat_id}/keypad/press", data={"csrf": csrf, "key": key}
    )
    return answer.status_code, answer.text


def press(browser: TestClient, automat_id: str, csrf: str, keys: str) -> None:
    for key in keys:
        answer = browser.post(
            f"/console/automats/{automat_id}/keypad/press",
            data={"csrf": csrf, "key": key},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == f"/console/automats/{automat_id}/keypad"


def audited(container: Container) -> list[tuple[str, str]]:
    return container.db.transaction(
        lambda s: [
            (r.user_email, r.detail)
            for r in s.execute(
                select(console_audit.c.user_email, console_audit.c.detail).order_by(
                    console_audit.c.at, console_audit.c.id
                )
            )
        ]
    )


def test_an_operator_types_a_pincode_on_the_keypad_and_the_simulator_hands_out_the_key(
    container: Container, browser: TestClient, acme: Tenant, sims: Simulators
) -> None:
    system = seed_system(container, acme.unit_id)
    automat_id, sim, key_ids = bound_automat(acme, sims)
    with_console_control(sims, sim)
    add_user(container, acme.unit_id, "admin@acme.fi")
    add_user(container, acme.unit_id, "olli@acme.fi", ConsoleRole.OPERATOR)
    sign_in(browser, "admin@acme.fi")
    assert "Open the virtual automat" not in browser.get(f"/console/automats/{automat_id}").text
    mark_simulated(browser, automat_id)
    assert "Open the virtual automat" in browser.get(f"/console/automats/{automat_id}").text
    browser.cookies.clear()
    csrf = sign_in(browser, "olli@acme.fi")

    page = browser.get(f"/console/automats/{automat_id}/keypad")
    assert page.status_code == 200
    for key in "0123456789*#":
        assert f'name="key" value="{key}">{key}</button>' in page.text
    assert "Every key you press is recorded" in page.text
    assert "Enter your code" in page.text
    now = datetime.now(UTC)
    created = acme.api.post(
        "/iloq/keycontracts",
        {
            "input": {
                "contractType": 1,
                "accessRightIds": [system.front_door],
                "keyIds": key_ids,
                "start": iso(now - timedelta(minutes=5)),
                "end": iso(now + timedelta(days=2)),
            }
        },
    )
    code = created["keys"][0]["storageInfo"]["pincode"]
    eventually(lambda: synced(sims, sim, code))

    press(browser, automat_id, csrf, code[:3])
    typed = browser.get(f"/console/automats/{automat_id}/keypad/live")
    assert typed.headers["x-console-fragment"] == "1"
    assert "Code \u2022\u2022\u2022" in typed.text
    press(browser, automat_id, csrf, code[3:] + "#")
    eventually(lambda: first_key(acme, created["id"])["status"] == "key-fetched")

    def locker_0() -> str:
        live = browser.get(f"/console/automats/{automat_id}/keypad/live").text
        return live.split('id="locker-0"')[1].split("</li>")[0]

    # The key was programmed, then the door opened and the autopilot person took it.
    eventually(lambda: "empty" in locker_0())
    live = browser.get(f"/console/automats/{automat_id}/keypad/live").text
    # Every key is audited with who pressed it, digits masked: the code is nowhere.
    assert audited(container) == [("olli@acme.fi", "\u2022")] * len(code) + [("olli@acme.fi", "#")]
    assert code not in live
    # Shown as typed: one line per code.
    assert "\u2022" * len(code) + "#</span> by olli@acme.fi" in live


def test_a_press_from_the_script_gets_the_live_region_back_at_once(
    container: Container, browser: TestClient, acme: Tenant, sims: Simulators
) -> None:
    automat_id, sim, csrf = simulated_automat(container, browser, acme, sims)
    answer = browser.post(
        f"/console/automats/{automat_id}/keypad/press",
        data={"key": "7"},
        headers={"x-csrf-token": csrf, "x-console-live": "1"},
    )
    assert answer.status_code == 200
    assert answer.headers["x-console-fragment"] == "1"
    assert "Code \u2022" in answer.text
    assert sims.call(lambda: sim._buffer) == "7"


def test_an_automat_not_marked_simulated_has_no_keypad_and_its_device_hears_nothing(
    container: Container, browser: TestClient, acme: Tenant, sims: Simulators
) -> None:
    automat_id, sim, _ = bound_automat(acme, sims)
    with_console_control(sims, sim)  # even a device that would listen
    add_user(container, acme.unit_id, "admin@acme.fi")
    csrf = sign_in(browser, "admin@acme.fi")
    assert browser.get(f"/console/automats/{automat_id}/keypad").status_code == 404
    assert browser.get(f"/console/automats/{automat_id}/keypad/live").status_code == 404
    assert refused_press(browser, automat_id, csrf)[0] == 404
    assert sims.call(lambda: sim._buffer) == ""
    assert audited(container) == []


def test_another_units_simulated_automat_is_404(
    container: Container, browser: TestClient, acme: Tenant, sims: Simulators
) -> None:
    other = make_tenant(container, browser, name="Other Housing")
    automat_id, _sim, _ = bound_automat(other, sims)
    add_user(container, other.unit_id, "admin@other.fi")
    add_user(container, acme.unit_id, "admin@acme.fi")
    sign_in(browser, "admin@other.fi")
    mark_simulated(browser, automat_id)
    browser.cookies.clear()
    csrf = sign_in(browser, "admin@acme.fi")
    assert browser.get(f"/console/automats/{automat_id}/keypad").status_code == 404
    assert refused_press(browser, automat_id, csrf)[0] == 404


def test_a_viewer_watches_but_cannot_press_and_a_press_without_the_csrf_token_is_403(
    container: Container, browser: TestClient, acme: Tenant, sims: Simulators
) -> None:
    automat_id, sim, _ = simulated_automat(container, browser, acme, sims)
    add_user(container, acme.unit_id, "vera@acme.fi", ConsoleRole.VIEWER)
    answer = browser.post(f"/console/automats/{automat_id}/keypad/press", data={"key": "1"})
    assert answer.status_code == 403
    browser.cookies.clear()
    csrf = sign_in(browser, "vera@acme.fi")
    page = browser.get(f"/console/automats/{automat_id}/keypad")
    assert page.status_code == 200
    assert 'value="1" disabled>1</button>' in page.text
    assert "only operators and admins can press keys" in page.text
    assert refused_press(browser, automat_id, csrf)[0] == 403
    assert sims.call(lambda: sim._buffer) == ""
    assert audited(container) == []


def test_a_key_that_is_not_on_the_keypad_is_refused_naming_the_field(
    container: Container, browser: TestClient, acme: Tenant, sims: Simulators
) -> None:
    automat_id, _sim, csrf = simulated_automat(container, browser, acme, sims)
    for key in ("a", "12", "", "\u0661"):
        status, page = refused_press(browser, automat_id, csrf, key)
        assert status == 400, key
        assert "key:" in page, key
    assert audited(container) == []


def test_a_simulated_automat_whose_simulator_does_not_listen_says_so(
    container: Container, browser: TestClient, acme: Tenant, sims: Simulators
) -> None:
    automat_id, _sim, _ = bound_automat(acme, sims)  # no --console-control
    add_user(container, acme.unit_id, "admin@acme.fi")
    csrf = sign_in(browser, "admin@acme.fi")
    mark_simulated(browser, automat_id)
    page = browser.get(f"/console/automats/{automat_id}/keypad")
    assert page.status_code == 200
    assert "The simulator does not answer" in page.text
    answer = browser.post(
        f"/console/automats/{automat_id}/keypad/press",
        data={"csrf": csrf, "key": "1"},
        follow_redirects=False,
    )
    assert answer.headers["location"].endswith("/keypad?problem=keypad.problem.no-answer")
    # Audited all the same: it was sent.
    assert len(audited(container)) == 1
    page = browser.get(answer.headers["location"])
    assert "The simulator does not answer" in page.text
