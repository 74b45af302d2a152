"""The ``keyautomat`` command as a newcomer runs it: init, serve --demo, call, bad settings."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from keyautomat.adapters.db import make_engine
from keyautomat.adapters.orm_console import console_users
from keyautomat.adapters.passwords import Passwords
from keyautomat.client import Client
from keyautomat.entrypoints.cli import main
from tests.processes import CLI, free_port, wait_until_serving


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KEYAUTOMAT_")}
    return {**clean, "KEYAUTOMAT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}


def test_init_creates_the_root_organization_and_an_admin_key(
    tmp_path: Path, env: dict[str, str], database_url: str
) -> None:
    env = {**env, "KEYAUTOMAT_DATABASE_URL": database_url}
    result = run_cli(["init", "--org-name", "Acme", "--key-out", "keys/admin.pem"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert set(info) == {"organizationUnitId", "serviceAccountId", "privateKeyFile"}
    key_file = Path(info["privateKeyFile"])
    assert key_file == (tmp_path / "keys" / "admin.pem").resolve()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")


def _signs_in(database_url: str, email: str, password: str) -> bool:
    """Whether ``password`` is the stored password of the console user ``email``."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                select(console_users.c.password_hash).where(
                    console_users.c.email_key == email.lower()
                )
            ).scalar()
    finally:
        engine.dispose()
    return Passwords().verify(stored, password)


