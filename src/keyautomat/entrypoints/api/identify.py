"""The strong-authentication pages of ``userVerification`` "2" (docs/strong-authentication.md).

Unauthenticated, like ``/sign``: the unguessable, expiring token of the
``contractSignatureRequested`` link is the credential of ``/identify/{token}``,
which sends the browser to the unit's identity provider; the provider sends it
back to ``/identify/callback``, where the state must be the one this browser
was given (a cookie for ``/identify/`` only) and the login is checked. Every
answer is a page saying what happened; none carries a provider's text, a
secret or a stack trace.
"""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Cookie, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keyautomat.contracts.mechanical.identity import (
    LOGIN_LIFETIME,
    Outcome,
    Result,
    StrongAuthentication,
)
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.pages import PRIVATE_HEADERS, page

PREFIX = "/identify"
router = APIRouter(prefix=PREFIX, include_in_schema=False)
COOKIE = "keyautomat_identify"
# Longer than any token or state we make (43 characters); longer input is not ours.
MAX_TOKEN = 128
MAX_CODE = 4096

_AGAIN = "<p>You can try again with the link from your message.</p>"
_UNCHANGED = "<p>Nothing was changed.</p>"

# What each outcome tells the guest: status, title, text (HTML, fixed).
_PAGES: dict[Outcome, tuple[int, str, str]] = {
    Outcome.UNKNOWN_LINK: (404, "Link not valid", "<p>This identification link is not valid.</p>"),
    Outcome.USED: (
        410,
        "Link already used",
        "<p>Your identity has already been confirmed with this link; it cannot be used again.</p>",
    ),
    Outcome.EXPIRED: (
        410,
        "Link expired",
        "<p>This identification link has expired. Please ask for a new one.</p>",
    ),
    Outcome.ENDED: (410, "Contract ended", "<p>The key contract of this link has ended.</p>"),
    Outcome.UNAVAILABLE: (
        503,
        "Identification not available",
        "<p>Identification is not available at the moment. Please try again later.</p>",
    ),
    Outcome.TOO_MANY: (
        429,
        "Too many identifications started",
        "<p>Several identifications with this link are under way. Please finish one, or "
        "try again in a few minutes.</p>",
    ),
    Outcome.FOREIGN: (
        400,
        "Login not recognised",
        "<p>This login was not started in this browser, or a newer one was started. "
        "Please open the link from your message again.</p>",
    ),
    Outcome.UNKNOWN_LOGIN: (
        400,
        "Login not valid",
        "<p>This login has already been answered or is not known. Please open the link "
        "from your message again.</p>",
    ),
    Outcome.LOGIN_EXPIRED: (
        400,
        "Login took too long",
        "<p>The login was not finished in time. Please open the link from your message again.</p>",
    ),
    Outcome.REFUSED: (
        403,
        "Identity not confirmed",
        "<p>The identity provider did not confirm your identity.</p>",
    ),
    Outcome.UNREACHABLE: (
        502,
        "Identity provider not reachable",
        "<p>The identity provider could not be reached. Please try again later.</p>",
    ),
    Outcome.INVALID_TOKEN: (
        502,
        "Identity could not be checked",
        "<p>The identity provider's answer could not be verified.</p>",
    ),
    Outcome.MISMATCH: (
        403,
        "Identity does not match",
        "<p>The identity you logged in with is not the person this key contract is for.</p>",
    ),
    Outcome.LINK_CHANGED: (
        410,
        "Link replaced",
        "<p>This link has been replaced by a newer one, or its contract has changed. Please "
        "use the newest link you received.</p>",
    ),
}
# The failures after which the same link may simply be opened again.
_RETRY = frozenset({Outcome.REFUSED, Outcome.UNREACHABLE, Outcome.INVALID_TOKEN, Outcome.MISMATCH})


def _failure(result: Result) -> HTMLResponse:
    status, title, text = _PAGES[result.outcome]
    body = text
    if result.reason:
        body += f"<p>Reason: {html.escape(result.reason)}.</p>"
    if result.outcome in _RETRY:
        body += _UNCHANGED + _AGAIN
    return page(title, body, status)


def _verified(result: Result) -> HTMLResponse:
    """The codes, for the person who has just proved to be the contract's contact."""
    view = result.view
    assert view is not None
    items = []
    for key in view.keys:
        place = ""
        if key.automat is not None:
            where = ", ".join(p for p in (key.automat.name, key.automat.address) if p)
            place = f" at {html.escape(where)}"
        code = f": code <strong>{html.escape(key.pincode)}</strong>" if key.pincode else ""
        items.append(f"<li>{html.escape(key.label)}{place}{code}</li>")
    keys = f"<ul>{''.join(items)}</ul>" if items else ""
    return page(
        "Identity confirmed",
        "<p>Thank you, your identity is confirmed. The key can now be picked up.</p>" + keys,
    )


def _forget_login(response: Response) -> Response:
    response.delete_cookie(COOKIE, path=f"{PREFIX}/")
    return response


# Declared before ``/{token}``, which would otherwise take "callback" for a token.
@router.get("/callback")
async def callback(
    services: Services,
    state: Annotated[str | None, Query(max_length=MAX_TOKEN)] = None,
    code: Annotated[str | None, Query(max_length=MAX_CODE)] = None,
    error: Annotated[str | None, Query(max_length=MAX_TOKEN)] = None,
    browser_state: Annotated[str | None, Cookie(alias=COOKIE, max_length=MAX_TOKEN)] = None,
) -> Response:
    """The identity provider sent the browser back with a code (or an error)."""
    if not state and error:
        # Some providers leave the state out of an error answer (RFC 6749 wants it): the
        # login is then this browser's, and an error can only end it, never verify.
        state = browser_state
    if not state:
        return _failure(Result(Outcome.UNKNOWN_LOGIN))
    result = await StrongAuthentication.of(services).finish(
        state=state, browser_state=browser_state, code=code, error=error
    )
    if result.outcome is Outcome.FOREIGN:
        return _failure(result)  # another login of this browser may still be under way
    if result.outcome is Outcome.VERIFIED:
        return _forget_login(_verified(result))
    return _forget_login(_failure(result))


@router.get("/{token}")
async def start(token: str, services: Services) -> Response:
    """The link of the message: off to the identity provider, or a page saying why not."""
    if len(token) > MAX_TOKEN:
        return _failure(Result(Outcome.UNKNOWN_LINK))
    result = await StrongAuthentication.of(services).start(token)
    if result.redirect_to is None or result.state is None:
        return _failure(result)
    response = RedirectResponse(result.redirect_to, status_code=303, headers=PRIVATE_HEADERS)
    response.set_cookie(
        COOKIE,
        result.state,
        max_age=int(LOGIN_LIFETIME.total_seconds()),
        path=f"{PREFIX}/",
        secure=services.settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )
    return response
