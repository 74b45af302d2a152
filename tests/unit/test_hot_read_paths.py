"""Which requests the hot-read path takes (entrypoints/api/hot_reads.py): the three reads in
their plainest form only; every other shape is left to FastAPI's router."""

from __future__ import annotations

from typing import Any

import pytest

from keyautomat.entrypoints.api.hot_reads import HotRead, hot_read


def scope(
    target: str, method: str = "GET", raw_path: bytes | None = None, root_path: str = ""
) -> dict[str, Any]:
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode() if raw_path is None else raw_path,
        "root_path": root_path,
        "query_string": query.encode(),
    }


@pytest.mark.parametrize(
    ("target", "read"),
    [
        ("/v2/", HotRead("root")),
        ("/v2/automats", HotRead("page")),
        ("/v2/automats?limit=100", HotRead("page", limit="100")),
        ("/v2/automats?after=20&limit=10", HotRead("page", after="20", limit="10")),
        ("/v2/automats?limit=abc", HotRead("page", limit="abc")),
        ("/v2/automats?limit=", HotRead("page", limit="")),
        ("/v2/automats?limit", HotRead("page", limit="")),
        ("/v2/automats?limit=%31", HotRead("page", limit="1")),
        ("/v2/automats/000042", HotRead("one", automat_id="000042")),
        ("/v2/automats/install", HotRead("one", automat_id="install")),
    ],
)
def test_the_plain_forms_of_the_three_reads_are_taken(target: str, read: HotRead) -> None:
    assert hot_read(scope(target)) == read


@pytest.mark.parametrize(
    "target",
    [
        "/v2",
        "/v2/automats/",
        "/v2/automats/000042/",
        "/v2/automats/000042/lockers",
        "/v2//automats",
        "/v2/automats/a/b",
        "/v2/groups",
        "/v2/openapi.json",
        "/admin/automats",
        "/v2/?x=1",
        "/v2/automats/000042?x=1",
        "/v2/automats?limit=1&limit=2",
        "/v2/automats?limit=1&foo=bar",
        "/v2/automats?LIMIT=1",
    ],
)
def test_other_paths_and_queries_are_left_to_fastapi(target: str) -> None:
    assert hot_read(scope(target)) is None


@pytest.mark.parametrize("method", ["HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "get"])
def test_other_methods_are_left_to_fastapi(method: str) -> None:
    assert hot_read(scope("/v2/automats/000042", method)) is None


def test_an_escaped_or_non_ascii_path_is_left_to_fastapi() -> None:
    assert hot_read(scope("/v2/automats/000042", raw_path=b"/v2/automats/00004%32")) is None
    assert hot_read(scope("/v2/automats/\u00e4", raw_path=b"/v2/automats/%C3%A4")) is None


def test_a_request_under_a_root_path_is_left_to_fastapi() -> None:
    assert hot_read(scope("/v2/", root_path="/api")) is None


def test_a_scope_without_a_raw_path_is_read_by_its_path() -> None:
    plain = scope("/v2/automats/000042")
    del plain["raw_path"]
    assert hot_read(plain) == HotRead("one", automat_id="000042")
