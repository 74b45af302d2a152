"""The virtual automat: the keypad, display and lockers of a simulated automat
(docs/console.md, "The virtual automat"; docs/device-protocol.md §11).

Only an automat the server knows is simulated has this page (any other answers
404, as one outside the caller's subtree does), and only its simulator is sent
keys, over the simulator's hooks topic, which no real device listens to. Pressing
is for operators and admins; every key is audited before it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from keyautomat.adapters.device_hooks import KEYPAD_KEYS, AutomatShown
from keyautomat.adapters.simulator_control import ControlFailed, Unreachable
from keyautomat.domain.errors import InvalidInput
from keyautomat.entrypoints.console.web import (
    PREFIX,
    SignedIn,
    Submitted,
    console_of,
    fragment,
    render,
    see_other,
)
from keyautomat.service_layer import virtual_keypad
from keyautomat.service_layer.principal import Principal
from keyautomat.service_layer.virtual_keypad import KeypadTarget, Press

router = APIRouter(prefix="/automats", include_in_schema=False)

# Sent by keypad.js with a press it posts itself: the answer is the live region, not a
# redirect to the page.
LIVE_REQUEST_HEADER = "x-console-live"
# The keypad as laid out on the automat, row by row.
LAYOUT = ("123", "456", "789", "*0#")
PROBLEMS = {reason: f"keypad.problem.{reason.value}" for reason in Unreachable}
UNBOUND = "keypad.problem.unbound"
SHOWN_PROBLEMS = (*PROBLEMS.values(), UNBOUND)  # what ?problem= may name


@dataclass(frozen=True, slots=True)
class Live:
    target: KeypadTarget
    shown: AutomatShown | None
    problem: str | None  # a text key: why nothing is shown
    presses: list[Press]


async def _target(request: Request, principal: Principal, automat_id: str) -> KeypadTarget:
    container = console_of(request).container
    return await container.db.run(lambda s: virtual_keypad.keypad_target(s, principal, automat_id))


async def _live(
    request: Request,
    target: KeypadTarget,
    shown: AutomatShown | None = None,
    problem: str | None = None,
) -> Live:
    container = console_of(request).container
    if shown is None and problem is None:
        if target.hw_id is None:
            problem = UNBOUND
        else:
            try:
                shown = await container.simulators.state(target.hw_id)
            except ControlFailed as exc:
                problem = PROBLEMS[exc.reason]
    presses = await container.db.run(lambda s: virtual_keypad.recent_presses(s, target))
    return Live(target, shown, problem, presses)


@router.get("/{automat_id}/keypad")
async def keypad_page(request: Request, automat_id: str, me: SignedIn) -> HTMLResponse:
    target = await _target(request, me.principal, automat_id)
    problem = request.query_params.get("problem")
    live = await _live(request, target, problem=problem if problem in SHOWN_PROBLEMS else None)
    return render(
        request,
        "keypad.html",
        section="automats",
        live=live,
        layout=LAYOUT,
        may_press=me.role.writes,
    )


@router.get("/{automat_id}/keypad/live")
async def keypad_live(request: Request, automat_id: str, me: SignedIn) -> HTMLResponse:
    target = await _target(request, me.principal, automat_id)
    return fragment(request, "_keypad_live.html", live=await _live(request, target))


@router.post("/{automat_id}/keypad/press")
async def press(request: Request, automat_id: str, submitted: Submitted) -> Response:
    me = submitted.identity
    key = submitted.required("key", max_length=1)
    if key not in KEYPAD_KEYS:
        raise InvalidInput("key", "must be one of 0-9, * and #")
    container = console_of(request).container
    now = container.clock.now()

    def audited(session: Session) -> KeypadTarget:
        target = virtual_keypad.keypad_target(session, me.principal, automat_id)
        virtual_keypad.record_press(session, me.principal, me.email, target, key, now)
        return target

    # Recorded before it is sent: a press that reaches the automat is never missing
    # from the audit, even if this process dies before the answer.
    target = await container.db.run(audited)
    shown: AutomatShown | None = None
    problem: str | None = None
    if target.hw_id is None:
        problem = UNBOUND
    else:
        try:
            shown = (await container.simulators.press(target.hw_id, key)).state
        except ControlFailed as exc:
            problem = PROBLEMS[exc.reason]
    if request.headers.get(LIVE_REQUEST_HEADER) == "1":
        live = await _live(request, target, shown, problem)
        return fragment(request, "_keypad_live.html", live=live)
    page = f"{PREFIX}/automats/{automat_id}/keypad"
    return see_other(page, problem=problem) if problem else see_other(page)
