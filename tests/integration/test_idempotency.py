"""The Idempotency-Key header over the signed API, on both engines (docs/api.md,
"Idempotent requests")."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from keyautomat.adapters.orm import idempotency_keys
from keyautomat.adapters.orm_mechanical import mechanical_contracts
from keyautomat.bootstrap import Container, bootstrap
from keyautomat.client import Client, compact_json, signature_headers
from keyautomat.config import Settings
from keyautomat.contracts import service
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import idempotency
from keyautomat.service_layer.clock import ManualClock, SystemClock
from tests.conftest import TEST_BASE, Tenant
from tests.contract_helpers import period
from tests.integration.test_mechanical_contracts import device_keys

PATH = "/mechanical/keycontracts"
KEY = "0b9a5e3c-6f1d-4c2e-9a7b-3d8f2e1c4b5a"


@pytest.fixture
def shared_key(container: Container, acme: Tenant) -> str:
    """A shared key in an automat: contracts for it may overlap, so every creation that is
    not deduplicated makes one more contract."""
    device_keys(container, acme, "desk", shared=True)
    return "desk"


def contract_body(key_id: str = "desk", name: str = "Guest") -> dict[str, Any]:
    start, end = period()
    return {"start": start, "end": end, "contact": {"name": name}, "keys": [{"id": key_id}]}


def contracts(container: Container) -> int:
    count = select(func.count()).select_from(mechanical_contracts)
    return int(container.db.transaction(lambda s: s.scalar(count)) or 0)


def post(api: Client, body: Any, key: str | bytes = KEY, path: str = PATH) -> Any:
    return api.request("POST", path, body, headers={"Idempotency-Key": key})  # type: ignore[dict-item]


def test_a_retry_after_a_restart_returns_the_stored_response_and_creates_nothing(
    container: Container, acme: Tenant, shared_key: str, settings: Settings
) -> None:
    body = contract_body()
    first = post(acme.api, body)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    # A new process on the same database: nothing of the first is in memory.
    restarted = bootstrap(settings, clock=SystemClock())
    try:
        with TestClient(create_app(restarted), base_url="http://testserver") as http:
            api = Client(TEST_BASE, acme.account_id, acme.private_key, http=http)
            again = post(api, body)
    finally:
        restarted.close()
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["idempotent-replayed"] == "true"
    assert contracts(container) == 1


def test_the_same_key_with_another_body_or_path_is_refused_naming_the_header(
    container: Container, acme: Tenant, shared_key: str
) -> None:
    assert post(acme.api, contract_body()).status_code == 201
    other_body = post(acme.api, contract_body(name="Someone else"))
    other_path = post(acme.api, {"name": "G", "type": 1, "customerId": "g"}, path="/groups")
    for refused in (other_body, other_path):
        assert refused.status_code == 422
        assert refused.json()["statusCode"] == 422
        assert refused.json()["message"].startswith("Idempotency-Key: ")
    assert contracts(container) == 1
    assert acme.api.get("/groups")["data"] == []


def test_twenty_concurrent_requests_with_one_key_make_one_contract(
    container: Container, acme: Tenant, shared_key: str, http: TestClient
) -> None:
    content = compact_json(contract_body()).encode()
    url = TEST_BASE + PATH
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    # Signed beforehand, each with its own timestamp (the same signature twice is a replay).
    signed = [
        signature_headers(
            method="POST",
            url=url,
            body=content,
            service_account_id=acme.account_id,
            private_key_pem=acme.private_key,
            timestamp_ms=now_ms + n,
        )
        for n in range(20)
    ]
    start = threading.Barrier(20)

    def send(headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        start.wait(timeout=10)
        response = http.post(
            url,
            content=content,
            headers={**headers, "content-type": "application/json", "Idempotency-Key": KEY},
        )
        return response.status_code, response.content, dict(response.headers)

    # Threads into the app's one event loop; on PostgreSQL its database work runs on
    # several connections at once (db_threads=4).
    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(send, signed))
    statuses = sorted(status for status, _, _ in outcomes)

    assert set(statuses) <= {201, 409}, statuses
    created = [(content, headers) for status, content, headers in outcomes if status == 201]
    assert len({content for content, _ in created}) == 1
    assert sum("idempotent-replayed" not in headers for _, headers in created) == 1
    for status, answer, headers in outcomes:
        if status == 409:
            assert b"Idempotency-Key: a request with this key is in progress" in answer
            assert headers["retry-after"] == "1"
    assert contracts(container) == 1


def second_account(tenant: Tenant, http: TestClient) -> Client:
    """Another service account of the tenant's own unit."""
    created = tenant.api.post(
        "/serviceAccounts", {"organizationUnitId": tenant.unit_id, "name": "Second PMS"}
    )
    return Client(TEST_BASE, created["id"], created["privateKey"], http=http)


