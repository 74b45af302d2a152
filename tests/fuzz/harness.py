"""What both fuzzers share: a sender that signs the final request, a seeded world, the checks.

The sender signs exactly the bytes and the URL that go on the wire: the request
is built first (by schemathesis and then httpx, or by a mutator), and only then
are the three signature headers computed over ``str(request.url)`` and
``request.content``. Nothing a fuzzer generates can therefore be refused as a
bad signature instead of reaching the handler.

A request fails the fuzz when it gets a 5xx, or an error body that is not the
one shape of spec/gaps.md A1. Each failure keeps what a reader needs to act on
it: the operation, what was generated or mutated, the status, the body, and
the exception the server logged.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import signature_headers
from keyautomat.domain.model import Role
from keyautomat.service_layer import accounts
from tests.conftest import Tenant, make_tenant
from tests.contract_helpers import period, stocked_automat
from tests.devices import admin_client
from tests.integration.test_mechanical_contracts import CONTACT, device_keys

BASE = "http://testserver"
ERROR_KEYS = {"statusCode", "message", "error"}
# The API logs every unhandled exception here before answering 500 (entrypoints/api/errors.py).
ERROR_LOG = logging.getLogger("keyautomat.entrypoints.api.errors")


def budget(name: str, default: int) -> int:
    """A case budget: ``make test`` runs the defaults, ``make fuzz`` raises them by environment."""
    return int(os.environ.get(name, default))


# One seed for both fuzzers: the same cases every run, other cases with ``make fuzz FUZZ_SEED=n``.
SEED = budget("KEYAUTOMAT_FUZZ_SEED", 11)


def engines() -> list[str]:
    """Engines the fuzz runs on: SQLite in ``make test``, both in ``make fuzz``."""
    return os.environ.get("KEYAUTOMAT_FUZZ_ENGINES", "sqlite").split(",")


class ServerErrors(logging.Handler):
    """Collects the exceptions the API's last-resort handler logs, one request at a time."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            frames = traceback.extract_tb(exc.__traceback__)
            ours = [f for f in frames if "/src/keyautomat/" in f.filename]
            where = ""
            if ours:
                where = f" at {ours[-1].filename.split('/src/')[-1]}:{ours[-1].lineno}"
            if frames and frames[-1] not in ours:
                last = frames[-1]
                where += f" (raised in {last.filename.split('site-packages/')[-1]}:{last.lineno})"
            message = " ".join(str(exc).split())[:500]
            self.seen.append(f"{type(exc).__name__}{where}: {message}")


@dataclass
class Exchange:
    method: str
    url: str
    content: bytes
    status: int
    body: Any
    text: str
    exceptions: list[str]


