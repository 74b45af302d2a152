"""Signing in and out, and the signed-in user's own account (docs/console.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from keyautomat.domain.console import MIN_PASSWORD_LENGTH, check_new_password, generate_token
from keyautomat.domain.errors import InvalidInput
from keyautomat.entrypoints.console.gate import Refusal
from keyautomat.entrypoints.console.strings import t
from keyautomat.entrypoints.console.web import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    CsrfRefused,
    OwnSubmission,
    SignedIn,
    checked_form,
    console_of,
    current_identity,
    field_errors,
    form_pairs,
    render,
    safe_next,
    see_other,
    session_token,
    set_cookie,
    tokens_match,
)
from keyautomat.service_layer import console_users

router = APIRouter(include_in_schema=False)

STATUS_OF_REFUSAL = {Refusal.WRONG: 401, Refusal.THROTTLED: 429, Refusal.BUSY: 503}


def _login_form(
    request: Request, *, next_path: str, email: str = "", error: str | None = None, status: int
) -> Response:
    """The login page, with a fresh token for its form (kept in a cookie, sent back in
    the form: a page of another site can post neither)."""
    console = console_of(request)
    token = generate_token()
    response = render(
        request,
        "login.html",
        status=status,
        login_csrf=token,
        next_path=next_path,
        email=email,
        error=error,
        notice=t("login.signed_out") if request.query_params.get("out") == "1" else None,
    )
    set_cookie(response, console, LOGIN_COOKIE, token, f"{PREFIX}/login")
    if status == 429:
        response.headers["Retry-After"] = "60"
    return response


@router.get("/login")
async def login_page(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    if await current_identity(request) is not None:
        return RedirectResponse(next_path, status_code=303)
    request.state.identity = None
    return _login_form(request, next_path=next_path, status=200)


@router.post("/login")
async def login(request: Request) -> Response:
    pairs = await form_pairs(request)
    sent = next((v for k, v in pairs if k == CSRF_FIELD), None)
    if not tokens_match(sent, request.cookies.get(LOGIN_COOKIE)):
        raise CsrfRefused
    form = checked_form(pairs)
    email, password = form.get("email", ""), form.get("password", "")
    next_path = safe_next(form.get("next"))
    console = console_of(request)
    address = request.client.host if request.client else "unknown"
    outcome = await console.gate.login(
        console.container.db,
        email,
        password,
        address,
        console.container.clock.now(),
        console.policy,
    )
    if isinstance(outcome, Refusal):
        return _login_form(
            request,
            next_path=next_path,
            email=email[:254],
            error=t(outcome.value),
            status=STATUS_OF_REFUSAL[outcome],
        )
    response = RedirectResponse(next_path, status_code=303)
    set_cookie(response, console, SESSION_COOKIE, outcome.token, PREFIX)
    response.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
    return response


@router.post("/logout")
async def logout(request: Request, submission: OwnSubmission) -> Response:
    console = console_of(request)
    token = session_token(request)
    if token is not None:
        await console.container.db.run(lambda s: console_users.end_session(s, token))
    response = see_other(f"{PREFIX}/login", out="1")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("/account")
async def account_page(request: Request, me: SignedIn) -> Response:
    changed = request.query_params.get("changed") == "1"
    return _account(request, notice=t("account.password.changed") if changed else None)


def _account(
    request: Request,
    *,
    notice: str | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "account.html",
        status=status,
        section="account",
        notice=notice,
        errors=errors or {},
        error=error,
        min_length=MIN_PASSWORD_LENGTH,
    )


@router.post("/account/password")
async def change_password(request: Request, submission: OwnSubmission) -> Response:
    console = console_of(request)
    db, now = console.container.db, console.container.clock.now()
    form = submission.form
    new = form.get("new", "")
    try:
        check_new_password(new, "new")
        if form.get("confirm", "") != new:
            raise InvalidInput("confirm", t("account.password.mismatch"))
    except InvalidInput as exc:
        return _account(request, errors=field_errors(exc), status=400)
    user_id = submission.identity.user_id
    right = await console.gate.check_own_password(db, user_id, form.get("current", ""), now)
    if isinstance(right, Refusal):
        return _account(request, error=t(right.value), status=STATUS_OF_REFUSAL[right])
    if not right:
        return _account(request, errors={"current": t("account.password.wrong")}, status=400)
    new_hash = await console.gate.hash(new)
    token = session_token(request)
    await db.run(lambda s: console_users.set_password(s, user_id, new_hash, now, keep=token))
    return see_other(f"{PREFIX}/account", changed="1")
