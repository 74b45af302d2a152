"""What an Idempotency-Key costs a write (docs/api.md, "Idempotent requests").

``--requests`` signed ``POST /v2/groups`` through the whole app (in-process test client,
no network), three ways: without the header, with a new key each time (claim + stored
answer: two more short transactions), and the same key again (a replay of the stored
answer). Median per request, two rounds each, on SQLite and, with ``--postgres``, on
a fresh PostgreSQL database.

    uv run python bench/idempotency.py [--requests 300] [--postgres]

Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import make_tenant
from tests.services import postgres_database

from keyautomat.adapters.migrate import upgrade
from keyautomat.bootstrap import bootstrap
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app


def measure(url: str, requests: int) -> None:
    settings = Settings(
        database_url=url,
        secret_key=Fernet.generate_key().decode(),
        secret_key_file=Path(tempfile.mkdtemp()) / "k",
        rate_limit_per_second=0,
        db_threads=4,
    )
    container = bootstrap(settings)
    body = {"name": "G", "type": 1, "customerId": "g"}
    with TestClient(create_app(container), base_url="http://testserver") as http:
        tenant = make_tenant(container, http)

        def median_ms(headers_of: Callable[[int], dict[str, str]]) -> float:
            took = []
            for n in range(requests):
                started = time.perf_counter()
                answer = tenant.api.request("POST", "/groups", body, headers=headers_of(n))
                took.append(time.perf_counter() - started)
                assert answer.status_code == 201, answer.text
            return statistics.median(took) * 1000

        engine = "SQLite" if url.startswith("sqlite") else "PostgreSQL"
        for _ in range(2):
            bare = median_ms(lambda n: {})
            new = median_ms(lambda n: {"Idempotency-Key": f"k-{time.time_ns()}-{n}"})
            replay = median_ms(lambda n: {"Idempotency-Key": "the same key"})
            print(
                f"{engine}: POST /v2/groups median, {requests} requests: no key {bare:.2f} ms, "
                f"a new key {new:.2f} ms, a replay {replay:.2f} ms"
            )
    container.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        upgrade(url)
        measure(url, args.requests)
    if args.postgres:
        with postgres_database(f"bench_idempotency_{os.getpid()}") as pg:
            upgrade(pg)
            measure(pg, args.requests)


if __name__ == "__main__":
    main()
