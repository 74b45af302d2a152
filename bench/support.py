"""Pieces the bench scripts share: a free port, and a ``keyautomat serve`` to drive.

The benches run as scripts (``python bench/x.py``), so this module puts the project
root on ``sys.path``: they share the tests' process harness (tests/processes.py) and
service addresses (tests/services.py) instead of keeping copies.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.processes import CLI, free_port, wait_until_serving

__all__ = ["ROOT", "free_port", "serve"]

ROOT = Path(__file__).resolve().parents[1]


def serve(
    env: dict[str, str], *args: str, quiet: bool = False, start_timeout: float = 120.0
) -> tuple[subprocess.Popen[bytes], str]:
    """``keyautomat serve [args]`` on a free port, started and answering /healthz within
    ``start_timeout`` seconds (start-up takes far longer on a busy machine); returns the
    process and its base URL. ``quiet`` drops its stderr too."""
    port = free_port()
    server = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if quiet else None,
    )
    try:
        wait_until_serving(port, start_timeout)
    except AssertionError:
        server.kill()
        raise RuntimeError("the server did not start") from None
    return server, f"http://127.0.0.1:{port}"
