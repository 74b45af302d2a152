"""What sharing the replay window and the rate limit across API processes costs per signed
request on PostgreSQL (entrypoints/api/auth.py, adapters/request_state.py).

Serial signed ``GET /v2/`` through the whole app in this process (``TestClient``),
with the rate limit on: first with the state in this process's memory (what a
single process, and SQLite, use), then with the shared tables; wall time and
this process's CPU per request, and the two shared checks on their own.

    uv run python bench/request_state.py [--requests 2000] [--database-url postgresql+psycopg://...]

Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.request_state import SharedLedger
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.client import signature_headers
from keyautomat.config import Settings
from keyautomat.domain.model import OrgUnitType, Role
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.api.auth import MemoryLedger, RateLimiter, ReplayCache
from keyautomat.service_layer import accounts

BASE = "http://testserver/v2"


def _account(container: Container) -> tuple[str, str]:
    def work(session: Session) -> tuple[str, str]:
        unit = accounts.create_organization_unit(
            session,
            None,
            name="Bench",
            customer_id=None,
            type=OrgUnitType.ORGANIZATION,
            parent_id=None,
            iloq_api_user=None,
            secrets=container.secrets,
            now=container.clock.now(),
        )
        created = accounts.create_service_account(
            session,
            None,
            organization_unit_id=unit.id,
            name="bench",
            role=Role.ADMIN,
            now=container.clock.now(),
        )
        return created.account.id, created.private_key_pem

    return container.db.transaction(work)


def _requests(http: TestClient, account: str, key: str, n: int) -> tuple[float, float]:
    url = f"{BASE}/"
    wall = cpu = 0.0
    for _ in range(n):
        headers = signature_headers(
            method="GET", url=url, body="", service_account_id=account, private_key_pem=key
        )
        w0, c0 = time.perf_counter(), time.process_time()
        assert http.get(url, headers=headers).status_code == 200
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
    return wall * 1000 / n, cpu * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    args = parser.parse_args()
    admin = make_url(args.database_url)
    name = f"bench_state_{uuid.uuid4().hex[:8]}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                database_url=url,
                secret_key=Fernet.generate_key().decode(),
                secret_key_file=Path(tmp) / "k",
                rate_limit_per_second=1_000_000,
                rate_limit_burst=1_000_000,
            )
            container = bootstrap(settings)
            account, key = _account(container)
            app = create_app(container)
            verifier = app.state.verifier
            shared = verifier.ledger
            assert isinstance(shared, SharedLedger)
            with TestClient(app, base_url="http://testserver") as http:
                _requests(http, account, key, 200)  # warm up
                verifier.ledger = MemoryLedger(
                    ReplayCache(ttl_ms=600_000), RateLimiter(1_000_000, 1_000_000)
                )
                memory = _requests(http, account, key, args.requests)
                verifier.ledger = shared
                tables = _requests(http, account, key, args.requests)

            async def checks() -> float:
                took = []
                for i in range(args.requests):
                    t0 = time.perf_counter()
                    await shared.accept(account, f"sig-{i}", int(time.time() * 1000))
                    took.append(time.perf_counter() - t0)
                return statistics.median(took) * 1000

            accept_ms = asyncio.run(checks())
            container.close()
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(
        f"signed GET /v2/, {args.requests} serial, PostgreSQL: "
        f"in memory {memory[0]:.2f} ms wall / {memory[1]:.2f} ms CPU per request; "
        f"shared tables {tables[0]:.2f} ms wall / {tables[1]:.2f} ms CPU per request"
    )
    print(f"the shared check alone (replay and rate limit, one transaction): {accept_ms:.2f} ms")


if __name__ == "__main__":
    main()
