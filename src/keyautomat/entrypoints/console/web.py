"""What every console page shares: who is asking, forms and their CSRF token, rendering, and
the headers and error pages of the console (docs/console.md).

A console request is signed in by the session cookie (HttpOnly, SameSite=Lax,
Secure when the public URL is https). Every state-changing request is a POST that
carries the session's CSRF token, as the hidden ``csrf`` field of its form (or the
``X-CSRF-Token`` header): without it the answer is 403 and nothing changes.
Viewers may post only what concerns themselves (sign out, their password).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyautomat.bootstrap import Container
from keyautomat.domain.console import SessionPolicy
from keyautomat.domain.errors import Forbidden, InvalidInput
from keyautomat.domain.text import text_problem
from keyautomat.entrypoints.console.gate import LoginGate
from keyautomat.entrypoints.console.icons import icon
from keyautomat.entrypoints.console.strings import t
from keyautomat.service_layer import console_users
from keyautomat.service_layer.console_users import ConsoleIdentity

PREFIX = "/console"
STATIC_DIR = Path(__file__).parent / "static"
SESSION_COOKIE = "keyautomat_session"
# The login form's own CSRF token, before there is a session (a double-submitted cookie).
LOGIN_COOKIE = "keyautomat_login"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
# Forms are small: the edge refuses a larger body while it arrives (api/app.py).
MAX_FORM = 64 * 1024
MAX_FIELDS = 64
MAX_TOKEN = 128
# Marks the answer of a live region's refresh (console.js): anything else (the login
# page, after a session ended) stops the refreshing.
FRAGMENT_HEADER = "x-console-fragment"


@dataclass
class Console:
    """The console's state, one per application (``app.state.console``)."""

    container: Container
    gate: LoginGate
    policy: SessionPolicy
    templates: Environment

    @property
    def secure(self) -> bool:
        return self.container.settings.secure_cookies


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


# --- who is asking ----------------------------------------------------------------------


class SignInRequired(Exception):
    """The request has no live session: the answer is the login page."""


class CsrfRefused(Exception):
    """A state-changing request without the right CSRF token: 403, nothing changes."""


def session_token(request: Request) -> str | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > MAX_TOKEN or text_problem(token) is not None:
        return None
    return token


async def current_identity(request: Request) -> ConsoleIdentity | None:
    token = session_token(request)
    if token is None:
        return None
    console = console_of(request)
    now = console.container.clock.now()
    identity = await console.container.db.run(
        lambda s: console_users.identify(s, token, now, console.policy)
    )
    request.state.identity = identity
    return identity


async def _signed_in(request: Request) -> ConsoleIdentity:
    identity = await current_identity(request)
    if identity is None:
        raise SignInRequired
    return identity


SignedIn = Annotated[ConsoleIdentity, Depends(_signed_in)]


@dataclass(frozen=True, slots=True)
class Submission:
    """A posted form whose CSRF token held, with its fields (each checked as text)."""

    identity: ConsoleIdentity
    form: dict[str, str]
    # Every value of each field, in order (checkboxes of one name send several).
    lists: dict[str, list[str]] = field(default_factory=dict)

    def every(self, name: str, *, max_length: int = 200) -> list[str]:
        """The non-empty values of a field sent several times, trimmed."""
        values = [v.strip() for v in self.lists.get(name, []) if v.strip()]
        for value in values:
            if len(value) > max_length:
                raise InvalidInput(name, t("form.too_long", max=max_length))
        return values

    def text(self, field: str, *, required: bool = False, max_length: int = 200) -> str | None:
        """A text field, trimmed; None when empty (and optional)."""
        return form_text(self.form, field, required=required, max_length=max_length)

    def required(self, field: str, *, max_length: int = 200) -> str:
        """A text field that must not be empty (400 naming it otherwise)."""
        value = form_text(self.form, field, required=True, max_length=max_length)
        assert value is not None  # form_text refuses an empty required field
        return value


def form_text(
    form: dict[str, str], field: str, *, required: bool = False, max_length: int = 200
) -> str | None:
    value = form.get(field, "").strip()
    if not value:
        if required:
            raise InvalidInput(field, t("form.required"))
        return None
    if len(value) > max_length:
        raise InvalidInput(field, t("form.too_long", max=max_length))
    return value


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """The fields of an urlencoded form, in order (the edge has bounded the body)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidInput("body", "must be a form (application/x-www-form-urlencoded)")
    raw = await request.body()
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("body", f"must be a UTF-8 form of at most {MAX_FIELDS} fields") from None


def checked_form(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The first value of each field, every name and value meeting the text rules."""
    form: dict[str, str] = {}
    for name, value in pairs:
        for text in (name, value):
            problem = text_problem(text)
            if problem is not None:
                raise InvalidInput(name if text is value else "body", problem)
        form.setdefault(name, value)
    return form


def field_errors(exc: InvalidInput) -> dict[str, str]:
    """A refused field and why, to show next to the field of its form."""
    return {exc.field: exc.message.removeprefix(f"{exc.field}: ")}


