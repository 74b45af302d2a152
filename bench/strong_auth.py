"""What the strong-authentication steps cost (docs/strong-authentication.md).

``--logins`` "2" contracts, each verified through the whole app (in-process test client)
and a real OpenID Connect provider on loopback (``oidc-provider-mock``, in a thread of this
process, so it shares the interpreter with the server): the median of

* opening the link (``GET /identify/{token}``: the link checked, a login stored, the
  redirect built; discovery cached after the first),
* the callback (``GET /identify/callback``: the login used up, the code exchanged at the
  provider's token endpoint, the ID token checked against the cached JWKS, the identity
  matched, the contract verified with its code put on the automat and contract-update
  published),
* the provider's own token endpoint alone, asked directly, to tell its share,

on SQLite and, with ``--postgres``, on a fresh PostgreSQL database.

    uv run python bench/strong_auth.py [--logins 100] [--postgres]

Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import make_tenant
from tests.integration.test_mechanical_contracts import create, device_keys
from tests.oidc_support import CONTACT, GUEST, Browser, loopback_provider, sent_links
from tests.services import postgres_database

from keyautomat.adapters.migrate import upgrade
from keyautomat.bootstrap import bootstrap
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app


def _ms(values: list[float]) -> str:
    p90 = sorted(values)[len(values) * 9 // 10]
    return f"{statistics.median(values) * 1000:.1f} ms (p90 {p90 * 1000:.1f} ms)"


def measure(url: str, logins: int) -> None:
    settings = Settings(
        database_url=url,
        secret_key=Fernet.generate_key().decode(),
        secret_key_file=Path(tempfile.mkdtemp()) / "k",
        rate_limit_per_second=0,
        db_threads=4,
        public_url="http://testserver/v2",
        strong_auth_allow_private=True,
    )
    container = bootstrap(settings)
    with (
        loopback_provider() as provider,
        TestClient(create_app(container), base_url="http://testserver") as http,
    ):
        tenant = make_tenant(container, http)
        admin = f"/admin/organizationunits/{tenant.unit_id}/strong-authentication"
        Client("http://testserver", tenant.account_id, tenant.private_key, http=http).call(
            "PUT", admin, {"enabled": True, "provider": provider.settings()}
        )
        ids = [f"k{n}" for n in range(logins)]
        device_keys(container, tenant, *ids)
        for key_id in ids:
            create(tenant, keys=[{"id": key_id}], userVerification="2", contact=CONTACT)
        links = sent_links(container)
        assert len(links) == logins
        browser = Browser(http)
        opening: list[float] = []
        callback: list[float] = []
        token_endpoint: list[float] = []
        try:
            for link in links:
                path = link.removeprefix("http://testserver")
                started = time.perf_counter()
                redirect = http.get(path, follow_redirects=False)
                opening.append(time.perf_counter() - started)
                login_page = browser.go("GET", redirect.headers["location"])
                back = browser.callback_of(login_page, GUEST)
                parts = urlsplit(back)
                started = time.perf_counter()
                done = http.get(f"{parts.path}?{parts.query}")
                callback.append(time.perf_counter() - started)
                assert done.status_code == 200, done.text
                # The provider's share: its token endpoint, asked again with a fresh code.
                again = browser.callback_of(browser.go("GET", redirect.headers["location"]), GUEST)
                code = dict(p.split("=", 1) for p in urlsplit(again).query.split("&"))["code"]
                started = time.perf_counter()
                browser.web.post(
                    f"{provider.issuer}/oauth2/token",
                    data={
                        "grant_type": "authorization_code",
                        "code": code,
                        "redirect_uri": "http://testserver/identify/callback",
                    },
                    auth=("keyautomat", "x"),
                )
                token_endpoint.append(time.perf_counter() - started)
        finally:
            browser.close()
    container.close()
    engine = url.split(":", 1)[0]
    print(f"{engine}: {logins} logins")
    print(f"  open the link (redirect)      {_ms(opening)}")
    print(f"  callback (verify, end to end) {_ms(callback)}")
    print(f"  provider's token endpoint     {_ms(token_endpoint)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # the provider package's
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        upgrade(url)
        measure(url, args.logins)
    if args.postgres:
        with postgres_database("keyautomat_bench_strong_auth") as url:
            upgrade(url)
            measure(url, args.logins)


if __name__ == "__main__":
    main()
