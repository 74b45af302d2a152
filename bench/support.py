"""Pieces the bench scripts share: a free port, and a ``keyautomat serve`` to drive."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(
    env: dict[str, str], *args: str, quiet: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """``keyautomat serve [args]`` on a free port, started and answering /healthz; returns the
    process and its base URL. ``quiet`` drops its stderr too."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "keyautomat.entrypoints.cli", "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if quiet else None,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return server, base
        except httpx.TransportError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("the server did not start")
