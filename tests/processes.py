"""keyautomat as separate processes, for tests and benches: ``python -m keyautomat.entrypoints.cli
<command>`` started with a given environment, waited for until ready, stopped with SIGTERM,
restarted, and never left behind.

    with Processes(tmp_path / "processes", settings_env(settings)) as procs:
        api = procs.serve("--no-worker", "--no-gateway")   # answers /healthz on return
        procs.worker()                                     # has said it is delivering
        api.restart()                                      # same port, same arguments
        ...                                                # every process stopped here

Each process writes its stdout and stderr to ``<workdir>/<name>.out`` and ``.err``
(appended across restarts), so nothing blocks on a full pipe and a failure can show
what the process said (``output()``). Leaving the ``with`` block, passed or failed,
stops every process (SIGTERM, then SIGKILL after a grace period). On Linux each
process also gets SIGTERM from the kernel when the thread that started it dies, so
not even a killed test run leaves servers behind: start processes from the main
thread (or one that outlives them), not from a short-lived worker thread.

No pytest here: the benches use it too (bench/support.py puts the project root on
``sys.path``). The test fixture is ``processes`` in tests/e2e/conftest.py.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from keyautomat.config import Settings
from tests.services import simulator_client_id

CLI = (sys.executable, "-m", "keyautomat.entrypoints.cli")

Ready = Callable[["KeyautomatProcess"], bool]
"""Whether a started process is ready for use (polled until true)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_serving(port: int, timeout: float = 30.0) -> None:
    """Until something answers ``GET /healthz`` on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout
    while not answers_health(port):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing serves on port {port}")
        time.sleep(0.05)


def answers_health(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except httpx.TransportError:
        return False
    return True


def clean_env() -> dict[str, str]:
    """This process's environment without any ``KEYAUTOMAT_`` setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTOMAT_")}


def settings_env(settings: Settings, **more: str) -> dict[str, str]:
    """The environment that gives a process ``settings`` (what a test's container runs with:
    the same database, secret key, broker and topic prefix), plus ``more`` variables.

    The MQTT client id is left out: each process derives its own from its pid, and
    processes sharing one would make the broker drop one connection for the other.
    """
    env = clean_env()
    for name, value in settings.model_dump().items():
        if value is None or name == "mqtt_client_id":
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[f"KEYAUTOMAT_{name.upper()}"] = text
    env.update(more)
    return env


def serving(proc: KeyautomatProcess) -> bool:
    """Ready when the process's port answers ``/healthz`` (``serve``)."""
    assert proc.port is not None, f"{proc.name} has no port"
    return answers_health(proc.port)


def prints(text: str) -> Ready:
    """Ready once the process has written ``text`` to its stdout or stderr."""
    return lambda proc: text in proc.output()


class ProcessFailed(AssertionError):
    """A process exited, or was not ready in time; the message ends with what it printed."""