def test_keys_are_scoped_per_service_account(
    container: Container, acme: Tenant, shared_key: str, http: TestClient
) -> None:
    other = second_account(acme, http)
    body = contract_body()
    mine = post(acme.api, body)
    theirs = post(other, body)
    assert mine.status_code == theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert contracts(container) == 2


@pytest.mark.parametrize(
    "key",
    [b"", b"k" * 256, "n\u00e4yte".encode("latin-1"), b"tab\there", b"del\x7f"],
    ids=["empty", "256 characters", "not ASCII", "a tab", "a control character"],
)
def test_a_bad_key_is_refused_400_naming_the_header_and_changes_nothing(
    container: Container, acme: Tenant, shared_key: str, key: bytes
) -> None:
    refused = post(acme.api, contract_body(), key=key)
    assert refused.status_code == 400
    assert refused.json()["message"] == [
        "Idempotency-Key: must be 1 to 255 printable ASCII characters"
    ]
    assert contracts(container) == 0


def test_a_key_of_255_printable_characters_is_accepted(acme: Tenant, shared_key: str) -> None:
    key = ("".join(chr(c) for c in range(0x21, 0x7F)) * 3)[:255]
    assert post(acme.api, contract_body(), key=key).status_code == 201


def test_a_key_given_twice_is_refused(container: Container, acme: Tenant, http: TestClient) -> None:
    url = TEST_BASE + "/groups"
    content = compact_json({"name": "G", "type": 1, "customerId": "g"}).encode()
    headers = signature_headers(
        method="POST",
        url=url,
        body=content,
        service_account_id=acme.account_id,
        private_key_pem=acme.private_key,
    )
    refused = http.post(
        url,
        content=content,
        headers=[*headers.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert refused.status_code == 400
    assert refused.json()["message"] == ["Idempotency-Key: must be given once"]
    assert acme.api.get("/groups")["data"] == []


def test_a_refusal_of_the_input_is_stored_and_replayed(
    container: Container, acme: Tenant, shared_key: str
) -> None:
    body = contract_body(key_id="not-yet")
    refused = post(acme.api, body)
    assert refused.status_code == 400
    acme.api.post(
        "/mechanical/keys",
        {"id": "not-yet", "selectedStorage": {"manualStorageInfo": "Desk"}, "away": False},
    )
    # The answer to this key was given; a new attempt needs a new key.
    again = post(acme.api, body)
    assert again.status_code == 400
    assert again.content == refused.content
    assert again.headers["idempotent-replayed"] == "true"
    assert post(acme.api, body, key="a new attempt").status_code == 201


def test_a_request_that_failed_with_a_5xx_leaves_the_key_free_for_a_retry(
    container: Container, acme: Tenant, shared_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = service.create
    calls = 0

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the database went away")
        return create(*args, **kwargs)

    monkeypatch.setattr(service, "create", failing_once)
    body = contract_body()
    assert post(acme.api, body).status_code == 500
    retried = post(acme.api, body)
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert contracts(container) == 1


ACCOUNT = "a" * 24


def seed_claim(
    container: Container,
    key: str,
    at: datetime,
    *,
    account_id: str = ACCOUNT,
    fingerprint: str = "f" * 64,
) -> idempotency.ClaimOutcome:
    """What a request with ``fingerprint`` claiming ``key`` at ``at`` gets (and leaves)."""
    return container.db.transaction(
        lambda s: idempotency.claim(
            s,
            account_id,
            key,
            fingerprint,
            now=at,
            ttl=timedelta(hours=24),
            claim_bound=timedelta(seconds=60),
            box=container.secrets,
        )
    )


def claim_at(container: Container, tenant: Tenant, body: Any, at: datetime) -> None:
    """The claim a request with ``body`` made at ``at`` and never finished."""
    fingerprint = idempotency.fingerprint(
        "POST", ("/v2" + PATH).encode(), compact_json(body).encode()
    )
    outcome = seed_claim(container, KEY, at, account_id=tenant.account_id, fingerprint=fingerprint)
    assert isinstance(outcome, idempotency.Claimed)


def test_a_request_in_progress_answers_409_to_a_retry(
    container: Container, acme: Tenant, shared_key: str
) -> None:
    body = contract_body()
    claim_at(container, acme, body, datetime.now(UTC) - timedelta(seconds=5))
    busy = post(acme.api, body)
    assert busy.status_code == 409
    assert (
        busy.json()["message"]
        == "Idempotency-Key: a request with this key is in progress; retry later"
    )
    assert busy.headers["retry-after"] == "1"
    assert contracts(container) == 0


def test_a_claim_left_by_a_killed_process_is_taken_over_after_the_claim_bound(
    container: Container, acme: Tenant, shared_key: str
) -> None:
    body = contract_body()
    claim_at(container, acme, body, datetime.now(UTC) - timedelta(seconds=61))
    taken_over = post(acme.api, body)
    assert taken_over.status_code == 201
    assert post(acme.api, body).headers["idempotent-replayed"] == "true"
    assert contracts(container) == 1


def test_a_stored_response_holding_a_secret_is_encrypted(
    container: Container, acme: Tenant
) -> None:
    created = post(
        acme.api, {"organizationUnitId": acme.unit_id, "name": "PMS"}, path="/serviceAccounts"
    )
    assert created.status_code == 201
    private_key = created.json()["privateKey"]
    stored = container.db.transaction(
        lambda s: s.execute(select(idempotency_keys.c.status, idempotency_keys.c.response)).one()
    )
    assert stored.status == 201
    assert "PRIVATE KEY" not in stored.response
    assert private_key not in stored.response
    replayed = post(
        acme.api, {"organizationUnitId": acme.unit_id, "name": "PMS"}, path="/serviceAccounts"
    )
    assert replayed.json()["privateKey"] == private_key


def test_requests_without_the_header_are_not_deduplicated(
    container: Container, acme: Tenant, shared_key: str
) -> None:
    body = contract_body()
    acme.api.post(PATH, body)
    acme.api.post(PATH, body)
    assert contracts(container) == 2
    assert rows(container) == []


def rows(container: Container) -> list[str]:
    return sorted(
        container.db.transaction(lambda s: list(s.scalars(select(idempotency_keys.c.key))))
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


def test_the_prune_removes_expired_rows_only(container: Container, clock: ManualClock) -> None:
    now, day = clock.now(), timedelta(hours=24)
    seed_claim(container, "expired long ago", now - 3 * day)
    seed_claim(container, "expired just now", now - day)
    seed_claim(container, "a second short of a day", now - day + timedelta(seconds=1))
    seed_claim(container, "new", now)
    assert asyncio.run(idempotency.prune_expired(container.db, clock.now())) == 2
    assert rows(container) == ["a second short of a day", "new"]


def test_the_prune_deletes_in_batches_until_none_is_left(
    container: Container, clock: ManualClock
) -> None:
    for n in range(5):
        seed_claim(container, f"k{n}", clock.now() - timedelta(days=2))
    assert asyncio.run(idempotency.prune_expired(container.db, clock.now(), batch=2)) == 5
    assert rows(container) == []


def test_the_worker_prunes_once_a_minute(container: Container, clock: ManualClock) -> None:
    worker = OutboxWorker(container.db, container.dispatcher, clock)

    async def passes() -> list[list[str]]:
        seen = []
        for key, wait in (("first", 0), ("second", 59), ("third", 1)):
            seed_claim(container, key, clock.now() - timedelta(days=2))
            clock.advance(timedelta(seconds=wait))
            await worker.run_chores()
            seen.append(rows(container))
        return seen

    assert asyncio.run(passes()) == [[], ["second"], []]


def test_a_claim_taken_over_is_no_longer_its_first_holders_to_finish_or_release(
    container: Container,
) -> None:
    now = datetime.now(UTC)
    first = seed_claim(container, KEY, now - timedelta(seconds=61))
    second = seed_claim(container, KEY, now)
    assert isinstance(first, idempotency.Claimed)
    assert isinstance(second, idempotency.Claimed)
    late = idempotency.StoredResponse(201, (), b"late")
    on_time = idempotency.StoredResponse(201, (), b"on time")

    def finish(token: str, response: idempotency.StoredResponse) -> bool:
        return container.db.transaction(
            lambda s: idempotency.finish(s, ACCOUNT, KEY, token, response, container.secrets)
        )

    container.db.transaction(lambda s: idempotency.release(s, ACCOUNT, KEY, first.token))
    assert not finish(first.token, late)
    assert finish(second.token, on_time)
    assert seed_claim(container, KEY, now) == idempotency.Replay(on_time)
    # A finished response is never released.
    container.db.transaction(lambda s: idempotency.release(s, ACCOUNT, KEY, second.token))
    assert seed_claim(container, KEY, now) == idempotency.Replay(on_time)


def test_a_patch_is_covered_and_a_get_ignores_the_header(
    container: Container, acme: Tenant, shared_key: str
) -> None:
    created = acme.api.post(PATH, contract_body())
    change = {"contact": {"name": "Renamed"}}
    path = f"{PATH}/{created['id']}"
    first = acme.api.request("PATCH", path, change, headers={"Idempotency-Key": KEY})
    again = acme.api.request("PATCH", path, change, headers={"Idempotency-Key": KEY})
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    read = acme.api.request("GET", path, headers={"Idempotency-Key": "read"})
    assert read.status_code == 200
    assert "idempotent-replayed" not in read.headers
    assert rows(container) == [KEY]
