"""A structure-aware fuzzer: valid bodies with one field (or two) replaced by something hostile.

Schemathesis only reaches what the OpenAPI document types; many V2 bodies are
parsed by hand (``Any`` in the document). This takes a body the API accepts,
walks every field path in it, and replaces the value at that path with each of
``MUTANTS`` (or removes it). The cases are a deterministic sample (fixed seed)
of that product: ``KEYAUTOMAT_FUZZ_MUTATIONS`` per target in ``make test``, all of
them plus random pairs (``KEYAUTOMAT_FUZZ_PAIRS``) in ``make fuzz``.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.contract_helpers import period
from tests.fuzz.harness import World

Path = tuple[str | int, ...]
REMOVED = object()

MUTANTS: tuple[tuple[str, Any], ...] = (
    ("null", None),
    ("boolean", True),
    ("zero", 0),
    ("float", 1.5),
    ("2**70", 2**70),
    ("-2**70", -(2**70)),
    ("empty string", ""),
    ("a word", "junk"),
    ("unicode digits", "١٢٣٤٥٦"),
    ("NUL", "a\x00b"),
    ("lone surrogate", "x\ud800"),
    ("10,000 characters", "A" * 10_000),
    ("latest date, -14:00", "9999-12-31T23:59:59-14:00"),
    ("earliest date, +14:00", "0001-01-01T00:00:00+14:00"),
    ("list", [1, "a", None]),
    ("object", {"a": {"b": [None]}}),
    ("nested junk", [[[[{"\x00": "\ud800"}]]]]),
    ("1,000 items", ["x"] * 1000),
)


def field_paths(body: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every path into ``body``: the body itself, each key of each object, each list item."""
    yield prefix
    if isinstance(body, dict):
        for key, value in body.items():
            yield from field_paths(value, (*prefix, key))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            yield from field_paths(value, (*prefix, index))


def mutants_for(value: Any) -> list[tuple[str, Any]]:
    """The hostile values for one field; text fields also get their own value plus a newline."""
    found = list(MUTANTS)
    if isinstance(value, str):
        found.append(("trailing newline", value + "\n"))
        found.append(("ASCII digits as Unicode", value.translate(ARABIC_INDIC)))
    return found


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def replaced(body: Any, path: Path, value: Any) -> Any:
    """A deep copy of ``body`` with the value at ``path`` replaced (or removed for REMOVED)."""
    if not path:
        return value
    copied = copy.deepcopy(body)
    parent = copied
    for step in path[:-1]:
        parent = parent[step]
    if value is REMOVED:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copied


def label(path: Path) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}"
    return text.lstrip(".") or "(whole body)"


@dataclass(frozen=True)
class Mutation:
    body: Any
    what: str


def mutations(body: Any, *, budget: int, pairs: int, seed: int) -> list[Mutation]:
    """Single mutations of ``body`` (``budget`` sampled, all when 0), then ``pairs`` doubles."""
    singles: list[tuple[Path, str, Any]] = []
    for path in field_paths(body):
        original: Any = body
        for step in path:
            original = original[step]
        if path:
            singles.append((path, "removed", REMOVED))
        singles += [(path, name, value) for name, value in mutants_for(original)]
    rng = random.Random(seed)
    chosen = singles if budget <= 0 or budget >= len(singles) else rng.sample(singles, budget)
    found = [Mutation(replaced(body, p, v), f"{label(p)} = {n}") for p, n, v in chosen]
    for _ in range(pairs):
        (p1, n1, v1), (p2, n2, v2) = rng.sample(singles, 2)
        if p1[: len(p2)] == p2 or p2[: len(p1)] == p1:
            continue  # one inside the other: the second would not apply
        both = replaced(replaced(body, p1, v1), p2, v2)
        found.append(Mutation(both, f"{label(p1)} = {n1} and {label(p2)} = {n2}"))
    return found


# --- what is mutated ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One operation with a body it accepts; ``watch`` lists what a refusal must leave alone."""

    method: str
    path: Callable[[World], str]
    body: Callable[[World], Any]
    watch: Callable[[World], tuple[str, ...]]
    undo: Callable[[World, Any], tuple[str, str] | None] = lambda _world, _created: None
    online: bool = False  # needs a connected device (``World.online_automat_id``)

    def name(self, world: World | None = None) -> str:
        return f"{self.method} {self.path(world) if world else ''}"


def _contact() -> dict[str, Any]:
    return {"name": "Jane Guest", "email": "jane@example.com", "language": "fi"}


def _iloq_create(world: World) -> dict[str, Any]:
    start, end = period()
    return {
        "input": {
            "contractType": 1,
            "accessRightIds": ["fdef8481-98ad-42b8-b4b6-4eade261e281"],
            "numberOfKeys": 1,
            "keyAutomatId": world.automat_id,
            "start": start,
            "end": end,
            "pincodes": ["482910"],
            "contact": _contact(),
        }
    }


