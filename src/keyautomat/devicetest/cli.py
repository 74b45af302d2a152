"""``keyautomat device-test``: arguments, and the exit status of a run."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from keyautomat.devicetest import DEFAULT_PREFIX
from keyautomat.logs import configure_from_settings

if TYPE_CHECKING:
    from keyautomat.devicetest.kit import Options
    from keyautomat.devicetest.server import Timings
    from keyautomat.devicetest.steps import Step

# Exit statuses: every step passed (or did not apply), a step failed, the kit could not run.
PASSED, FAILED, NOT_RUN = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="mqtt://[user:password@]host[:port] the device uses")
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help="topic prefix for this test; no production gateway may use it "
        f"(default {DEFAULT_PREFIX})",
    )
    parser.add_argument("--product", choices=["key20", "key30"], default="key20")
    parser.add_argument(
        "--interactive",
        action="store_true",
        help="tell a person at the device what to do; without it the kit drives the device's "
        "test hooks (keyautomat simulate --test-hooks)",
    )
    parser.add_argument("--steps", help="comma-separated steps to run (and those they need)")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.add_argument(
        "--timeout", type=float, help="seconds to wait for each reaction (20; 120 interactive)"
    )
    parser.add_argument(
        "--bind-timeout", type=float, default=600.0, help="seconds to wait for the first hello"
    )
    parser.add_argument(
        "--heartbeat-seconds", type=float, default=5.0, help="heartbeat interval the kit asks for"
    )
    parser.add_argument(
        "--ack-timeout",
        type=float,
        default=10.0,
        help="seconds the server waits for a device's ack of a command",
    )
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=2.0,
        help="seconds watched where nothing may happen (a code that must not open)",
    )
    parser.add_argument(
        "--program-seconds",
        type=float,
        default=2.0,
        help="seconds the server takes to 'program' the key of a program-first code",
    )
    parser.add_argument(
        "--max-skew-seconds",
        type=float,
        default=10.0,
        help="how far the device's clock may be off the server's",
    )
    parser.add_argument("--verbose", action="store_true", help="log the server side too")


def main_device_test(args: argparse.Namespace) -> int:
    from keyautomat.devicetest.kit import Options
    from keyautomat.devicetest.runner import select_steps
    from keyautomat.devicetest.server import Timings
    from keyautomat.devicetest.steps import STEPS

    if args.list:
        for step in STEPS:
            print(f"{step.name}\n    {step.expected}")
        return PASSED
    if not args.broker:
        print("device-test needs --broker mqtt://host:port", file=sys.stderr)
        return NOT_RUN
    try:
        steps = select_steps(args.steps.split(",") if args.steps else None)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return NOT_RUN
    configure_from_settings("device-test", level="info" if args.verbose else "warning")
    timeout = args.timeout if args.timeout is not None else 120.0 if args.interactive else 20.0
    options = Options(
        product=args.product,
        timeout=timeout,
        bind_timeout=args.bind_timeout,
        quiet_seconds=args.quiet_seconds,
        program_seconds=args.program_seconds,
        max_skew_seconds=args.max_skew_seconds,
    )
    timings = Timings(
        heartbeat_seconds=args.heartbeat_seconds,
        ack_timeout_seconds=args.ack_timeout,
        proximity_seconds=max(60.0, timeout),
    )
    try:
        return asyncio.run(_run(args, options, timings, steps))
    except KeyboardInterrupt:
        print("device-test interrupted", file=sys.stderr)
        return NOT_RUN


async def _run(
    args: argparse.Namespace, options: Options, timings: Timings, steps: list[Step]
) -> int:
    from keyautomat.adapters.device_links import LinkError
    from keyautomat.devicetest.runner import DeviceTest, summary

    try:
        async with DeviceTest(
            broker=args.broker,
            prefix=args.prefix,
            options=options,
            timings=timings,
            interactive=args.interactive,
        ) as run:
            run.introduce()
            verdicts = await run.run(steps)
    except (LinkError, ConnectionError, OSError) as exc:
        print(f"device-test could not start: {exc}", file=sys.stderr)
        return NOT_RUN
    print(summary(verdicts), flush=True)
    if any(v.status == "FAIL" for v in verdicts):
        return FAILED
    if any(v.detail.startswith("nobody acts") for v in verdicts):
        return NOT_RUN
    return PASSED
