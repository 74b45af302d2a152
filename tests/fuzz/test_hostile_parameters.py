"""Hostile values in every path and query parameter of the served OpenAPI document.

The document types most ids and pagination parameters as plain strings, so a
generator from the schema rarely tries the values that break a hand-written
parser: 30 digits, superscript or Arabic-Indic digits, NUL, an invalid UTF-8
sequence, 10,000 characters. Each case sets one parameter of one operation to
one such value (the other path parameters name seeded resources) and must get
a non-5xx answer in the one error shape. ``KEYAUTOMAT_FUZZ_PARAMS`` cases per
operation are sampled with the fixed seed in ``make test``; 0 (``make fuzz``)
sends all of them.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from tests.fuzz.harness import (
    BASE,
    SEED,
    Findings,
    Sender,
    World,
    budget,
    lists_answer,
    served_document,
)

PARAMS = budget("KEYAUTOMAT_FUZZ_PARAMS", 8)

HOSTILE: tuple[tuple[str, str], ...] = (
    ("30 digits", "9" * 30),
    ("2**70", str(2**70)),
    ("negative", "-1"),
    ("superscript two", "²"),
    ("Arabic-Indic digits", "١٢٣"),
    ("exponent", "1e3"),
    ("padded", " 1 "),
    ("NUL", "a\x00b"),
    ("lone surrogate", "x\ud800"),
    ("10,000 characters", "A" * 10_000),
    ("empty", ""),
    ("dots", ".."),
)


def _encoded(value: str) -> str:
    """Percent-encoded UTF-8; a lone surrogate becomes the invalid sequence %ED%A0%80."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _cases(document: dict[str, Any], world: World) -> list[tuple[str, str, str, str]]:
    """(operation, method, url, what) for every parameter of every operation and value."""
    cases: list[tuple[str, str, str, str]] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            parameters = [
                p for p in operation.get("parameters", []) if p["in"] in {"path", "query"}
            ]
            seeded = world.path_values(path)
            found = []
            for parameter in parameters:
                for name, value in HOSTILE:
                    url, query = path, ""
                    for other in parameters:
                        if other["in"] == "path" and other is not parameter:
                            url = url.replace(
                                f"{{{other['name']}}}", seeded.get(other["name"], "x")
                            )
                    if parameter["in"] == "path":
                        url = url.replace(f"{{{parameter['name']}}}", _encoded(value))
                    else:
                        query = f"?{parameter['name']}={_encoded(value)}"
                    what = f"{parameter['in']} {parameter['name']} = {name}"
                    found.append((f"{method.upper()} {path}", method.upper(), url + query, what))
            rng = random.Random(f"{SEED}{method}{path}")
            cases += found if PARAMS <= 0 or len(found) <= PARAMS else rng.sample(found, PARAMS)
    return cases


@pytest.mark.timeout(300 + 50 * (PARAMS or 100))
def test_a_hostile_path_or_query_parameter_gets_a_clean_refusal(
    http: TestClient, world: World, sender: Sender
) -> None:
    document = served_document(http)
    findings = Findings()
    for operation, method, url, what in _cases(document, world):
        body = b"{}" if method in {"POST", "PUT", "PATCH"} else b""
        headers = {"content-type": "application/json"} if body else {}
        findings.record(operation, what, sender.send(method, BASE + url, body, headers))
    broken_lists = lists_answer(sender)
    print(f"\nhostile parameters: {findings.summary()}")
    if findings.failures or broken_lists:
        pytest.fail("\n".join([findings.report(), *broken_lists]), pytrace=False)