def _mechanical_create(world: World) -> dict[str, Any]:
    start, end = period()
    return {
        "id": "fuzz-contract",
        "start": start,
        "end": end,
        "contact": {**_contact(), "sendSms": False, "sendEmail": False},
        "keys": [{"id": world.spare_key_ids[0]}],
        "freeLockerAfterFetch": False,
    }


def _period_patch(_world: World) -> dict[str, Any]:
    _start, end = period(length_hours=72)
    return {"end": end, "contact": _contact()}


def _delete(prefix: str) -> Callable[[World, Any], tuple[str, str] | None]:
    def undo(_world: World, created: Any) -> tuple[str, str] | None:
        return ("DELETE", f"{prefix}/{created['id']}") if isinstance(created, dict) else None

    return undo


def _uninstall(_world: World, created: Any) -> tuple[str, str] | None:
    if not isinstance(created, dict):
        return None
    return ("POST", f"/v2/automats/{created['id']}/uninstall")


CONTRACTS = "/v2/iloq/keycontracts"
MECHANICAL = "/v2/mechanical/keycontracts"

TARGETS: dict[str, Target] = {
    "iloq-contract-create": Target(
        "POST",
        lambda w: CONTRACTS,
        _iloq_create,
        lambda w: (CONTRACTS,),
        _delete(CONTRACTS),
    ),
    "iloq-contract-patch": Target(
        "PATCH",
        lambda w: f"{CONTRACTS}/{w.iloq_contract_id}",
        _period_patch,
        lambda w: (f"{CONTRACTS}/{w.iloq_contract_id}", CONTRACTS),
    ),
    "mechanical-contract-create": Target(
        "POST",
        lambda w: MECHANICAL,
        _mechanical_create,
        lambda w: (MECHANICAL,),
        _delete(MECHANICAL),
    ),
    "mechanical-contract-patch": Target(
        "PATCH",
        lambda w: f"{MECHANICAL}/{w.mechanical_contract_id}",
        _period_patch,
        lambda w: (f"{MECHANICAL}/{w.mechanical_contract_id}", MECHANICAL),
    ),
    "automat-install": Target(
        "POST",
        lambda w: "/v2/automats/install",
        lambda w: {
            "name": "Fuzz street 1",
            "label": "B",
            "groupId": w.group_id,
            "address": "Mannerheimintie 1",
            "postalCode": "00100",
            "postalOffice": "Helsinki",
            "timezone": "Europe/Helsinki",
            "product": "key20",
        },
        lambda w: ("/v2/automats",),
        _uninstall,
    ),
    "automat-patch": Target(
        "PATCH",
        lambda w: f"/v2/automats/{w.automat_id}",
        lambda w: {
            "name": "Renamed",
            "label": "C",
            "groups": [w.group_id],
            "timezone": "Europe/Helsinki",
            "location": {"address": "Aleksanterinkatu 2", "postalCode": "00170"},
        },
        lambda w: (f"/v2/automats/{w.automat_id}",),
    ),
    "group-create": Target(
        "POST",
        lambda w: "/v2/groups",
        lambda w: {"name": "Fuzz group 2", "customerId": "fuzz-2", "type": 1},
        lambda w: ("/v2/groups",),
        _delete("/v2/groups"),
    ),
    "group-patch": Target(
        "PATCH",
        lambda w: f"/v2/groups/{w.group_id}",
        lambda w: {"name": "Renamed group", "customerId": "fuzz-3"},
        lambda w: (f"/v2/groups/{w.group_id}",),
    ),
    "mechanical-key-create": Target(
        "POST",
        lambda w: "/v2/mechanical/keys",
        lambda w: {
            "id": "fuzz-new-key",
            "name": "Room 9",
            "rfidHex": "0A1B2C",
            "selectedStorage": {"manualStorageInfo": "Shelf 1"},
            "shared": False,
            "away": False,
        },
        lambda w: ("/v2/mechanical/keys",),
        _delete("/v2/mechanical/keys"),
    ),
    "mechanical-key-patch": Target(
        "PATCH",
        lambda w: f"/v2/mechanical/keys/{w.spare_key_ids[-1]}",
        lambda w: {"name": "Room 10", "rfidHex": "0A1B2D", "shared": True},
        lambda w: (f"/v2/mechanical/keys/{w.spare_key_ids[-1]}",),
    ),
    "send-pincode": Target(
        "POST",
        lambda w: f"/v2/automats/{w.online_automat_id}/sendPincode",
        lambda w: {"pincode": "482910", "proximityCheck": False},
        lambda w: (CONTRACTS,),
        online=True,
    ),
    "webhook-create": Target(
        "POST",
        lambda w: "/admin/webhooks",
        lambda w: {
            "name": "fuzz 2",
            "url": "http://127.0.0.1:9/other",
            "organizationUnitId": w.tenant.unit_id,
            "eventTypes": ["contract-update", "device-alarm"],
        },
        lambda w: ("/admin/webhooks",),
        _delete("/admin/webhooks"),
    ),
}
