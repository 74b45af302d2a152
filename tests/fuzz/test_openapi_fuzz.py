"""Schemathesis against the served OpenAPI document (/v2 and /admin), every request signed.

Each operation gets ``KEYAUTOMAT_FUZZ_EXAMPLES`` generated cases (30 in ``make test``,
more in ``make fuzz``), a mix of schema-conforming and schema-violating ones, half of
them aimed at the seeded resources' ids. Generation has a fixed seed
(``KEYAUTOMAT_FUZZ_SEED``): the same cases every run. No case may get a 5xx or an
error outside the one shape, and every list still answers 200 after each operation.
Failures are collected over the whole run and reported distinct, so one run shows
every operation that breaks.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.generation.case import Case
from starlette.testclient import TestClient

from tests.fuzz.harness import (
    BASE,
    SEED,
    Findings,
    Sender,
    World,
    budget,
    describe,
    lists_answer,
    served_document,
)

EXAMPLES = budget("KEYAUTOMAT_FUZZ_EXAMPLES", 30)
# Destructive operations go last, so the others still find the seeded resources.
LAST = ("DELETE", "/uninstall", "/replace", "/rotate-secret")


def _order(operation: Any) -> tuple[bool, str]:
    label = f"{operation.method.upper()} {operation.path}"
    return any(mark in label for mark in LAST), label


def _wire(case: Case[Any]) -> tuple[str, str, bytes, dict[str, str]]:
    """The request schemathesis built, as final bytes: method, URL with query, body, headers."""
    kwargs = case.as_transport_kwargs(base_url=BASE)
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        params=kwargs.get("params"),
        headers=kwargs.get("headers"),
        json=kwargs.get("json"),
        data=kwargs.get("data"),
        cookies=kwargs.get("cookies"),
    ).prepare()
    body = prepared.body or b""
    content = body.encode() if isinstance(body, str) else bytes(body)  # type: ignore[arg-type]
    headers = {
        name: str(value)
        for name, value in prepared.headers.items()
        if name.lower() not in {"content-length", "host", "cookie"}
    }
    return str(prepared.method), str(prepared.url), content, headers


def _what(case: Case[Any]) -> str:
    parts = []
    for name, value in (
        ("path", case.path_parameters),
        ("query", case.query),
        ("body", None if case.body is NOT_SET else case.body),
    ):
        if value:
            parts.append(f"{name}={describe(value)}")
    return " ".join(parts) or "(no parameters)"


def _fuzz(operation: Any, world: World, sender: Sender, findings: Findings) -> None:
    """Send EXAMPLES generated cases of one operation; record, never raise, what fails."""
    label = f"{operation.method.upper()} {operation.path}"
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    known = world.path_values(operation.path)
    if known:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known))
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=known))

    @seed(SEED)
    @given(case=st.one_of(strategies))
    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case[Any]) -> None:
        method, url, content, headers = _wire(case)
        findings.record(label, _what(case), sender.send(method, url, content, headers))

    run()


@pytest.mark.timeout(120 + 20 * EXAMPLES)
def test_no_generated_request_gets_a_5xx_or_an_error_outside_the_one_shape(
    http: TestClient, world: World, sender: Sender
) -> None:
    document = served_document(http)
    schema = schemathesis.openapi.from_dict(document)
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),  # type: ignore[union-attr]
        key=_order,
    )
    findings = Findings()
    broken_lists: list[str] = []
    started = time.monotonic()
    for operation in operations:
        _fuzz(operation, world, sender, findings)
        label = f"{operation.method.upper()} {operation.path}"
        broken_lists += [f"after {label}: {b}" for b in lists_answer(sender)]
    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {len(operations)} operations in {elapsed:.1f} s: {findings.summary()}")
    if findings.failures or broken_lists:
        pytest.fail("\n".join([findings.report(), *broken_lists[:20]]), pytrace=False)
