"""The ``keyautomat`` command: init, migrate, serve, worker, gateway, call, simulate,
device-test, user, backup, restore."""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from keyautomat.bootstrap import Container, bootstrap
from keyautomat.config import Settings, SettingsError, load_settings
from keyautomat.devicetest.cli import add_arguments as add_device_test_arguments
from keyautomat.domain.text import text_problem
from keyautomat.entrypoints.backups import add_backup_commands
from keyautomat.entrypoints.printing import print_json_line
from keyautomat.logs import configure_from_settings
from keyautomat.simulator.automat import FAULTS
from keyautomat.simulator.cli import person_seconds_arg

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from keyautomat.entrypoints.demo import DemoAutomat

DEMO_KEY_FILE = Path("demo-service-account.pem")
DEMO_INFO_FILE = Path("demo-service-account.json")
DEMO_SIMULATOR_DIR = Path("demo-automats")


def _text(value: str) -> str:
    """The type of every text argument (``build_parser`` makes it the default): the text
    rules of every edge (domain/text.py), checked before any side effect. Bytes that are
    not UTF-8 arrive as lone surrogates. A refusal makes argparse exit with status 2 and
    a message naming the option."""
    problem = text_problem(value)
    if problem is not None:
        hint = " (not valid UTF-8?)" if "surrogate" in problem else ""
        raise argparse.ArgumentTypeError(f"{problem}{hint}")
    return value