class Sender:
    """Signs and sends prepared requests as one service account; records server exceptions."""

    def __init__(self, http: TestClient, account_id: str, private_key: str) -> None:
        self.http = http
        self.account_id = account_id
        self.private_key = private_key
        self._last_timestamp = 0
        self.errors = ServerErrors()

    def __enter__(self) -> Sender:
        ERROR_LOG.addHandler(self.errors)
        return self

    def __exit__(self, *exc_info: object) -> None:
        ERROR_LOG.removeHandler(self.errors)

    def _timestamp(self) -> int:
        # Identical generated requests in one millisecond must not look like replays.
        self._last_timestamp = max(time.time_ns() // 1_000_000, self._last_timestamp + 1)
        return self._last_timestamp

    def send(
        self,
        method: str,
        url: str,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Exchange:
        request = self.http.build_request(method, url, content=content or None, headers=headers)
        request.headers.update(
            signature_headers(
                method=request.method,
                url=str(request.url),
                body=request.content,
                service_account_id=self.account_id,
                private_key_pem=self.private_key,
                timestamp_ms=self._timestamp(),
            )
        )
        self.errors.seen.clear()
        # A redirect is the answer under test; following it would re-send stale signatures.
        response = self.http.send(request, follow_redirects=False)
        return _exchange(request, response, list(self.errors.seen))

    def json(self, method: str, path: str, body: Any = None) -> Exchange:
        """Send ``body`` as JSON; ASCII escapes keep lone surrogates sendable (valid JSON)."""
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        return self.send(method, BASE + path, content, {"content-type": "application/json"})


def _exchange(
    request: httpx2.Request, response: httpx2.Response, exceptions: list[str]
) -> Exchange:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    return Exchange(
        request.method,
        str(request.url),
        request.content,
        response.status_code,
        body,
        response.text,
        exceptions,
    )


def problems(exchange: Exchange) -> list[str]:
    """What is wrong with one answer: a 5xx, or an error outside the one shape (gaps A1)."""
    found: list[str] = []
    status = exchange.status
    if status >= 500:
        found.append(f"answered {status}")
    if status >= 400:
        body = exchange.body
        if not isinstance(body, dict) or set(body) != ERROR_KEYS:
            found.append(
                f"error body is not {{statusCode, message, error}}: {exchange.text[:200]!r}"
            )
        elif body["statusCode"] != status or not isinstance(body["error"], str):
            found.append(f"error body disagrees with the status {status}: {exchange.text[:200]!r}")
        elif not isinstance(body["message"], str) and not (
            isinstance(body["message"], list) and all(isinstance(m, str) for m in body["message"])
        ):
            found.append(
                f"error message is neither text nor a list of texts: {exchange.text[:200]!r}"
            )
    if (
        status == 401
        and isinstance(exchange.body, dict)
        and exchange.body.get("message")
        in {
            "Invalid signature",
            "Replayed request",
        }
    ):
        # Not a server bug: the harness signed something else than it sent.
        found.append(f"the harness's own signature was refused: {exchange.body['message']}")
    return found


@dataclass
class Failure:
    operation: str
    what: str
    status: int
    problems: list[str]
    exceptions: list[str]
    answer: str

    def key(self) -> tuple[str, str, str]:
        """Distinct failures: one per operation, problem kind and exception site."""
        if self.exceptions:  # "Type at our/file.py:N (raised in lib.py:M): message"
            kind, _, site = self.exceptions[0].split(": ")[0].partition(" at ")
            return self.operation, kind, site
        return self.operation, self.problems[0][:40], ""

    def render(self) -> str:
        lines = [
            f"{self.operation}: {self.what}",
            f"    -> {self.status}: {'; '.join(self.problems)}",
        ]
        lines += [f"    raised {e}" for e in self.exceptions]
        if not self.exceptions:
            lines.append(f"    answer {self.answer[:200]!r}")
        return "\n".join(lines)


@dataclass
class Findings:
    """Failures of one run, kept distinct, with the case count for the report."""

    cases: int = 0
    failures: dict[tuple[str, str, str], Failure] = field(default_factory=dict)
    repeats: dict[tuple[str, str, str], int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)

    def record(
        self, operation: str, what: str, exchange: Exchange, extra: list[str] | None = None
    ) -> bool:
        """Count one case; keep it when ``exchange`` (or an ``extra`` check) found a problem."""
        self.cases += 1
        self.statuses[exchange.status] = self.statuses.get(exchange.status, 0) + 1
        found = problems(exchange) + (extra or [])
        if not found:
            return True
        failure = Failure(
            operation, what, exchange.status, found, exchange.exceptions, exchange.text
        )
        key = failure.key()
        self.repeats[key] = self.repeats.get(key, 0) + 1
        self.failures.setdefault(key, failure)
        return False

    def summary(self) -> str:
        histogram = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return f"{self.cases} cases ({histogram}), {len(self.failures)} distinct failures"

    def report(self) -> str:
        parts = [
            f"{len(self.failures)} distinct failures in {self.cases} cases "
            f"(first example of each; x = how often):"
        ]
        for key, failure in self.failures.items():
            parts.append(f"[x{self.repeats[key]}] {failure.render()}")
        return "\n".join(parts)


def describe(value: Any, limit: int = 160) -> str:
    """A short, printable form of a generated value (long strings shortened, escapes shown)."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def served_document(http: TestClient) -> dict[str, Any]:
    """The V2 and admin documents as one, every path absolute (server URL ``/``)."""
    merged: dict[str, Any] = {"paths": {}, "components": {}}
    for url in ("/v2/openapi.json", "/admin/openapi.json"):
        document = http.get(url).json()
        prefix = document["servers"][0]["url"]
        for key, value in document.items():
            merged.setdefault(key, value)
        for path, item in document["paths"].items():
            merged["paths"][prefix + path if path != "/" else prefix + "/"] = item
        for section, named in document["components"].items():
            into = merged["components"].setdefault(section, {})
            for name, value in named.items():
                assert into.setdefault(name, value) == value, f"{section} {name} differs"
    merged["servers"] = [{"url": "/"}]
    return merged


# --- the seeded world ------------------------------------------------------------------

LIST_PATHS = (
    "/v2/automats",
    "/v2/groups",
    "/v2/iloq/accessRights",
    "/v2/iloq/keycontracts",
    "/v2/mechanical/keys",
    "/v2/mechanical/keycontracts",
    "/admin/webhooks",
    "/admin/notifications",
)


@dataclass
class World:
    """Real resources for generated requests to hit: one of everything, owned by ``tenant``."""

    tenant: Tenant
    automat_id: str
    key30_id: str
    group_id: str
    iloq_contract_id: str
    mechanical_key_id: str
    mechanical_contract_id: str
    subscription_id: str
    spare_account_id: str
    spare_key_ids: list[str]
    online_automat_id: str = ""  # set by the ``online_automat`` fixture: a bound simulator

    def route(self, path: str) -> str:
        """``path`` with the seeded ids put back as ``{id}``: one name per operation."""
        for value in (
            self.online_automat_id or self.automat_id,
            self.automat_id,
            self.key30_id,
            self.group_id,
            self.iloq_contract_id,
            self.mechanical_contract_id,
            self.subscription_id,
            *self.spare_key_ids,
            self.mechanical_key_id,
        ):
            path = path.replace(f"/{value}", "/{id}")
        return path

    def path_values(self, path: str) -> dict[str, str]:
        """Path parameters naming seeded resources for ``path``, a template like /v2/groups/{id}."""
        ids = {
            "/v2/automats/": self.automat_id,
            "/v2/groups/": self.group_id,
            "/v2/iloq/keycontracts/": self.iloq_contract_id,
            "/v2/mechanical/keys/": self.mechanical_key_id,
            "/v2/mechanical/keycontracts/": self.mechanical_contract_id,
            "/v2/serviceAccounts/": self.spare_account_id,
            "/admin/organizationunits/": self.tenant.unit_id,
            "/admin/webhooks/": self.subscription_id,
            "/admin/mechanical/keycontracts/": self.mechanical_contract_id,
        }
        values: dict[str, str] = {}
        for prefix, value in ids.items():
            if path.startswith(prefix):
                values["id"] = value
        if "{key_id}" in path:
            values["key_id"] = self.mechanical_key_id
        return values


def seed_world(container: Container, http: TestClient) -> World:
    """A tenant with a stocked key20 in a group, a key30 with mechanical keys, a contract of
    each kind, a webhook subscription and a second service account (for DELETE to find)."""
    tenant = make_tenant(container, http, name="Fuzz Housing")
    automat_id, _keys = stocked_automat(container, tenant, keys=4, empty=2)
    group = tenant.api.post("/groups", {"name": "Fuzz group", "customerId": "fuzz-1", "type": 1})
    tenant.api.patch(f"/automats/{automat_id}", {"groups": [group["id"]]})
    mechanical = ["fuzz-key-1", "fuzz-key-2", "fuzz-key-3", "fuzz-key-4"]
    key30_id = device_keys(container, tenant, *mechanical)
    start, end = period()
    iloq = tenant.api.post(
        "/iloq/keycontracts",
        {
            "input": {
                "contractType": 1,
                "accessRightIds": ["fdef8481-98ad-42b8-b4b6-4eade261e281"],
                "numberOfKeys": 1,
                "keyAutomatId": automat_id,
                "start": start,
                "end": end,
            }
        },
    )
    contract = tenant.api.post(
        "/mechanical/keycontracts",
        {"start": start, "end": end, "contact": CONTACT, "keys": [{"id": mechanical[0]}]},
    )
    subscription = admin_client(tenant, http).post(
        "/admin/webhooks",
        {
            "name": "fuzz",
            "url": "http://127.0.0.1:9/hook",
            "organizationUnitId": tenant.unit_id,
            "eventTypes": ["contract-update"],
        },
    )

    def spare(session: Any) -> str:
        created = accounts.create_service_account(
            session,
            None,
            organization_unit_id=tenant.unit_id,
            name="spare",
            role=Role.INTEGRATION,
            now=container.clock.now(),
        )
        return created.account.id

    return World(
        tenant=tenant,
        automat_id=automat_id,
        key30_id=key30_id,
        group_id=group["id"],
        iloq_contract_id=iloq["id"],
        mechanical_key_id=mechanical[0],
        mechanical_contract_id=contract["id"],
        subscription_id=subscription["id"],
        spare_account_id=container.db.transaction(spare),
        spare_key_ids=mechanical[1:],
    )


def tolerant_client(container: Container) -> Iterator[TestClient]:
    """A test client that answers 500s instead of raising the server's exception."""
    from keyautomat.entrypoints.api.app import create_app

    with TestClient(create_app(container), base_url=BASE, raise_server_exceptions=False) as client:
        yield client


def lists_answer(sender: Sender) -> list[str]:
    """Every list GET must still answer 200 (a stored value must never poison a page)."""
    broken: list[str] = []
    for path in LIST_PATHS:
        got = sender.json("GET", f"{path}?limit=100")
        if got.status != 200:
            extra = f" ({got.exceptions[0]})" if got.exceptions else ""
            broken.append(f"GET {path} answered {got.status}{extra}")
    return broken
