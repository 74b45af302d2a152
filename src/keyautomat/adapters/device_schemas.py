"""JSON Schema files of the device protocol, generated from its models.

The files under ``protocol/v1/`` let a hardware maker validate messages without
Python. They are made from the pydantic models of ``adapters/device_protocol.py``,
which also decode every message, so the schema and the server cannot disagree;
a unit test fails when the committed files differ from what this module makes.

    uv run python -m keyautomat.adapters.device_schemas            # rewrite protocol/v1
    uv run python -m keyautomat.adapters.device_schemas --check    # exit 1 when stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter

from keyautomat.adapters.device_protocol import (
    DEVICE_ENVELOPE,
    DEVICE_MESSAGE_MODELS,
    SERVER_ENVELOPE,
    SERVER_MESSAGE_MODELS,
    Typed,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
GENERATED = (
    "Generated from src/keyautomat/adapters/device_protocol.py by "
    "`python -m keyautomat.adapters.device_schemas`; do not edit. "
    "Optional fields (not in `required`) may be absent or null; both mean the default."
)
DEFAULT_DIRECTORY = Path("protocol/v1")
# Keywords that describe a value rather than constrain it: they stay beside the
# ``anyOf`` that makes an optional property nullable.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated"})


def schema_files() -> dict[str, str]:
    """Every schema file's path (relative to ``protocol/v1``) and text."""
    files: dict[str, str] = {}
    for direction, envelope, models, title in (
        ("device", DEVICE_ENVELOPE, DEVICE_MESSAGE_MODELS, "Any message a device sends"),
        ("server", SERVER_ENVELOPE, SERVER_MESSAGE_MODELS, "Any message the server sends"),
    ):
        files[f"{direction}.schema.json"] = _text(_any_of(models), title)
        files[f"{direction}/envelope.schema.json"] = _text(_of(envelope), None)
        for type_, model in models.items():
            files[f"{direction}/{type_}.schema.json"] = _text(_of(model), None)
    return files


def _of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True, mode="validation")


def _any_of(models: Mapping[str, type[Typed]]) -> dict[str, Any]:
    # One schema for every message of a direction: ``type`` picks the member.
    union: Any = Annotated[Union[tuple(models.values())], Field(discriminator="type")]  # noqa: UP007
    schema = TypeAdapter(union).json_schema(by_alias=True, mode="validation")
    # ``discriminator`` is OpenAPI's, not JSON Schema's: strict validators (ajv) refuse
    # it, and the members' constant ``type`` makes exactly one of them match anyway.
    schema.pop("discriminator", None)
    return schema


def _text(schema: dict[str, Any], title: str | None) -> str:
    _polish(schema)
    head: dict[str, Any] = {"$schema": DRAFT, "$comment": GENERATED}
    if title is not None:
        head["title"] = title
    document = {**head, **schema}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _polish(node: Any) -> None:
    """Every property that is not required also admits null, as the decoder does. The
    property titles pydantic derives from field names are dropped as noise, and the
    descriptions (docstrings) become one line of Markdown each."""
    if isinstance(node, list):
        for item in node:
            _polish(item)
        return
    if not isinstance(node, dict):
        return
    description = node.get("description")
    if isinstance(description, str):
        node["description"] = " ".join(description.replace("``", "`").split())
    properties = node.get("properties")
    if isinstance(properties, dict):
        required = set(node.get("required", []))
        for name, prop in list(properties.items()):
            prop.pop("title", None)
            if name not in required:
                properties[name] = _or_null(prop)
    for key, child in node.items():
        if key != "properties":
            _polish(child)
        else:
            for prop in child.values():
                _polish(prop)


def _or_null(prop: dict[str, Any]) -> dict[str, Any]:
    outer = {k: v for k, v in prop.items() if k in _ANNOTATIONS}
    inner = {k: v for k, v in prop.items() if k not in _ANNOTATIONS}
    choices = inner["anyOf"] if list(inner) == ["anyOf"] else [inner]
    if {"type": "null"} not in choices:
        choices = [*choices, {"type": "null"}]
    return {"anyOf": choices, **outer}


def stale_files(directory: Path) -> list[str]:
    """The files under ``directory`` that differ from what the models generate, are
    missing, or are left over from a message that no longer exists."""
    wanted = schema_files()
    present = {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*.schema.json")
        if path.is_file()
    }
    stale = sorted(present - wanted.keys())
    for name, text in wanted.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return sorted(stale)


def write(directory: Path) -> list[str]:
    """Write every schema file into ``directory`` and delete leftovers; the names changed."""
    changed = stale_files(directory) if directory.exists() else sorted(schema_files())
    wanted = schema_files()
    for name in changed:
        path = directory / name
        if name in wanted:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(wanted[name], encoding="utf-8")
        else:
            path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIRECTORY)
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when a file is stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.directory)
        for name in stale:
            print(f"stale: {args.directory / name}", file=sys.stderr)
        return 1 if stale else 0
    for name in write(args.directory):
        print(f"wrote {args.directory / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
