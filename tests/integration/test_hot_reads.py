"""The hot-read path (entrypoints/api/hot_reads.py) answers exactly what FastAPI's routes
answer: the same signed requests sent to the app with it and to one without it get the same
status, headers (but the request id) and body bytes, and the same access line."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import signature_headers
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.api.hot_reads import HotRead, HotReadsMiddleware
from keyautomat.service_layer.principal import Principal
from tests.conftest import Tenant, make_tenant
from tests.integration.test_automat_reads import INSTALL

BASE = "http://testserver"
HUGE = "9" * 40
PAGE_QUERIES = [
    "",
    *(f"?limit={v}" for v in ("0", "1", "2", "100", "101", "-1", "abc", "1.5", "", HUGE)),
    *(f"?after={v}" for v in ("0", "1", "2", "3", "100", "-1", "abc", "1.5", "", HUGE)),
    "?after=1&limit=1",
    "?limit=1&after=1",
    "?limit=1&limit=2",
    "?limit=abc&limit=2",
    "?after=1&after=0&limit=1",
    "?limit=1&foo=bar",
    "?foo=bar",
    "?limit",
    "?limit=%31",
    "?limit=1%2E5",
    "?limit=+1",
    "?limit=%2B1",
    "?&limit=1&",
    "?LIMIT=1",
]


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    access: list[str]


@pytest.fixture
def plain(container: Container) -> TestClient:
    """The same application without the hot-read path: every request goes through FastAPI.
    (No lifespan: the app under test, ``http``, runs the one the container needs.)"""
    return TestClient(create_app(container, run_gateway=False, hot_reads=False), base_url=BASE)


@pytest.fixture
def served_hot(monkeypatch: pytest.MonkeyPatch) -> list[HotRead]:
    """Every read the hot-read path answered, in order."""
    answered: list[HotRead] = []
    real = HotReadsMiddleware._answer

    async def recording(self: HotReadsMiddleware, read: HotRead, caller: Principal) -> object:
        answered.append(read)
        return await real(self, read, caller)

    monkeypatch.setattr(HotReadsMiddleware, "_answer", recording)
    return answered


def _send(
    client: TestClient,
    tenant: Tenant,
    method: str,
    target: str,
    timestamp_ms: int,
    caplog: pytest.LogCaptureFixture,
) -> Answer:
    headers = signature_headers(
        method=method,
        url=BASE + target,
        body="",
        service_account_id=tenant.account_id,
        private_key_pem=tenant.private_key,
        timestamp_ms=timestamp_ms,
    )
    caplog.clear()
    response = client.request(method, BASE + target, headers=headers, follow_redirects=False)
    access = [
        # Method, route and status; the duration differs.
        " ".join(record.getMessage().split()[:3])
        for record in caplog.records
        if record.name == "keyautomat.access"
    ]
    kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "x-request-id"]
    return Answer(response.status_code, kept, response.content, access)


class Compare:
    """Sends each request to both apps, signed anew for each (a signature is accepted once,
    by every process on PostgreSQL)."""

    def __init__(
        self,
        hot: TestClient,
        plain: TestClient,
        served_hot: list[HotRead],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        self.hot, self.plain, self.served_hot, self.caplog = hot, plain, served_hot, caplog
        self.clock = time.time_ns() // 1_000_000

    def same(self, tenant: Tenant, target: str, method: str = "GET") -> tuple[Answer, bool]:
        """Both apps' answer to ``method target`` (one answer: they are equal), and whether
        the hot-read path answered it."""
        self.clock += 1
        before = len(self.served_hot)
        hot = _send(self.hot, tenant, method, target, self.clock, self.caplog)
        took_hot = len(self.served_hot) > before
        self.clock += 1
        plain = _send(self.plain, tenant, method, target, self.clock, self.caplog)
        assert len(self.served_hot) == before + took_hot, "the plain app took the hot path"
        assert (hot.status, hot.headers, hot.body) == (plain.status, plain.headers, plain.body), (
            f"{method} {target}"
        )
        assert hot.access == plain.access, f"{method} {target}"
        assert len(hot.access) == 1
        return hot, took_hot


@pytest.fixture
def compare(
    http: TestClient,
    plain: TestClient,
    served_hot: list[HotRead],
    caplog: pytest.LogCaptureFixture,
) -> Compare:
    caplog.set_level(logging.INFO, logger="keyautomat.access")
    return Compare(http, plain, served_hot, caplog)


def _install(tenant: Tenant, count: int) -> list[str]:
    return [
        tenant.api.post("/automats/install", {**INSTALL, "name": f"Automat {i}"})["id"]
        for i in range(count)
    ]


def test_the_three_reads_answer_as_their_routes_do(
    compare: Compare, acme: Tenant, acme_pms: Tenant
) -> None:
    ids = _install(acme, 3)
    for target in ("/v2/", "/v2/automats", f"/v2/automats/{ids[0]}"):
        answer, took_hot = compare.same(acme, target)
        assert answer.status == 200
        assert took_hot
    answer, took_hot = compare.same(acme_pms, "/v2/automats")
    assert (answer.status, took_hot) == (200, True)


def test_every_page_query_answers_as_the_route_does(compare: Compare, acme: Tenant) -> None:
    _install(acme, 3)
    statuses = set()
    for query in PAGE_QUERIES:
        answer, _ = compare.same(acme, f"/v2/automats{query}")
        statuses.add(answer.status)
    # Both kinds of answer were compared: pages and the one error shape naming the field.
    assert statuses == {200, 400}


def test_a_query_the_route_reads_otherwise_is_left_to_fastapi(
    compare: Compare, acme: Tenant
) -> None:
    for query in ("?limit=1&limit=2", "?limit=1&foo=bar", "?LIMIT=1"):
        answer, took_hot = compare.same(acme, f"/v2/automats{query}")
        assert (answer.status, took_hot) == (200, False), query
    # Escapes in the query are decoded by the same parser FastAPI's would use.
    for query in ("?after=1&limit=2", "?limit=%31", "?limit=abc"):
        answer, took_hot = compare.same(acme, f"/v2/automats{query}")
        assert took_hot, query


def test_automats_out_of_reach_or_oddly_named_answer_as_the_route_does(
    compare: Compare, container: Container, http: TestClient, acme: Tenant, acme_pms: Tenant
) -> None:
    (mine,) = _install(acme, 1)
    other = make_tenant(container, http, name="Other Housing")
    (theirs,) = _install(other, 1)
    escaped = "".join(f"%{ord(c):02X}" for c in mine)
    cases = {
        "/v2/automats/DOES-NOT-EXIST": (404, True),
        f"/v2/automats/{theirs}": (404, True),
        f"/v2/automats/{escaped}": (200, False),
        f"/v2/automats/{mine[:-1]}%{ord(mine[-1]):02x}": (200, False),
        "/v2/automats/%C3%A4%E2%98%83": (404, False),
        "/v2/automats/a%2Fb": (404, False),
        "/v2/automats/a%20b": (404, False),
        "/v2/automats/" + "x" * 4000: (404, True),
        "/v2/automats/install": (404, True),
        f"/v2/automats/{mine}?x=1": (200, False),
    }
    for target, expected in cases.items():
        answer, took_hot = compare.same(acme, target)
        assert (answer.status, took_hot) == expected, target
    # An integration account of a unit below sees none of its parent's automats.
    answer, took_hot = compare.same(acme_pms, f"/v2/automats/{mine}")
    assert (answer.status, took_hot) == (404, True)


def test_other_shapes_of_the_three_paths_are_left_to_fastapi(
    compare: Compare, acme: Tenant
) -> None:
    (mine,) = _install(acme, 1)
    cases = {
        ("GET", "/v2"): 307,
        ("GET", "/v2/automats/"): 307,
        ("GET", f"/v2/automats/{mine}/"): 307,
        ("GET", "/v2//automats"): 404,
        ("GET", "/v2/?x=1"): 200,
        # FastAPI declares GET routes without HEAD.
        ("HEAD", "/v2/"): 405,
        ("HEAD", "/v2/automats?limit=1"): 405,
        ("HEAD", f"/v2/automats/{mine}"): 405,
        ("POST", "/v2/automats"): 405,
        ("DELETE", f"/v2/automats/{mine}"): 405,
    }
    for (method, target), status in cases.items():
        answer, took_hot = compare.same(acme, target, method)
        assert (answer.status, took_hot) == (status, False), (method, target)
