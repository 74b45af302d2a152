"""TypeScript from an OpenAPI document, by openapi-typescript, cut into comparable pieces.

openapi-typescript runs from this folder's ``package.json`` (pinned by its
``package-lock.json``), installed with ``npm ci`` on first use. Its output is
reduced to facts before comparing: doc comments keep only their ``Format:``
and ``@default`` lines, ``//`` comments and blank lines go, and the members of
every object type are sorted, so that neither wording nor order can differ.
What remains is split into named pieces: each path, schema and operation.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.services import unavailable

FOLDER = Path(__file__).parent
GENERATOR = FOLDER / "node_modules" / ".bin" / "openapi-typescript"

_FACTS = ("Format: ", "@default ")
_LINE_COMMENT = re.compile(r"(^|\s)//.*$")
_KEY = re.compile(r'^(?:readonly\s+)?("(?:[^"\\]|\\.)*"|[\w$]+)\??:')


def install() -> None:
    """openapi-typescript as the lock file pins it (``make install`` does the same)."""
    if GENERATOR.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed: cannot generate TypeScript from the document")
        return
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(FOLDER)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not GENERATOR.exists():
        unavailable(f"npm ci in {FOLDER} failed: {done.stderr[-2000:]}")


def generate(document: Mapping[str, Any], workdir: Path) -> str:
    """The TypeScript openapi-typescript writes for ``document``."""
    source, target = workdir / "openapi.json", workdir / "openapi.ts"
    source.write_text(json.dumps(document))
    done = subprocess.run(
        [str(GENERATOR), str(source), "--output", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return target.read_text()


def with_own_ids(document: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``document`` where every operation whose id a later one repeats (a generator keeps
    only the last) is given the id ``"<method> <path>"``; and those ids."""
    copy: dict[str, Any] = json.loads(json.dumps(document))
    seen: dict[str, list[dict[str, Any]]] = {}
    names: dict[int, str] = {}
    for path, item in copy["paths"].items():
        for method, operation in item.items():
            seen.setdefault(operation["operationId"], []).append(operation)
            names[id(operation)] = f"{method} {path}"
    renamed = []
    for operations in seen.values():
        for operation in operations[:-1]:
            operation["operationId"] = names[id(operation)]
            renamed.append(operation["operationId"])
    return copy, renamed


# --- reduction to facts ----------------------------------------------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def facts_only(text: str) -> list[str]:
    """The lines of ``text`` without prose: see the module's docstring."""
    out: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("/**"):
            block = [stripped]
            while "*/" not in block[-1]:
                block.append(next(lines).strip())
            body = [part.strip(" */") for part in block]
            kept = [part for part in body if part.startswith(_FACTS)]
            if kept:
                out.append(" " * _indent(line) + "/** " + "; ".join(kept) + " */")
            continue
        code = _LINE_COMMENT.sub("", line).rstrip()
        if code.strip():
            out.append(code)
    return out


def _closes(line: str, indent: int) -> bool:
    stripped = line.strip()
    return _indent(line) == indent and stripped.startswith("}") and not stripped.endswith("{")


def entries(lines: list[str], indent: int) -> Iterator[list[str]]:
    """The members at ``indent`` of an object type's body, each with its comment."""
    index, pending = 0, []
    while index < len(lines):
        line = lines[index]
        if line.strip().startswith("/**"):
            pending.append(line)
            index += 1
            continue
        end = index
        if line.rstrip().endswith("{"):
            end += 1
            while not _closes(lines[end], indent):
                end += 1
        yield [*pending, *lines[index : end + 1]]
        pending = []
        index = end + 1


def key(entry: list[str]) -> str:
    head = next(line for line in entry if not line.strip().startswith("/**"))
    match = _KEY.match(head.strip())
    return match.group(1).strip('"') if match else head.strip()


def canonical(entry: list[str]) -> list[str]:
    """``entry`` with the members of each of its object types sorted by key, recursively."""
    first = next(i for i, line in enumerate(entry) if not line.strip().startswith("/**"))
    comments, rest = entry[:first], entry[first:]
    indent = _indent(rest[0])
    out = [*comments, rest[0]]
    body: list[str] = []
    for line in rest[1:]:
        if _indent(line) == indent:
            members = [canonical(e) for e in entries(body, indent + 2)]
            for member in sorted(members, key=lambda m: (key(m), m)):
                out.extend(member)
            out.append(line)
            body = []
        else:
            body.append(line)
    return out


def pieces(text: str) -> dict[str, dict[str, str]]:
    """Every path, schema and operation of a generated (or expected) file, as canonical
    text, by section; what else the file declares is in the section ``document``."""
    found: dict[str, dict[str, str]] = {}

    def add(section: str, entry: list[str]) -> None:
        block = canonical(entry)
        indent = _indent(block[-1])
        found.setdefault(section, {})[key(entry)] = "\n".join(line[indent:] for line in block)

    for top in entries(facts_only(text), 0):
        head = top[0].strip()
        if not head.endswith("{"):  # export type webhooks = Record<string, never>;
            add("document", top)
            continue
        name = head.split()[2]  # export interface NAME {
        for member in entries(top[1:-1], 2):
            if name == "components" and key(member) == "schemas":
                for schema in entries(member[1:-1], 4):
                    add("schemas", schema)
            elif name == "components":
                add("components", member)
            else:
                add(name, member)
    return found


def differences(ours: Mapping[str, Mapping[str, str]], expected: Mapping[str, Any]) -> list[str]:
    """Every piece missing, extra or different, with a diff of each different one."""
    found: list[str] = []
    for section in sorted(set(ours) | set(expected)):
        got, want = ours.get(section, {}), expected.get(section, {})
        for name in sorted(set(got) | set(want)):
            if name not in got:
                found.append(f"{section} {name}: missing from our document")
            elif name not in want:
                found.append(f"{section} {name}: not in the expectation")
            elif got[name] != want[name]:
                diff = difflib.unified_diff(
                    want[name].splitlines(), got[name].splitlines(), "expected", "ours", lineterm=""
                )
                found.append(f"{section} {name}:\n" + "\n".join(diff))
    return found