# Looked up here, not in the child: between fork and exec the child must not load
# libraries (a lock another thread held at the fork would never be released there).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the parent's starting thread dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class KeyautomatProcess:
    """One ``keyautomat <command>`` process; ``start()`` again after ``stop()`` to restart."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        env: Mapping[str, str],
        workdir: Path,
        ready: Ready | None,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.workdir = workdir
        self.ready = ready
        self.port = port
        self.popen: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of a ``serve`` process."""
        assert self.port is not None, f"{self.name} has no port"
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The V2 base URL of a ``serve`` process, for ``keyautomat.client.Client``."""
        return f"{self.base_url}/v2"

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def start(self) -> KeyautomatProcess:
        """Launch the process (without waiting for it to be ready)."""
        assert not self.running, f"{self.name} is already running"
        self._close_logs()
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = (self.workdir / f"{self.name}.out").open("ab")
        err = (self.workdir / f"{self.name}.err").open("ab")
        self._logs = [out, err]
        self.popen = subprocess.Popen(
            [*CLI, *self.args],
            cwd=self.workdir,
            env=self._child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        return self

    def _child_env(self) -> dict[str, str]:
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        # Each start imports FastAPI, SQLAlchemy and the app: compiled once into
        # __pycache__ that is ~1.5 s of CPU, every time without it (a shell that sets
        # PYTHONDONTWRITEBYTECODE, as this machine's does, would pay it at every start).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def wait_ready(self, timeout: float = 60.0) -> KeyautomatProcess:
        """Until ``ready`` holds; ProcessFailed if the process exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while self.ready is not None and not self.ready(self):
            if not self.running:
                raise ProcessFailed(
                    f"{self.name} exited with {self.returncode} before it was ready" + self._tail()
                )
            if time.monotonic() > deadline:
                late = f"{self.name} was not ready within {timeout:g} s"
                raise ProcessFailed(late + self._tail())
            time.sleep(0.05)
        return self

    def terminate(self) -> None:
        """Send SIGTERM (a graceful stop) without waiting."""
        if self.running:
            assert self.popen is not None
            self.popen.terminate()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, and SIGKILL if it has not exited within ``timeout``; its exit status."""
        if self.popen is None:
            return None
        self.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._close_logs()
        return self.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.popen is None:
            return None
        if self.running:
            self.popen.kill()
        self.popen.wait()
        self._close_logs()
        return self.popen.returncode

    def wait(self, timeout: float = 60.0) -> int:
        """Until the process exits by itself (``migrate``, ``init``); its exit status."""
        assert self.popen is not None, f"{self.name} was never started"
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            still = f"{self.name} still runs after {timeout:g} s"
            raise ProcessFailed(still + self._tail()) from None
        self._close_logs()
        return code

    def restart(self, timeout: float = 60.0) -> KeyautomatProcess:
        """Stop (SIGTERM), start again with the same arguments and port, and wait until ready."""
        self.stop()
        return self.start().wait_ready(timeout)

    def stdout(self) -> str:
        return self._read("out")

    def stderr(self) -> str:
        return self._read("err")

    def output(self) -> str:
        """Everything the process printed so far, stdout then stderr (all its runs)."""
        return self.stdout() + self.stderr()

    def _read(self, stream: str) -> str:
        path = self.workdir / f"{self.name}.{stream}"
        return path.read_text(errors="replace") if path.exists() else ""

    def _tail(self, chars: int = 4000) -> str:
        return f"\n--- {self.name} printed ---\n{self.output()[-chars:]}"

    def _close_logs(self) -> None:
        for log in self._logs:
            log.close()
        self._logs = []

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<{self.name} {' '.join(self.args[:2])} {state}>"


def all_ready(procs: Iterable[KeyautomatProcess], timeout: float = 60.0) -> list[KeyautomatProcess]:
    """Wait until each of ``procs`` (started with ``wait=False``, to start together) is ready."""
    return [proc.wait_ready(timeout) for proc in procs]


class Processes:
    """The keyautomat processes of one test or bench run, all stopped when it ends.

    ``env`` is every process's environment (``settings_env(settings)``); a start may
    add variables of its own. ``wait=False`` launches without waiting, to start
    several together and then wait for them with ``all_ready()``.
    """

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.started: list[KeyautomatProcess] = []

    def start(
        self,
        *args: str,
        name: str | None = None,
        ready: Ready | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        timeout: float = 60.0,
    ) -> KeyautomatProcess:
        """``keyautomat <args>``; with ``ready``, waits until it holds (unless ``wait=False``)."""
        count = sum(p.args[:1] == list(args[:1]) for p in self.started) + 1
        proc = KeyautomatProcess(
            name or f"{args[0]}-{count}",
            list(args),
            env={**self.env, **(env or {})},
            workdir=self.workdir,
            ready=ready,
            port=port,
        )
        self.started.append(proc)
        proc.start()
        if wait:
            proc.wait_ready(timeout)
        return proc

    def serve(self, *args: str, **options: Any) -> KeyautomatProcess:
        """``keyautomat serve <args>`` on a free port of 127.0.0.1, ready when it answers
        ``/healthz``. Logs at warning unless ``args`` say otherwise."""
        port = free_port()
        argv = ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        return self.start(*argv, *args, ready=serving, port=port, **options)

    def worker(self, *args: str, **options: Any) -> KeyautomatProcess:
        """``keyautomat worker <args>``, ready once it says what it delivers."""
        return self.start("worker", *args, ready=prints(" delivering "), **options)

    def gateway(self, *args: str, **options: Any) -> KeyautomatProcess:
        """``keyautomat gateway``, ready once it serves devices (it has subscribed)."""
        return self.start("gateway", *args, ready=prints(" serving devices"), **options)

    def simulate(self, *args: str, **options: Any) -> KeyautomatProcess:
        """``keyautomat simulate <args>`` (give --broker, --prefix, ...), ready once a gateway
        has bound it (its ``{"event":"bound"}`` line), with a client id of this test
        process unless ``args`` give one."""
        if "--client-id" not in args:
            hw_id = args[args.index("--hw-id") + 1] if "--hw-id" in args else "SIM"
            args = (*args, "--client-id", simulator_client_id(f"{hw_id}-{uuid.uuid4().hex[:6]}"))
        return self.start("simulate", *args, ready=prints('"event":"bound"'), **options)

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM to every running process at once, then wait for each (SIGKILL at timeout)."""
        for proc in self.started:
            proc.terminate()
        for proc in self.started:
            proc.stop(timeout)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()


def sender_of_one_signed_request(
    public_url: str, path: str, body: str, account_id: str, private_key: str
) -> Callable[[KeyautomatProcess], tuple[int, Any]]:
    """One request, signed once for ``public_url`` (as behind a proxy), that can then be
    sent, unchanged, to any API process: its status and JSON answer each time."""
    from keyautomat.client import signature_headers

    headers = signature_headers(
        method="POST",
        url=f"{public_url}{path}",
        body=body,
        service_account_id=account_id,
        private_key_pem=private_key,
    )

    def send(api: KeyautomatProcess) -> tuple[int, Any]:
        response = httpx.post(
            f"{api.api_url}{path}",
            content=body,
            headers={"content-type": "application/json", **headers},
        )
        return response.status_code, response.json()

    return send
