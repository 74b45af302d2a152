"""The console's pages with 1,000 automats and N contracts: p50/p99 of each page.

Seeds as ``bench/contracts.py --kind iloq`` does (one organization, 1,000 active key20
automats of 30 lockers, N contracts of one key each, 90 % ended), gives every contract
a guest (name, email, phone) and signs a console admin in; then asks each page
``--requests`` times in a row through the console application in this process (the
page's SQL and its rendering; no network): the dashboard, the automat list, the
first page of the contract list, the list
filtered to ongoing contracts, the list searched by a guest's name, by a phone number
and by a key id, and one contract's page with its timeline. One JSON line per page:

    uv run python bench/console_contracts.py [--existing 100000] [--requests 50]
    uv run python bench/console_contracts.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

# bench/contracts.py (its own import of bench/support.py puts the project on the path)
from contracts import fresh_postgres, seed_iloq
from cryptography.fernet import Fernet
from sqlalchemy import func, literal, select, update
from tests.console_support import PASSWORD, add_user, console_client, csrf_of

from keyautomat.adapters.migrate import upgrade
from keyautomat.adapters.orm_contracts import contract_keys, contracts
from keyautomat.bootstrap import bootstrap
from keyautomat.config import Settings
from keyautomat.domain.console import ConsoleRole


def seed_guests(container: Any) -> str:
    """Every contract gets a guest named after its id (``Guest <id>``); the unit's id."""
    c = contracts

    def work(session: Any) -> str:
        session.execute(
            update(c).values(
                contact=literal('{"name":"Guest ')
                + c.c.id
                + literal('","email":"g')
                + c.c.id
                + literal('@example.com","phoneNumber":"+35840')
                + func.substr(c.c.id, 18, 7)
                + literal('"}')
            )
        )
        unit: str = session.scalar(select(c.c.organization_unit_id).limit(1))
        return unit

    result: str = container.db.transaction(work)
    return result


def timed(ask: Callable[[], Any], requests: int) -> dict[str, float]:
    ask()  # the first request compiles statements and templates
    ms = []
    for _ in range(requests):
        t0 = time.perf_counter()
        answer = ask()
        ms.append((time.perf_counter() - t0) * 1000)
        assert answer.status_code == 200, answer.status_code
    ms.sort()
    return {
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[max(0, int(len(ms) * 0.99) - 1)], 1),
        "max_ms": round(ms[-1], 1),
    }


def run(existing: int, requests: int, url: str | None) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp())
    drop: Callable[[], None] = lambda: None  # noqa: E731
    database_url = f"sqlite:///{tmp / 'bench.db'}" if url is None else None
    if database_url is None:
        assert url is not None
        database_url, drop = fresh_postgres(url)
    upgrade(database_url)
    settings = Settings(
        database_url=database_url,
        secret_key=Fernet.generate_key().decode(),
        secret_key_file=tmp / "k",
        notify_sink_dir=tmp / "sink",
        rate_limit_per_second=0,
    )
    container = bootstrap(settings)
    results = []
    try:
        seed_iloq(container, existing)
        unit_id = seed_guests(container)
        if container.db.engine.dialect.name == "postgresql":
            with container.db.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        add_user(container, unit_id, "bench@example.com", ConsoleRole.ADMIN)
        probe = container.db.transaction(
            lambda s: s.execute(
                select(contracts.c.id, contract_keys.c.key_id)
                .join(contract_keys, contract_keys.c.contract_id == contracts.c.id)
                .order_by(contracts.c.id)
                .offset(existing // 2)
                .limit(1)
            ).one()
        )
        with console_client(container) as client:
            form = client.get("/console/login")
            client.post(
                "/console/login",
                data={
                    "csrf": csrf_of(form.text),
                    "email": "bench@example.com",
                    "password": PASSWORD,
                },
            )
            pages = {
                "dashboard": "/console/",
                "automat list": "/console/automats",
                "list": "/console/contracts",
                "list ongoing": "/console/contracts?period=ongoing",
                "search by name": f"/console/contracts?q=Guest+{probe.id}",
                "search by phone": f"/console/contracts?q=040+{probe.id[17:24]}",
                "search by key": f"/console/contracts?q={probe.key_id}",
                "one contract": f"/console/contracts/iloq/{probe.id}",
            }
            for name, path in pages.items():
                figures = timed(partial(client.get, path), requests)
                results.append(
                    {
                        "engine": container.db.engine.dialect.name,
                        "contracts": existing,
                        "page": name,
                        "requests": requests,
                        **figures,
                    }
                )
    finally:
        container.close()
        drop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--existing", type=int, action="append")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    for existing in args.existing or [100_000]:
        for line in run(existing, args.requests, args.database_url):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
