"""A real OpenID Connect provider on loopback, and a browser that logs in through it.

The provider is the ``oidc-provider-mock`` package: a real authorization server
(Authlib's) with discovery, a JWKS, RS256-signed ID tokens, and a login form
where the tester picks the ``sub`` of a user whose claims were given up front.
Nothing of keyautomat is replaced: the server under test fetches the discovery
document and the keys, exchanges the code and checks the token over HTTP.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from keyautomat.adapters import orm
from keyautomat.bootstrap import Container
from keyautomat.service_layer import notifications

with warnings.catch_warnings():
    # The package imports Authlib's deprecated JOSE module; that is its business.
    warnings.simplefilter("ignore", DeprecationWarning)
    from oidc_provider_mock import User, run_server_in_thread

# The provider package runs on Authlib's deprecated interfaces (its warnings, raised in the
# provider's threads, would fail the tests that use it): tests using it carry these marks.
PROVIDER_WARNINGS = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:authlib.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:oidc_provider_mock.*"),
]

GUEST = "guest-1"
STRANGER = "stranger-1"
# The contact of the contracts under test, and the person the provider knows as GUEST.
CONTACT = {
    "name": "John Doe",
    "email": "John.Doe@Example.com",
    "phoneNumber": "+358401234567",
    "language": "en",
    # Only the link's message: the token is kept nowhere else (docs/security.md).
    "notifications": {"contractSignatureRequested": {"email": True}},
}
USERS = (
    User(
        sub=GUEST,
        claims={
            "name": "john  DOE",
            "email": "john.doe@example.com",
            "email_verified": True,
            "phone_number": "+358 40 123 4567",
            "phone_number_verified": True,
        },
    ),
    User(
        sub=STRANGER,
        claims={
            "name": "Jane Roe",
            "email": "jane.roe@example.com",
            "email_verified": True,
            "phone_number": "+358409999999",
            "phone_number_verified": True,
        },
    ),
    # The guest's address, but not verified by the provider: it must not count.
    User(sub="unverified-1", claims={"email": "john.doe@example.com", "email_verified": False}),
)


@dataclass(frozen=True)
class Provider:
    issuer: str

    def settings(self, **changes: Any) -> dict[str, Any]:
        """A provider body for the admin API that matches on the verified email."""
        return {
            "issuer": self.issuer,
            "clientId": "keyautomat",
            "clientSecret": "s3cret-of-the-client",
            "scopes": ["openid", "email", "profile", "phone"],
            "match": [{"claim": "email", "contact": "email"}],
            **changes,
        }


@contextmanager
def loopback_provider(users: Sequence[User] = USERS) -> Iterator[Provider]:
    """The provider, serving on localhost until the block ends."""
    with run_server_in_thread(require_nonce=True, user_claims=users) as server:
        yield Provider(f"http://localhost:{server.server_port}")


class Browser:
    """Follows redirects between keyautomat (the in-process app) and the provider (a real
    server), keeping each side's cookies, as a person's browser would."""

    def __init__(self, app: TestClient) -> None:
        self.app = app
        self.web = httpx2.Client(timeout=10)

    def close(self) -> None:
        self.web.close()

    def _one(self, method: str, url: str, **kwargs: Any) -> httpx2.Response:
        parts = urlsplit(url)
        if parts.hostname in (None, "testserver"):
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            return self.app.request(method, path, follow_redirects=False, **kwargs)
        return self.web.request(method, url, follow_redirects=False, **kwargs)

    def go(self, method: str, url: str, **kwargs: Any) -> httpx2.Response:
        response = self._one(method, url, **kwargs)
        for _ in range(10):
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            url = urljoin(str(response.url), response.headers["location"])
            response = self._one("GET", url)
        raise AssertionError("too many redirects")

    def open_link(self, link: str) -> httpx2.Response:
        """Open the message's link: the provider's login form (or our refusal page)."""
        return self.go("GET", link)

    def log_in(self, login_page: httpx2.Response, sub: str) -> httpx2.Response:
        """Submit the provider's form as ``sub``; keyautomat's page at the end."""
        assert 'name="sub"' in login_page.text, login_page.text[:500]
        return self.go("POST", str(login_page.url), data={"sub": sub})

    def deny(self, login_page: httpx2.Response) -> httpx2.Response:
        return self.go("POST", str(login_page.url), data={"action": "deny"})

    def callback_of(self, login_page: httpx2.Response, sub: str) -> str:
        """Log in as ``sub`` but stop at the provider's redirect: the callback URL."""
        answer = self.web.post(str(login_page.url), data={"sub": sub}, follow_redirects=False)
        assert answer.status_code in (302, 303), answer.text[:500]
        return str(answer.headers["location"])


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def link_token(text: str) -> str:
    tokens: list[str] = re.findall(r"/identify/([A-Za-z0-9_-]{20,})", text)
    assert tokens, "no identification link"
    return tokens[-1]


def sent_links(container: Container) -> list[str]:
    """The verification links queued for contacts, oldest first (each message holds its
    link sealed with the server's key; the database keeps only the token's hash)."""
    rows = container.db.transaction(
        lambda s: s.execute(
            select(orm.outbox.c.payload)
            .where(orm.outbox.c.kind == notifications.KIND)
            .order_by(orm.outbox.c.id)
        ).all()
    )
    links = [
        notifications.unsealed_view(json.loads(r.payload), container.secrets).signature_link
        for r in rows
    ]
    return [link for link in links if link]
