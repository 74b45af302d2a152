"""Every performance target of the project, measured, in one table (``make bench``).

Runs each bench script of this folder as its own process, ``--runs`` times (3 by
default), reads the JSON lines it prints, and prints one table: the measure, the
median figure with the spread of the runs (lowest-highest), the target, and
whether the median meets it. The ratios against a bare FastAPI hello app are
measured side by side inside one run of ``signed_get.py``, which starts that app
itself. docs/performance.md says what each figure is and what limits it.

    uv run python bench/table.py [--runs 3] [--only creation] [--markdown]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Without PostgreSQL reachable at ``--database-url`` the PostgreSQL rows say so
and are skipped. A full run takes about 20-25 minutes on 2 cores; ``--only``
picks the jobs whose name contains the text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy.engine import make_url
from support import ROOT
from tests.services import POSTGRES_ADMIN_URL

Lines = list[dict[str, Any]]


@dataclass(frozen=True)
class Target:
    """``value`` against ``bound``: at least (``>=``) or below (``<``)."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value < self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '<'} {self.bound:g}"


@dataclass(frozen=True)
class Measure:
    key: str  # what the job's ``extract`` names
    label: str
    unit: str
    target: Target | None = None


@dataclass(frozen=True)
class Job:
    name: str
    engine: str  # "SQLite" or "PostgreSQL"
    script: str
    args: Callable[[argparse.Namespace], Sequence[str]]
    extract: Callable[[Lines], dict[str, float]] | Callable[[Lines], dict[str, list[float]]]
    measures: tuple[Measure, ...]
    needs_postgres: bool = False
    # Runs itself ``--runs`` times (alternating with its reference) and reports each run.
    repeats_itself: bool = False


@dataclass
class Row:
    job: Job
    measure: Measure
    values: list[float] = field(default_factory=list)
    note: str = ""


