"""The signature page of ``userVerification`` "1" (gaps.md F3): ``/sign/{token}``.

Unauthenticated: the unguessable token of the ``contractSignatureRequested``
link is the credential. A typed name (and optionally a drawn signature as a
PNG or JPEG data URL, checked by its bytes) is stored with the time it was
given; then the automat gets the contract's codes.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from keyautomat.contracts.mechanical import signature as service
from keyautomat.contracts.mechanical.routes import kind_of
from keyautomat.contracts.model import Contract
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.text import text_problem
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.pages import page

PREFIX = "/sign"
router = APIRouter(prefix=PREFIX, include_in_schema=False)

# The edge middleware enforces it while the form arrives (app.py), before this handler runs.
MAX_FORM = 512 * 1024

# A drawing pad without dependencies: the strokes go along as a PNG data URL.
_PAD_SCRIPT = """<script>
const pad = document.getElementById('pad'), ctx = pad.getContext('2d');
let drawing = false, drawn = false;
function at(e) {
  const r = pad.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}
pad.onpointerdown = e => { drawing = true; drawn = true; ctx.beginPath(); ctx.moveTo(...at(e)); };
pad.onpointermove = e => { if (drawing) { ctx.lineTo(...at(e)); ctx.stroke(); } };
pad.onpointerup = pad.onpointerleave = () => { drawing = false; };
function keep() { if (drawn) document.getElementById('signature').value = pad.toDataURL(); }
</script>"""


@router.get("/{token}")
async def show(token: str, services: Services) -> HTMLResponse:
    def work(session: Session) -> Contract | None:
        try:
            return service.contract_for_token(session, token, verification="1")
        except NotFound:
            return None

    contract = await services.db.run(work)
    if contract is None:
        return page("Link not valid", "<p>This signature link is not valid.</p>", 404)
    if contract.signed_at is not None:
        return page("Signed", "<p>Thank you, the contract is signed.</p>")
    keys = "".join(f"<li>{html.escape(k.key_id)}</li>" for k in contract.keys)
    return page(
        "Sign the key contract",
        f"<p>Keys:</p><ul>{keys}</ul>"
        "<form method='post' onsubmit='keep()'>"
        "<p><label>Your name <input name='name' required></label></p>"
        "<p>Draw your signature:</p>"
        "<canvas id='pad' width='320' height='120' style='border:1px solid #888;"
        "touch-action:none'></canvas>"
        "<input type='hidden' name='signature' id='signature'>"
        "<p><button type='submit'>Sign</button></p></form>" + _PAD_SCRIPT,
    )


@router.post("/{token}")
async def submit(token: str, request: Request, services: Services) -> HTMLResponse:
    raw = await request.body()
    form = parse_qs(raw.decode("utf-8", "replace"))
    name = (form.get("name") or [""])[0]
    drawn = (form.get("signature") or [""])[0] or None
    # A person filled this form in: refusals are pages, like every answer of this router.
    for field, value in (("name", name), ("signature", drawn or "")):
        refusal = text_problem(value)
        if refusal is not None:
            return page("Not accepted", f"<p>{html.escape(f'{field}: {refusal}')}</p>", 400)
    now = services.clock.now()
    kind = kind_of(services)

    def work(session: Session) -> str | None:
        try:
            service.sign(session, kind, token, name, drawn, now=now)
        except NotFound:
            return "missing"
        except InvalidInput as exc:
            return exc.field
        return None

    problem = await services.db.run(work)
    if problem == "missing":
        return page("Link not valid", "<p>This signature link is not valid.</p>", 404)
    if problem == "name":
        return page("Name required", "<p>Please type your name.</p>", 400)
    if problem == "signature":
        return page(
            "Signature not accepted",
            "<p>signature: must be a PNG or JPEG image as a base64 data URL.</p>",
            400,
        )
    return page("Signed", "<p>Thank you, the contract is signed.</p>")