def test_init_with_an_admin_email_creates_the_first_console_admin_and_prints_its_password_once(
    tmp_path: Path, env: dict[str, str]
) -> None:
    argv = ["init", "--org-name", "Acme", "--key-out", "a.pem", "--admin-email", "Anna@Acme.fi"]
    result = run_cli(argv, tmp_path, env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["consoleUser"] == "Anna@Acme.fi"
    assert len(info["consolePassword"]) >= 20
    assert _signs_in(env["KEYAUTOMAT_DATABASE_URL"], "anna@acme.fi", info["consolePassword"])
    assert info["consolePassword"] not in (tmp_path / "cli.db").read_bytes().decode("latin-1")


def test_init_with_an_email_that_is_no_email_exits_2_naming_the_option_before_anything_runs(
    tmp_path: Path, env: dict[str, str]
) -> None:
    argv = ["init", "--org-name", "Acme", "--key-out", "a.pem", "--admin-email", "anna"]
    result = run_cli(argv, tmp_path, env)
    assert result.returncode == 2
    assert "argument --admin-email: must be an email address" in result.stderr
    assert not list(tmp_path.iterdir())


def test_user_add_prints_one_line_with_a_password_that_signs_in_and_reset_replaces_it(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["init", "--org-name", "Acme", "--key-out", "a.pem"]) == 0
    unit_id = json.loads(capsys.readouterr().out)["organizationUnitId"]
    add = ["user", "add", "--email", "bob@acme.fi", "--organization-unit", unit_id]
    assert main([*add, "--role", "operator"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    added = json.loads(lines[0])
    assert (added["email"], added["organizationUnitId"], added["role"]) == (
        "bob@acme.fi",
        unit_id,
        "operator",
    )
    database = env["KEYAUTOMAT_DATABASE_URL"]
    assert _signs_in(database, "bob@acme.fi", added["password"])
    # One login per email, whatever its case; a unit that does not exist is named.
    assert main(["user", "add", "--email", "BOB@acme.fi", "--organization-unit", unit_id]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["user", "add", "--email", "eve@acme.fi", "--organization-unit", "nope"]) == 2
    assert "Organization unit not found" in capsys.readouterr().err
    assert main(["user", "reset-password", "--email", "Bob@Acme.fi"]) == 0
    reset = json.loads(capsys.readouterr().out)
    assert reset["consoleUserId"] == added["consoleUserId"]
    assert _signs_in(database, "bob@acme.fi", reset["password"])
    assert not _signs_in(database, "bob@acme.fi", added["password"])
    assert main(["user", "reset-password", "--email", "nobody@acme.fi"]) == 2
    assert "Console user not found" in capsys.readouterr().err


def test_invalid_settings_stop_the_command_with_a_message_naming_the_setting(
    tmp_path: Path, env: dict[str, str]
) -> None:
    bad = {**env, "KEYAUTOMAT_DATABASE_URL": "mysql://nope", "KEYAUTOMAT_PUBLIC_URL": "keys"}
    result = run_cli(["migrate"], tmp_path, bad)
    assert result.returncode == 2
    assert "KEYAUTOMAT_DATABASE_URL" in result.stderr
    assert "KEYAUTOMAT_PUBLIC_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def demo_server(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[dict[str, str], Path]]:
    port = free_port()
    with subprocess.Popen(
        [*CLI, "serve", "--demo", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            wait_until_serving(port)
            yield info, tmp_path
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_serve_demo_prints_how_to_call_it_and_the_printed_call_works(
    demo_server: tuple[dict[str, str], Path], env: dict[str, str]
) -> None:
    info, cwd = demo_server
    assert set(info) == {
        "serviceAccountId",
        "organizationUnitId",
        "privateKeyFile",
        "baseUrl",
        "consoleUrl",
        "consoleUser",
        "consolePassword",
    }
    assert info["baseUrl"].startswith("http://127.0.0.1:")
    assert info["baseUrl"].endswith("/v2")
    assert info["consoleUrl"] == info["baseUrl"].removesuffix("v2") + "console/"
    assert _signs_in(env["KEYAUTOMAT_DATABASE_URL"], info["consoleUser"], info["consolePassword"])
    with Client.from_key_file(
        info["baseUrl"], info["serviceAccountId"], info["privateKeyFile"]
    ) as client:
        automats = client.get("/automats")["data"]
        groups = client.get("/groups?search=helsinki")["data"]
        # The demo key30's simulator holds the registered demo mechanical keys.
        key30 = next(a for a in automats if a["name"] == "Harbour office")
        deadline = time.monotonic() + 20
        while True:
            keys = client.get("/mechanical/keys?limit=100&selectedStorage=1")["data"]
            if keys and all(k["storage"] == {"automatId": key30["id"]} for k in keys):
                break
            assert time.monotonic() < deadline, keys
            time.sleep(0.2)
    assert keys[0]["id"] == "room-101-key"
    assert [a["name"] for a in automats][:2] == ["Mainstreet 1", "Mainstreet 1"]
    assert [g["name"] for g in groups] == ["Helsinki center"]
    # The README's example call, from the same folder.
    result = run_cli(["call", "GET", "/automats"], cwd, env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"][0]["id"] == automats[0]["id"]


def test_serving_the_demo_again_keeps_the_data_and_the_key(
    tmp_path: Path, env: dict[str, str]
) -> None:
    infos = []
    for _ in range(2):
        port = free_port()
        with subprocess.Popen(
            [*CLI, "serve", "--demo", "--port", str(port), "--log-level", "warning"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            infos.append(json.loads(proc.stdout.readline()))
            wait_until_serving(port)
            proc.terminate()
            proc.wait(timeout=20)
    assert infos[0]["serviceAccountId"] == infos[1]["serviceAccountId"]
    assert infos[0]["organizationUnitId"] == infos[1]["organizationUnitId"]
    # The console login printed last time still signs in: a restart keeps the browser's.
    assert infos[0]["consolePassword"] == infos[1]["consolePassword"]
    info_file = tmp_path / "demo-service-account.json"
    assert stat.S_IMODE(info_file.stat().st_mode) == 0o600


def test_ctrl_c_stops_serve_with_status_130_and_no_traceback(
    tmp_path: Path, env: dict[str, str]
) -> None:
    port = free_port()
    with subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        wait_until_serving(port)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "Traceback" not in stderr


def test_init_refuses_to_overwrite_an_existing_key_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    key = tmp_path / "admin.pem"
    key.write_text("the only copy of another key")
    result = run_cli(["init", "--org-name", "Acme", "--key-out", str(key)], tmp_path, env)
    assert result.returncode == 2
    assert "refusing to overwrite" in result.stderr
    assert key.read_text() == "the only copy of another key"


def test_init_with_an_org_name_that_is_not_utf8_exits_2_naming_the_option_and_leaves_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = subprocess.run(
        [*CLI, "init", "--org-name", b"\xff", "--key-out", "admin.pem"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--org-name" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "admin.pem").exists()
    assert not (tmp_path / "cli.db").exists()  # refused before any side effect
    # ...so a rerun with a good name is not refused.
    result = run_cli(["init", "--org-name", "Acme", "--key-out", "admin.pem"], tmp_path, env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (
            ["init", "--org-name", "Acme", "--customer-id", "c\x00", "--key-out", "k"],
            "--customer-id",
        ),
        (["init", "--org-name", "Acme", "--key-out", "k\udcff"], "--key-out"),
        (["simulate", "--broker", "mqtt://127.0.0.1:1", "--hw-id", "\udcff"], "--hw-id"),
        (["simulate", "--broker", "mqtt://127.0.0.1:1", "--client-id", "\udcff"], "--client-id"),
        (["serve", "--host", "\x00"], "--host"),
        (["call", "GET", "/automats\x00"], "path"),
    ],
)
def test_every_text_argument_of_every_command_meets_the_text_rules_before_anything_runs(
    argv: list[str],
    option: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"argument {option}: must not contain" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_init_that_fails_after_reserving_the_key_file_removes_it_so_a_rerun_works(
    tmp_path: Path, env: dict[str, str]
) -> None:
    bad = {**env, "KEYAUTOMAT_PUBLIC_URL": "keys"}
    result = run_cli(["init", "--org-name", "Acme", "--key-out", "admin.pem"], tmp_path, bad)
    assert result.returncode == 2
    assert "KEYAUTOMAT_PUBLIC_URL" in result.stderr
    assert not (tmp_path / "admin.pem").exists()
    result = run_cli(["init", "--org-name", "Acme", "--key-out", "admin.pem"], tmp_path, env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [["gateway"], ["serve", "--no-gateway"]])
def test_running_the_gateway_apart_on_sqlite_exits_2_saying_it_needs_postgresql(
    tmp_path: Path, env: dict[str, str], command: list[str]
) -> None:
    result = run_cli(command, tmp_path, env)
    assert result.returncode == 2
    assert "needs PostgreSQL (KEYAUTOMAT_DATABASE_URL)" in result.stderr
    assert not (tmp_path / "cli.db").exists()


@pytest.mark.parametrize("command", [["gateway"], ["serve", "--demo", "--no-gateway"]])
def test_talking_to_devices_apart_from_the_gateway_without_a_broker_exits_2_saying_so(
    tmp_path: Path, env: dict[str, str], command: list[str]
) -> None:
    postgres = {**env, "KEYAUTOMAT_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"}
    result = run_cli(command, tmp_path, postgres)
    assert result.returncode == 2
    assert "needs an MQTT broker (KEYAUTOMAT_MQTT_URL)" in result.stderr
