"""The iLOQ emulator's HTTP face as its own server on loopback, for the S5 client's tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from keyautomat.bootstrap import Container, bootstrap
from keyautomat.config import Settings
from keyautomat.entrypoints.iloq_emulator_http import EmulatorState, create_emulator_app


class EmulatorServer:
    def __init__(self, url: str, state: EmulatorState) -> None:
        self.url = url
        self.state = state


def serve_in_thread(container: Container) -> Iterator[EmulatorServer]:
    """uvicorn on 127.0.0.1 with a free port, in a thread; stopped when the test ends."""
    app = create_emulator_app(container)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the emulator server did not start")
        time.sleep(0.01)
    try:
        yield EmulatorServer(f"http://127.0.0.1:{port}", app.state.emulator)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def serve_emulator(settings: Settings) -> Iterator[EmulatorServer]:
    """The emulator as its own service: its own container on the same database."""
    server_container = bootstrap(settings)
    try:
        yield from serve_in_thread(server_container)
    finally:
        server_container.close()