def _one(lines: Lines, **match: Any) -> dict[str, Any]:
    """The one line whose keys have the values of ``match``."""
    found = [line for line in lines if all(line.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise LookupError(f"expected one line with {match}, found {len(found)}")
    return found[0]


def _signed(lines: Lines) -> dict[str, list[float]]:
    """Per run: req/s of each measure, and each signed one against the hello run beside it."""
    figures: dict[str, list[float]] = {}
    for line in lines:
        if line.get("measure") in {"hello", "signed_root", "signed_automat", "signed_list"}:
            figures[line["measure"]] = line["runs"]
            figures[line["measure"] + "_ratio"] = line["ratio_runs"]
    return figures


def _creation_saturation(lines: Lines) -> dict[str, float]:
    line = _one(lines, existing=1000)
    return {"rate": line["throughput"], "cpu": line["server_cpu_ms_per_request"]}


def _creation_growth(lines: Lines) -> dict[str, float]:
    small, large = _one(lines, existing=1000), _one(lines, existing=100000)
    return {
        "p99_1k": small["p99_ms"],
        "p99_100k": large["p99_ms"],
        "growth": large["p99_ms"] / small["p99_ms"],
    }


def _processes(lines: Lines) -> dict[str, float]:
    creations = [line for line in lines if str(line.get("workload", "")).startswith("POST")]
    by_apis = {line["api_processes"]: line["throughput"] for line in creations}
    return {"one": by_apis[1], "two": by_apis[2]}


def _overload(lines: Lines) -> dict[str, float]:
    saturation = _one(lines, level="saturation")
    top = max((line for line in lines if "offered_per_s" in line), key=lambda x: x["offered_per_s"])
    return {
        "saturation": saturation["served_per_s"],
        "fraction": top["served_fraction_of_saturation"],
        "p99": top["p99_ms"],
    }


def _webhooks(lines: Lines) -> dict[str, float]:
    one, two = _one(lines, workers=1), _one(lines, workers=2)
    return {
        "one": one["deliveries_per_s"],
        "two": two["deliveries_per_s"],
        "p99": max(one["p99_ms"], two["p99_ms"]),
    }


CREATION_RATE = Measure("rate", "iLOQ contract creation, saturation", "/s", Target(">=", 500))
CREATION_CPU = Measure("cpu", "  server CPU per creation", "ms")
P99_1K = Measure("p99_1k", "creation p99 at the offered rate, 1k existing", "ms", Target("<", 50))
P99_100K = Measure(
    "p99_100k", "creation p99 at the offered rate, 100k existing", "ms", Target("<", 50)
)
GROWTH = Measure("growth", "  p99 growth 1k -> 100k", "x", Target("<", 1.3))


def _growth_args(options: argparse.Namespace) -> list[str]:
    rate = str(options.creation_rate)
    return ["--existing", "1000", "--existing", "100000", "--rate", rate]


JOBS: tuple[Job, ...] = (
    Job(
        "signed reads",
        "SQLite",
        "signed_get.py",
        lambda o: ["--runs", str(o.runs), "--duration", str(min(o.seconds, 5))],
        _signed,
        (
            Measure("hello", "bare FastAPI hello (reference)", "req/s"),
            Measure("signed_root", "signed GET /v2/", "req/s"),
            Measure("signed_root_ratio", "  vs bare hello, side by side", "x", Target(">=", 0.5)),
            Measure("signed_automat", "signed GET /v2/automats/{id}", "req/s"),
            Measure(
                "signed_automat_ratio", "  vs bare hello, side by side", "x", Target(">=", 0.35)
            ),
            Measure(
                "signed_list", "signed GET /v2/automats?limit=100", "req/s", Target(">=", 1000)
            ),
        ),
        repeats_itself=True,
    ),
    Job(
        "creation saturation",
        "SQLite",
        "contracts.py",
        lambda o: ["--existing", "1000", "--rate", "0", "--seconds", str(o.seconds)],
        _creation_saturation,
        (CREATION_RATE, CREATION_CPU),
    ),
    Job(
        "creation growth",
        "SQLite",
        "contracts.py",
        lambda o: [*_growth_args(o), "--seconds", str(o.seconds)],
        _creation_growth,
        (P99_1K, P99_100K, GROWTH),
    ),
    Job(
        "creation growth",
        "PostgreSQL",
        "contracts.py",
        lambda o: [*_growth_args(o), "--seconds", str(o.seconds), "--database-url", o.database_url],
        _creation_growth,
        (P99_1K, P99_100K, GROWTH),
        needs_postgres=True,
    ),
    Job(
        "creation with 1 and 2 API processes",
        "PostgreSQL",
        "processes.py",
        lambda o: ["--seconds", str(o.seconds), "--database-url", o.database_url],
        _processes,
        (
            Measure("one", "creation saturation, 1 API process", "/s"),
            Measure("two", "creation saturation, 2 API processes", "/s", Target(">=", 400)),
        ),
        needs_postgres=True,
    ),
    Job(
        "creation overload",
        "SQLite",
        "overload.py",
        lambda o: ["--seconds", str(o.seconds)],
        _overload,
        (
            Measure("saturation", "creation saturation (closed loop)", "/s"),
            Measure("fraction", "served at 3x saturation offered", "x sat.", Target(">=", 0.9)),
            Measure("p99", "  p99 of the served at 3x", "ms", Target("<", 100)),
        ),
    ),
    Job(
        "webhook delivery",
        "PostgreSQL",
        "webhooks.py",
        lambda o: ["--seconds", str(o.seconds)],
        _webhooks,
        (
            Measure("one", "webhook deliveries, 1 worker", "/s", Target(">=", 500)),
            Measure("two", "webhook deliveries, 2 workers", "/s", Target(">=", 500)),
            Measure("p99", "  event -> delivery p99 at 200/s", "ms", Target("<", 1000)),
        ),
        needs_postgres=True,
    ),
)


def _postgres_reachable(url: str) -> str | None:
    """None when PostgreSQL answers at ``url``, else why not."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        psycopg.connect(plain, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {url}: {str(exc).strip().splitlines()[0]}"
    return None


def _run(job: Job, options: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, str(ROOT / "bench" / job.script), *job.args(options)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(command[1:])} exited {done.returncode}: {' | '.join(tail)}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return job.extract(lines)


def _figure(values: list[float]) -> tuple[str, str]:
    median = statistics.median(values)
    digits = 0 if median >= 100 else 1 if median >= 10 else 2
    spread = f"{min(values):.{digits}f}-{max(values):.{digits}f}" if len(values) > 1 else ""
    return f"{median:.{digits}f}", spread


def _print(rows: list[Row], markdown: bool) -> None:
    header = ("engine", "measure", "median", "spread", "unit", "target", "met")
    table = []
    for row in rows:
        if not row.values:
            table.append(
                (row.job.engine, row.measure.label, "-", "", row.measure.unit, "", row.note)
            )
            continue
        median, spread = _figure(row.values)
        target = row.measure.target
        met = (
            "" if target is None else ("yes" if target.met(statistics.median(row.values)) else "NO")
        )
        table.append(
            (
                row.job.engine,
                row.measure.label,
                median,
                spread,
                row.measure.unit,
                str(target or ""),
                met,
            )
        )
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in table:
            print("| " + " | ".join(cell.strip() for cell in line) + " |")
        return
    widths = [max(len(str(line[i])) for line in (header, *table)) for i in range(len(header))]
    for line in (header, *table):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each bench (median, spread)")
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per workload")
    parser.add_argument("--only", help="only the jobs whose name contains this")
    parser.add_argument(
        "--creation-rate",
        type=float,
        default=100,
        help="creations offered a second for the p99 rows (keep it below saturation)",
    )
    parser.add_argument("--database-url", default=POSTGRES_ADMIN_URL)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    options = parser.parse_args()
    if options.runs < 1:
        parser.error("--runs must be at least 1")
    no_postgres = _postgres_reachable(options.database_url)
    rows: list[Row] = []
    for job in JOBS:
        if options.only and options.only not in job.name:
            continue
        job_rows = [Row(job, measure) for measure in job.measures]
        rows += job_rows
        if job.needs_postgres and no_postgres:
            for row in job_rows:
                row.note = "skipped: " + no_postgres
            continue
        runs = 1 if job.repeats_itself else options.runs
        for run in range(runs):
            began = time.monotonic()
            try:
                figures = _run(job, options)
            except (RuntimeError, LookupError, KeyError, ValueError) as exc:
                for row in job_rows:
                    row.note = f"failed: {exc}"[:300]
                print(f"{job.name} ({job.engine}) run {run + 1} failed: {exc}", file=sys.stderr)
                break
            for row in job_rows:
                figure = figures[row.measure.key]
                row.values += figure if isinstance(figure, list) else [figure]
            print(
                f"{job.name} ({job.engine}) run {run + 1}/{runs}: {time.monotonic() - began:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    _print(rows, options.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
