"""A backup of the SQLite database taken while a serving process creates contracts: restored,
it is intact and holds every contract acknowledged before the backup began
(docs/operations.md, "Backups")."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.entrypoints.api.app import create_app
from tests.conftest import Tenant, make_tenant
from tests.contract_helpers import RIGHT, iso, stocked_automat
from tests.devices import eventually
from tests.processes import CLI, Processes

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def tenant(container: Container) -> Iterator[tuple[Tenant, str]]:
    """A tenant with a stocked automat, seeded through an app in this process that runs
    nothing in the background (the serving process under test does)."""
    with TestClient(create_app(container, run_gateway=False)) as client:
        tenant = make_tenant(container, client)
        automat_id, _keys = stocked_automat(container, tenant, keys=3, empty=0)
        yield tenant, automat_id


class Stream:
    """Creates contracts one after another, each for its own hour, until stopped; keeps the
    id of every one answered 201, in the order the answers came."""

    def __init__(self, api: Client, automat_id: str) -> None:
        self.api = api
        self.automat_id = automat_id
        self.acknowledged: list[str] = []
        self.refused: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="contract-stream")
        self.base = datetime.now(UTC) + timedelta(days=1)

    def body(self, n: int) -> dict[str, Any]:
        start = self.base + timedelta(hours=2 * n)
        return {
            "input": {
                "contractType": 1,
                "accessRightIds": [RIGHT],
                "numberOfKeys": 1,
                "keyAutomatId": self.automat_id,
                "start": iso(start),
                "end": iso(start + timedelta(hours=1)),
            }
        }

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            response = self.api.request("POST", "/iloq/keycontracts", self.body(n))
            n += 1
            with self.lock:
                if response.status_code == 201:
                    self.acknowledged.append(response.json()["id"])
                else:
                    self.refused.append((response.status_code, response.text))

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def so_far(self) -> set[str]:
        with self.lock:
            return set(self.acknowledged)


def test_a_backup_taken_while_contracts_stream_in_restores_intact_with_every_acknowledged_one(
    processes: Processes, tenant: tuple[Tenant, str], tmp_path: Path
) -> None:
    owner, automat_id = tenant
    api = processes.serve()  # API, worker and device gateway, on the SQLite file
    backup = tmp_path / "backups" / "during.db"
    with Client(api.api_url, owner.account_id, owner.private_key) as client:
        stream = Stream(client, automat_id)
        stream.thread.start()
        try:
            eventually(lambda: stream.count() >= 20, timeout=60)
            before = stream.so_far()
            taken = subprocess.run(
                [*CLI, "backup", str(backup)],
                env=processes.env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            at_end = stream.count()
            # The server went on writing: more contracts after the backup, too.
            eventually(lambda: stream.count() >= at_end + 10, timeout=60)
        finally:
            stream.stop.set()
            stream.thread.join(timeout=60)
    assert taken.returncode == 0, taken.stderr
    assert stream.refused == []
    report = json.loads(taken.stdout)

    restored = tmp_path / "restored" / "keyautomat.db"
    restore = subprocess.run(
        [*CLI, "restore", str(backup)],
        env={**processes.env, "KEYAUTOMAT_DATABASE_URL": f"sqlite:///{restored}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert restore.returncode == 0, restore.stderr
    with sqlite3.connect(restored) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ids = {str(row[0]) for row in db.execute("SELECT id FROM contracts")}
    assert before <= ids
    assert len(ids) == report["contracts"]
    # Nothing but acknowledged contracts, and not all of them: the backup is one moment.
    everything = stream.so_far()
    assert ids <= everything
    assert len(ids) < len(everything)
