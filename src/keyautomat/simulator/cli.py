"""``keyautomat simulate`` and the simulated automats of ``serve --demo``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Mapping
from pathlib import Path

from keyautomat.adapters.device_links import Link, MqttLink
from keyautomat.simulator.automat import (
    FAULTS,
    SimKey,
    SimulatedAutomat,
    blank_iloq_keys,
    mechanical_keys,
)
from keyautomat.simulator.test_hooks import CONSOLE_ACTIONS, TEST_ACTIONS, SimulatorHooks

log = logging.getLogger(__name__)

# How long the autopilot person of an automat watched in the console takes for each act:
# long enough to see the door open and the key go, short enough not to wait for.
WATCHED_PERSON_SECONDS = 1.5


def person_seconds_arg(text: str) -> float:
    """``--person-seconds``: 0 to 60."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 60:
        raise argparse.ArgumentTypeError("must be a number of seconds from 0 to 60")
    return seconds


def _person_seconds(given: float | None, watched: bool) -> float:
    if given is not None:
        return given
    return WATCHED_PERSON_SECONDS if watched else 0.0


def stock_for(product: str, lockers: int, keys: int | None, hw_id: str) -> list[SimKey]:
    """Blank iLOQ keys for a key20, mechanical keys for a key30 (half the lockers by default)."""
    count = min(lockers, lockers // 2 if keys is None else keys)
    if product == "key20":
        return blank_iloq_keys(count)
    return mechanical_keys(count, hw_id)


def _announce(**fields: object) -> None:
    print(json.dumps(fields, separators=(",", ":")), flush=True)


async def simulate(
    *,
    broker: str,
    automat_id: str | None,
    installation_pincode: str | None,
    lockers: int,
    product: str,
    hw_id: str | None,
    prefix: str,
    keys: int | None,
    state_file: Path | None,
    resend_seconds: float,
    test_hooks: bool = False,
    console_control: bool = False,
    person_seconds: float | None = None,
    faults: frozenset[str] = frozenset(),
    client_id: str | None = None,
) -> int:
    """Run one simulated automat against a broker until SIGINT/SIGTERM.

    ``test_hooks`` lets a test rig drive it over the broker (simulator/test_hooks.py,
    test-only); ``console_control`` lets the console's virtual automat press keys and
    read the display (the same topics, fewer actions); ``faults`` makes it break
    protocol rules on purpose (``FAULTS``, only to show that ``keyautomat device-test``
    catches them)."""
    hw_id = hw_id or f"SIM-{automat_id or 'AUTOMAT'}"
    link = MqttLink(broker)
    sim = SimulatedAutomat(
        link=link,
        hw_id=hw_id,
        product=product,
        locker_count=lockers,
        installation_pincode=installation_pincode,
        prefix=prefix,
        state_file=state_file,
        resend_seconds=resend_seconds,
        faults=faults,
        person_seconds=_person_seconds(person_seconds, console_control),
        client_id=client_id,
    )
    sim.stock(stock_for(product, lockers, keys, hw_id))
    for fault in sorted(faults):
        log.warning("breaking the protocol on purpose: %s %s", hw_id, FAULTS[fault])
    hooks: asyncio.Task[None] | None = None
    if test_hooks or console_control:
        # Listening before the device says hello: the kit may instruct it right after.
        rig = SimulatorHooks(sim, link, TEST_ACTIONS if test_hooks else CONSOLE_ACTIONS)
        hooks = asyncio.create_task(rig.run())
        await asyncio.wait_for(rig.listening.wait(), 30)
        _announce(event="test-hooks", topic=rig.topic)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    runner = asyncio.create_task(sim.run())

    async def report_binding() -> None:
        while True:
            await sim.welcomed.wait()
            if automat_id is not None and sim.automat_id != automat_id:
                log.warning("bound to automat %s, not %s", sim.automat_id, automat_id)
            _announce(event="bound", automatId=sim.automat_id, hwId=hw_id)
            while sim.welcomed.is_set():
                await asyncio.sleep(0.2)

    reporter = asyncio.create_task(report_binding())
    await stop.wait()
    await sim.stop()
    for task in (reporter, runner, *([hooks] if hooks else [])):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    _announce(event="stopped", hwId=hw_id)
    return 0


def main_simulate(args: argparse.Namespace) -> int:
    # Logging is set up by the command (entrypoints/cli.py, keyautomat/logs.py).
    return asyncio.run(
        simulate(
            broker=args.broker,
            automat_id=args.automat,
            installation_pincode=args.installation_pincode,
            lockers=args.lockers,
            product=args.product,
            hw_id=args.hw_id,
            prefix=args.prefix,
            keys=args.keys,
            state_file=Path(args.state_file) if args.state_file else None,
            resend_seconds=args.resend_seconds,
            test_hooks=args.test_hooks,
            console_control=args.console_control,
            person_seconds=args.person_seconds,
            faults=frozenset(args.faults or ()),
            client_id=args.client_id,
        )
    )


async def run_demo_automats(
    link: Link,
    prefix: str,
    automats: list[tuple[str, str, str | None]],
    state_dir: Path,
    stocks: Mapping[str, list[SimKey]] | None = None,
    person_seconds: float = WATCHED_PERSON_SECONDS,
) -> None:
    """Simulate the demo automats in this process: (id, product, installation pincode).

    ``stocks`` holds the keys an automat must hold (the registered demo mechanical
    keys); automats without an entry get made-up keys. Each listens to the console's
    instructions (``CONSOLE_ACTIONS``: its virtual automat, docs/console.md), and its
    autopilot person takes ``person_seconds`` for each act, so that the console shows
    the door open.
    """
    sims = []
    rigs = []
    for automat_id, product, pincode in automats:
        hw_id = f"DEMO-{automat_id}"
        lockers = 20 if product == "key20" else 30
        sim = SimulatedAutomat(
            link=link,
            hw_id=hw_id,
            product=product,
            locker_count=lockers,
            installation_pincode=pincode,
            prefix=prefix,
            state_file=state_dir / f"{hw_id}.json",
            person_seconds=person_seconds,
        )
        stock = (stocks or {}).get(automat_id)
        sim.stock(stock if stock else stock_for(product, lockers, lockers * 3 // 5, hw_id))
        sims.append(sim)
        rigs.append(SimulatorHooks(sim, link, CONSOLE_ACTIONS))
    try:
        await asyncio.gather(*(sim.run() for sim in sims), *(rig.run() for rig in rigs))
    finally:
        for sim in sims:
            with contextlib.suppress(Exception):
                await sim.stop()