def _write_private_file(path: Path, pem: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(pem)


def _fingerprint_of_key_file(path: Path) -> str | None:
    """SHA-256 of the public half of a stored private key (matches the accounts table)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _container() -> Container:
    """Migrate, build the container (which checks the secret key against the database), and
    seal the signature links an older version queued in clear."""
    from keyautomat.adapters.migrate import upgrade
    from keyautomat.service_layer.notifications import seal_stored_links_at_start

    settings = load_settings()
    upgrade(settings.database_url)
    container = bootstrap(settings)
    seal_stored_links_at_start(container.db)
    return container


def cmd_migrate(_args: argparse.Namespace) -> int:
    from keyautomat.adapters.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    print(f"database at head: {settings.database_url.split('@')[-1]}", file=sys.stderr)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    key_out = Path(args.key_out)
    key_out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Reserve the file first: the only copy of a root admin's private key
        # must never overwrite another one, and a key that cannot be written
        # must not leave an account behind.
        fd = os.open(key_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{key_out} exists; refusing to overwrite a private key", file=sys.stderr)
        return 2
    # Hashed before the transaction: Argon2 takes a moment, the write lock need not wait.
    console_admin = _new_console_password() if args.admin_email else None
    try:
        with os.fdopen(fd, "w") as handle:
            unit_id, account_id = _init_root(args, handle, console_admin)
    except BaseException:
        # Whatever failed (settings, database, the transaction), the reserved file
        # goes: an empty or orphaned key file would make every rerun refuse.
        key_out.unlink(missing_ok=True)
        raise
    printed = {
        "organizationUnitId": unit_id,
        "serviceAccountId": account_id,
        "privateKeyFile": str(key_out.resolve()),
    }
    if console_admin is not None:
        # The only time the password is shown: only its hash is stored.
        printed |= {"consoleUser": args.admin_email, "consolePassword": console_admin[0]}
    else:
        print(
            "no console admin: give --admin-email, or add one with `keyautomat user add`",
            file=sys.stderr,
        )
    print_json_line(printed)
    return 0


def _new_console_password() -> tuple[str, str]:
    """A generated console password and its hash."""
    from keyautomat.adapters.passwords import Passwords
    from keyautomat.domain.console import generate_password

    password = generate_password()
    return password, Passwords().hash(password)


def _init_root(
    args: argparse.Namespace, handle: TextIO, console_admin: tuple[str, str] | None
) -> tuple[str, str]:
    from keyautomat.domain.console import ConsoleRole
    from keyautomat.domain.model import OrgUnitType, Role
    from keyautomat.service_layer import accounts, console_users

    container = _container()
    now = container.clock.now()

    def work(session: Any) -> tuple[str, str]:
        unit = accounts.create_organization_unit(
            session,
            None,
            name=args.org_name,
            customer_id=args.customer_id,
            type=OrgUnitType.ORGANIZATION,
            parent_id=None,
            iloq_api_user=None,
            secrets=container.secrets,
            now=now,
        )
        created = accounts.create_service_account(
            session, None, organization_unit_id=unit.id, name="admin", role=Role.ADMIN, now=now
        )
        if console_admin is not None:
            console_users.create_user(
                session,
                None,
                email=args.admin_email,
                organization_unit_id=unit.id,
                role=ConsoleRole.ADMIN,
                password_hash=console_admin[1],
                now=now,
            )
        handle.write(created.private_key_pem)  # written before the transaction commits
        handle.flush()
        return unit.id, created.account.id

    try:
        return container.db.transaction(work)
    finally:
        container.close()


def _freeze_startup_objects() -> None:
    """Leave what start-up built (modules, routes, the schema) out of every later collection.

    A full collection walks every tracked object; with start-up's hundreds of
    thousands among them, one took 40-90 ms of a serving process (measured with
    gc.callbacks under bench/contracts.py), a pause every request in flight waits
    for. Frozen objects are never collected, which is right for what lives as
    long as the process anyway.
    """
    gc.collect()
    gc.freeze()


def split_roles_problem(settings: Settings, role: str, *, devices_here: bool) -> str | None:
    """Why the device gateway cannot run apart from the API here, or None when it can.

    Processes hear of each other's commits and route device commands through
    PostgreSQL's LISTEN/NOTIFY; SQLite reaches no other process. A process that talks
    to devices (a gateway, or the demo's simulated automats) needs a broker too: the
    in-process device link reaches nothing outside the process (docs/deployment.md).
    """
    if settings.is_sqlite:
        return (
            f"{role} needs PostgreSQL (KEYAUTOMAT_DATABASE_URL): on SQLite, run the API "
            "and the device gateway together in one `keyautomat serve`"
        )
    if devices_here and settings.mqtt_url is None:
        return (
            f"{role} needs an MQTT broker (KEYAUTOMAT_MQTT_URL): without one, devices can "
            "only reach a gateway inside the same process"
        )
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from keyautomat.entrypoints.api.app import create_app
    from keyautomat.entrypoints.demo import seed_demo

    if args.no_gateway:
        role = "serve --demo --no-gateway" if args.demo else "serve --no-gateway"
        problem = split_roles_problem(load_settings(), role, devices_here=args.demo)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
    configure_from_settings("serve", level=args.log_level)
    container = _container()
    base_url = (
        container.settings.public_bases[0]
        if container.settings.public_bases
        else f"http://{args.host}:{args.port}/v2"
    )
    if args.demo:
        access = container.db.transaction(
            lambda s: seed_demo(
                s,
                secrets=container.secrets,
                now=container.clock.now(),
                known_fingerprint=_fingerprint_of_key_file(DEMO_KEY_FILE),
            )
        )
        if access.private_key_pem is not None:
            _write_private_file(DEMO_KEY_FILE, access.private_key_pem)
        info = {
            "serviceAccountId": access.service_account_id,
            "organizationUnitId": access.organization_unit_id,
            "privateKeyFile": str(DEMO_KEY_FILE.resolve()),
            "baseUrl": base_url,
            **_demo_console_login(container, access.organization_unit_id, base_url),
        }
        # Mode 600: it holds the demo console password.
        _write_private_file(DEMO_INFO_FILE, json.dumps(info, indent=2) + "\n")
        print_json_line(info)
    background = []
    if args.demo:
        background.append(_demo_automats(container, access.organization_unit_id))
    app = create_app(
        container,
        run_worker=not args.no_worker,
        run_gateway=not args.no_gateway,
        background=background,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level or container.settings.log_level,
        # Our handler on the root logger writes uvicorn's records too (keyautomat/logs.py);
        # the edge middleware writes the access lines, with request ids.
        log_config=None,
        access_log=False,
        proxy_headers=container.settings.trust_forwarded_headers,
    )
    _freeze_startup_objects()
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        # uvicorn shuts down on Ctrl+C, then raises it again: a stop asked for, no traceback.
        return 130
    finally:
        container.close()
    return 0


def _demo_console_login(container: Container, unit_id: str, base_url: str) -> dict[str, str]:
    """``consoleUrl``, ``consoleUser`` and ``consolePassword`` of the demo (docs/console.md):
    the password printed last time is kept while it still signs in."""
    from keyautomat.adapters.passwords import Passwords
    from keyautomat.entrypoints.demo import DEMO_CONSOLE_EMAIL, demo_console_password

    known = None
    if DEMO_INFO_FILE.exists():
        with contextlib.suppress(ValueError, OSError):
            known = json.loads(DEMO_INFO_FILE.read_text()).get("consolePassword")
    password = container.db.transaction(
        lambda s: demo_console_password(
            s,
            unit_id,
            passwords=Passwords(),
            known_password=known if isinstance(known, str) else None,
            now=container.clock.now(),
        )
    )
    return {
        "consoleUrl": console_url(base_url),
        "consoleUser": DEMO_CONSOLE_EMAIL,
        "consolePassword": password,
    }


def console_url(base_url: str) -> str:
    """Where the console of the API at ``base_url`` (the V2 base clients sign) is."""
    if base_url.endswith("/v2"):
        return base_url.removesuffix("/v2") + "/console/"
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/console/"


def _email(value: str) -> str:
    """The type of ``--email`` options: an email a console user can have."""
    from keyautomat.domain.console import email_key
    from keyautomat.domain.errors import InvalidInput

    try:
        email_key(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("email: ")) from None
    return value.strip()


def cmd_user_add(args: argparse.Namespace) -> int:
    """A console user with a generated password, printed once as one JSON line."""
    from keyautomat.domain.console import ConsoleRole
    from keyautomat.domain.errors import DomainError
    from keyautomat.service_layer import console_users

    password, password_hash = _new_console_password()
    container = _container()
    try:
        user = container.db.transaction(
            lambda s: console_users.create_user(
                s,
                None,
                email=args.email,
                organization_unit_id=args.organization_unit,
                role=ConsoleRole(args.role),
                password_hash=password_hash,
                now=container.clock.now(),
            )
        )
    except DomainError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    finally:
        container.close()
    print_json_line(
        {
            "consoleUserId": user.id,
            "email": user.email,
            "organizationUnitId": user.organization_unit_id,
            "role": str(user.role),
            "password": password,
        }
    )
    return 0


def cmd_user_reset_password(args: argparse.Namespace) -> int:
    """A new generated password for a console user; every session of the user ends."""
    from keyautomat.domain.errors import DomainError
    from keyautomat.service_layer import console_users

    password, password_hash = _new_console_password()
    container = _container()
    try:
        user = container.db.transaction(
            lambda s: console_users.reset_password(
                s, args.email, password_hash, container.clock.now()
            )
        )
    except DomainError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    finally:
        container.close()
    print_json_line({"consoleUserId": user.id, "email": user.email, "password": password})
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from keyautomat.entrypoints.worker import OutboxWorker

    configure_from_settings("worker")
    container = _container()
    worker = OutboxWorker(
        container.db, container.dispatcher, container.clock, batch_size=args.batch_size
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"worker {worker.worker_id} delivering {container.dispatcher.kinds}", file=sys.stderr)
        try:
            await worker.run(stop)
        finally:
            await container.webhooks.aclose()

    try:
        _freeze_startup_objects()
        asyncio.run(main())
    finally:
        container.close()
    return 0


def cmd_gateway(_args: argparse.Namespace) -> int:
    """The device gateway alone: devices over the broker, commands routed from the API."""
    import asyncio
    import signal

    problem = split_roles_problem(load_settings(), "keyautomat gateway", devices_here=True)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    configure_from_settings("gateway")
    container = _container()
    gateway = container.devices

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await gateway.start()
        print(f"gateway {gateway.gateway_id} serving devices", file=sys.stderr, flush=True)
        try:
            await stop.wait()
        finally:
            await gateway.stop()
            await container.webhooks.aclose()

    try:
        _freeze_startup_objects()
        asyncio.run(main())
    finally:
        container.close()
    return 0


def _demo_automats(container: Container, unit_id: str) -> Callable[[], Coroutine[Any, Any, None]]:
    """Simulated automats for the demo organization, on the gateway's own link."""
    from keyautomat.entrypoints.demo import demo_automats, demo_iloq_stocks
    from keyautomat.service_layer.virtual_keypad import mark_simulated
    from keyautomat.simulator import SimKey
    from keyautomat.simulator.cli import run_demo_automats

    def simulated_here(session: Session) -> list[DemoAutomat]:
        # This process simulates them: their virtual keypads work (docs/console.md).
        found = demo_automats(session, unit_id)
        mark_simulated(session, [a.id for a in found])
        return found

    automats = container.db.transaction(simulated_here)
    link = container.device_link
    assert link is not None

    stocks = {
        a.id: [SimKey(k.id, k.name, rfid=k.rfid_hex or None) for k in a.mechanical_keys]
        for a in automats
        if a.mechanical_keys
    }
    # The key20 automats hold the registered demo iLOQ keys (short name on the tag).
    for automat_id, keys in demo_iloq_stocks(automats).items():
        stocks[automat_id] = [SimKey(k.id, k.name, rfid=k.name) for k in keys]

    async def run() -> None:
        await run_demo_automats(
            link,
            container.settings.mqtt_topic_prefix,
            [(a.id, a.product, a.installation_pincode) for a in automats],
            DEMO_SIMULATOR_DIR,
            stocks,
        )

    return run


def cmd_simulate(args: argparse.Namespace) -> int:
    from keyautomat.simulator.cli import main_simulate

    configure_from_settings("simulate")
    return main_simulate(args)


def cmd_device_test(args: argparse.Namespace) -> int:
    from keyautomat.devicetest.cli import main_device_test

    return main_device_test(args)


def cmd_call(args: argparse.Namespace) -> int:
    """Sign and send one request, printing the response; defaults come from the demo files."""
    from keyautomat.client import Client

    info: dict[str, str] = {}
    if DEMO_INFO_FILE.exists():
        info = json.loads(DEMO_INFO_FILE.read_text())
    base_url = args.base_url or info.get("baseUrl")
    account = args.account or info.get("serviceAccountId")
    key_file = args.key_file or info.get("privateKeyFile")
    if not (base_url and account and key_file):
        print(
            "need --base-url, --account and --key-file (or run serve --demo first)", file=sys.stderr
        )
        return 2
    body = json.loads(args.data) if args.data else None
    with Client.from_key_file(base_url, account, key_file) as client:
        response = client.request(args.method.upper(), args.path, body)
    print(f"HTTP {response.status_code}", file=sys.stderr)
    if response.content:
        try:
            print(json.dumps(response.json(), indent=2, ensure_ascii=False))
        except ValueError:
            print(response.text)
    return 0 if response.status_code < 400 else 1


def _add_user_commands(sub: Any) -> None:
    """``keyautomat user add`` and ``keyautomat user reset-password`` (docs/console.md)."""
    p = sub.add_parser("user", help="console users: add one, reset a password")
    users = p.add_subparsers(dest="user_command", required=True)
    u = users.add_parser("add", help="add a console user; prints its generated password once")
    u.add_argument("--email", required=True, type=_email)
    u.add_argument("--organization-unit", required=True, help="id of the user's unit")
    u.add_argument("--role", choices=["admin", "operator", "viewer"], default="viewer")
    u.set_defaults(func=cmd_user_add)
    u = users.add_parser(
        "reset-password", help="give a console user a new generated password; ends its sessions"
    )
    u.add_argument("--email", required=True, type=_email)
    u.set_defaults(func=cmd_user_reset_password)
    for command in users.choices.values():
        command.register("type", None, _text)


def _add_call_command(sub: Any) -> None:
    p = sub.add_parser("call", help="send one signed request, e.g. call GET /automats")
    p.add_argument("method")
    p.add_argument("path", help="path below the base URL, with its query string")
    p.add_argument("--data", help="JSON body")
    p.add_argument("--base-url")
    p.add_argument("--account")
    p.add_argument("--key-file")
    p.set_defaults(func=cmd_call)


def _add_simulate(sub: Any) -> None:
    """``keyautomat simulate``: one simulated automat on a broker."""
    p = sub.add_parser("simulate", help="run one simulated automat against an MQTT broker")
    p.add_argument("--broker", required=True, help="mqtt://host:port")
    p.add_argument("--automat", help="automat id it is meant for (its hwId defaults to SIM-<id>)")
    p.add_argument("--installation-pincode", help="binds the automat on first connection")
    p.add_argument("--lockers", type=int, default=30)
    p.add_argument("--product", choices=["key20", "key30"], default="key20")
    p.add_argument("--hw-id", help="hardware id (default SIM-<automat>)")
    p.add_argument(
        "--client-id",
        help="MQTT client id (default sim-<hwId>); each connection to a broker needs its own",
    )
    p.add_argument("--keys", type=int, help="keys to stock (default: half the lockers)")
    p.add_argument("--prefix", default="keyautomat/v1", help="topic prefix")
    p.add_argument("--state-file", help="keeps the device credential across restarts")
    p.add_argument("--resend-seconds", type=float, default=5.0)
    p.add_argument(
        "--test-hooks",
        action="store_true",
        help="TEST-ONLY: obey a test rig's instructions on <prefix>/devices/<hwId>/test "
        "(keyautomat device-test; never in production)",
    )
    p.add_argument(
        "--console-control",
        action="store_true",
        help="let the console's virtual automat press keys and read the display over "
        "<prefix>/devices/<hwId>/test (docs/console.md; simulated automats only)",
    )
    p.add_argument(
        "--person-seconds",
        type=person_seconds_arg,
        help="how long the autopilot person takes to take or return a key and to close "
        "the door (default 0, or 1.5 with --console-control, so that the door is seen open)",
    )
    # Test-only and hidden: break a protocol rule on purpose, to show that
    # `keyautomat device-test` catches it (simulator/automat.py FAULTS, docs/device-test.md).
    p.add_argument(
        "--break", dest="faults", action="append", choices=sorted(FAULTS), help=argparse.SUPPRESS
    )
    p.set_defaults(func=cmd_simulate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyautomat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply database migrations")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("init", help="create the root organization and its admin service account")
    p.add_argument("--org-name", required=True)
    p.add_argument("--customer-id", default=None)
    p.add_argument("--key-out", required=True, help="file for the PKCS#1 private key (mode 600)")
    p.add_argument(
        "--admin-email",
        type=_email,
        help="also create the first console admin with this email (its password is printed once)",
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", help="run the API server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--demo", action="store_true", help="seed and print a demo organization")
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="lowest level logged (default: KEYAUTOMAT_LOG_LEVEL, info)",
    )
    p.add_argument(
        "--no-worker", action="store_true", help="leave the outbox to separate worker processes"
    )
    p.add_argument(
        "--no-gateway",
        action="store_true",
        help="leave devices to separate `keyautomat gateway` processes (PostgreSQL and MQTT)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "gateway", help="run the device gateway alone (any number on PostgreSQL and MQTT)"
    )
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("worker", help="deliver outbox messages (run any number on PostgreSQL)")
    p.add_argument("--batch-size", type=int, default=50)
    p.set_defaults(func=cmd_worker)

    _add_simulate(sub)

    p = sub.add_parser(
        "device-test",
        help="conformance kit: play the server's side against a device under test",
        description="Play the server's side of the device protocol against one device under "
        "test (docs/device-test.md): install an automat, print its installation code, drive "
        "the device through every step and print each verdict. Exits 0 when every step "
        "passed, 1 when one failed, 2 when the kit could not run.",
    )
    add_device_test_arguments(p)
    p.set_defaults(func=cmd_device_test)

    _add_user_commands(sub)
    add_backup_commands(sub)
    _add_call_command(sub)
    # Every argument of a command without a type of its own is text and meets the text
    # rules, checked while parsing, i.e. before any command has an effect. (Not on the
    # top parser: its command argument takes all the rest and would name no option.)
    for command in sub.choices.values():
        command.register("type", None, _text)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
