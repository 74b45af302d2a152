"""Console users for tests, and signing in through the login form as a browser would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from sqlalchemy.orm import Session
from starlette.routing import Mount
from starlette.testclient import TestClient

from keyautomat.adapters.passwords import Passwords, fast_passwords
from keyautomat.bootstrap import Container
from keyautomat.domain.console import ConsoleRole
from keyautomat.entrypoints.api.app import create_app
from keyautomat.service_layer import console_users

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def add_user(
    container: Container,
    unit_id: str,
    email: str,
    role: ConsoleRole = ConsoleRole.ADMIN,
    passwords: Passwords | None = None,
) -> str:
    password_hash = (passwords or fast_passwords()).hash(PASSWORD)
    now = container.clock.now()

    def work(session: Session) -> str:
        return console_users.create_user(
            session,
            None,
            email=email,
            organization_unit_id=unit_id,
            role=role,
            password_hash=password_hash,
            now=now,
        ).id

    return container.db.transaction(work)


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Sign in with the login form; the session's CSRF token (from the dashboard)."""
    form = client.get("/console/login")
    answer = client.post(
        "/console/login",
        data={"csrf": csrf_of(form.text), "email": email, "password": password},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/console/").text)


@contextmanager
def console_client(container: Container) -> Iterator[TestClient]:
    """A client of the whole application whose console hashes passwords cheaply."""
    app = create_app(container)
    console = next(r.app for r in app.routes if isinstance(r, Mount) and r.path == "/console")
    assert isinstance(console, FastAPI)
    console.state.console.gate.passwords = fast_passwords()
    with TestClient(app, base_url="http://testserver") as client:
        yield client