def tokens_match(sent: str | None, expected: str | None) -> bool:
    if not sent or not expected:
        return False
    return hmac.compare_digest(sent.encode(), expected.encode())


async def _own_submission(request: Request, identity: SignedIn) -> Submission:
    refused: InvalidInput | None = None
    try:
        pairs = await form_pairs(request)
    except InvalidInput as exc:
        pairs, refused = [], exc
    sent = next((v for k, v in pairs if k == CSRF_FIELD), None) or request.headers.get(CSRF_HEADER)
    # Checked before anything else about the request: without the token, it is a 403
    # whatever else is wrong with it, and nothing of it is used.
    if not tokens_match(sent, identity.csrf_token):
        raise CsrfRefused
    if refused is not None:
        raise refused
    lists: dict[str, list[str]] = {}
    for name, value in pairs:
        lists.setdefault(name, []).append(value)
    return Submission(identity, checked_form(pairs), lists)


OwnSubmission = Annotated[Submission, Depends(_own_submission)]


async def _submission(submission: OwnSubmission) -> Submission:
    if not submission.identity.role.writes:
        raise Forbidden("Viewers can look but not change anything")
    return submission


Submitted = Annotated[Submission, Depends(_submission)]


# --- pages ------------------------------------------------------------------------------


def local_time(value: datetime | None, timezone: str | None = None) -> str:
    """``2026-12-10 14:03 EET``: a time as people read it, in the automat's time zone."""
    if value is None:
        return ""
    zone = _zone(timezone) if timezone else None
    shown = value.astimezone(zone) if zone is not None else value
    return shown.strftime("%Y-%m-%d %H:%M ") + (shown.tzname() or t("time.utc"))


@cache
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None


@cache
def static_url(name: str) -> str:
    """The URL of a packaged asset, with a digest of its content so browsers may keep it."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"{PREFIX}/static/{name}?v={digest}"


def build_templates() -> Environment:
    env = Environment(
        loader=PackageLoader("keyautomat.entrypoints.console", "templates"),
        # Contact names, key names and every other stored text are untrusted.
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        t=t, icon=icon, static=static_url, PREFIX=PREFIX, NAV=NAV, ADMIN_NAV=ADMIN_NAV
    )
    env.filters["local"] = local_time
    return env


# (text key, path, section): the main navigation. A page of a later feature adds its line.
NAV = (
    ("nav.dashboard", f"{PREFIX}/", "dashboard"),
    ("nav.automats", f"{PREFIX}/automats", "automats"),
    # contracts, keys and webhooks (docs/console.md)
    ("nav.contracts", f"{PREFIX}/contracts", "contracts"),
    ("nav.keys", f"{PREFIX}/keys", "keys"),
    ("nav.groups", f"{PREFIX}/groups", "groups"),
)
# Pages only admins may open, shown to admins only (as NAV).
ADMIN_NAV = (
    ("nav.webhooks", f"{PREFIX}/webhooks", "webhooks"),
    ("nav.notifications", f"{PREFIX}/notifications", "notifications"),
    ("nav.organization", f"{PREFIX}/organization", "organization"),
)


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    console = console_of(request)
    identity: ConsoleIdentity | None = getattr(request.state, "identity", None)
    page = console.templates.get_template(template).render(
        me=identity,
        csrf=identity.csrf_token if identity is not None else "",
        section=context.pop("section", ""),
        **context,
    )
    return HTMLResponse(page, status_code=status)


def fragment(request: Request, template: str, **context: Any) -> HTMLResponse:
    """A live region's content alone (console.js swaps it in)."""
    response = render(request, template, **context)
    response.headers[FRAGMENT_HEADER] = "1"
    return response


def see_other(path: str, **notice: str) -> RedirectResponse:
    """Post/redirect/get: after a change, the page to show, with an optional notice key."""
    if notice:
        path += ("&" if "?" in path else "?") + "&".join(
            f"{k}={quote(v)}" for k, v in notice.items()
        )
    return RedirectResponse(path, status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path of this server, nothing else."""
    if (
        value
        and value.startswith(PREFIX + "/")
        and "//" not in value
        and "\\" not in value
        and len(value) <= 512
        and text_problem(value) is None
        and not value.startswith(f"{PREFIX}/login")
    ):
        return value
    return f"{PREFIX}/"


def set_cookie(response: Response, console: Console, name: str, value: str, path: str) -> None:
    response.set_cookie(
        name, value, path=path, httponly=True, samesite="lax", secure=console.secure
    )


def notice_text(key: str | None, allowed: tuple[str, ...]) -> str | None:
    """The text of a notice named in the query string, when it is one this page shows."""
    return t(key) if key in allowed and key is not None else None


# --- headers ----------------------------------------------------------------------------

# No script, style, font or image from anywhere but this server; no inline script;
# never framed (clickjacking); forms post only here.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'"
)
_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class ConsoleHeaders:
    """Security headers on every console answer; pages are never cached, assets are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        asset = scope["path"].startswith(f"{PREFIX}/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(_HEADERS)
                if asset:
                    headers.append((b"cache-control", b"public, max-age=86400"))
                else:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
