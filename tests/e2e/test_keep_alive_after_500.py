"""A real uvicorn server on a loopback port: after a 500 the keep-alive connection still
serves the next request (docs/api.md, "The edge")."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from keyautomat.bootstrap import Container
from keyautomat.entrypoints.api.app import create_app
from keyautomat.entrypoints.api.errors import error_body
from tests.processes import free_port


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    # No database work happens here: one engine is enough.
    path = tmp_path / "keyautomat.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["httptools", "h11"])
def base_url(request: pytest.FixtureRequest, container: Container) -> Iterator[str]:
    app = create_app(container)

    @app.api_route("/test-only/boom", methods=["GET", "POST"], include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("a fault of ours, for the test")

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=request.param, lifespan="off", log_level="critical"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_request_after_a_500_succeeds_on_the_same_keep_alive_connection(
    base_url: str,
) -> None:
    with httpx.Client(base_url=base_url, limits=httpx.Limits(max_connections=1)) as client:
        for _ in range(10):
            failed = client.request("POST", "/test-only/boom", content=b'{"unread": true}')
            assert failed.status_code == 500
            assert failed.json() == error_body(500, "Internal server error")
            assert failed.headers.get("connection") != "close"
            connection = failed.extensions["network_stream"]
            after = client.get("/healthz")
            assert after.status_code == 200
            assert after.extensions["network_stream"] is connection
