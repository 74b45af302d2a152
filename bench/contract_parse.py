"""Cost of parsing a contract request body: the hand parsers against Pydantic models.

    uv run python bench/contract_parse.py [--number 20000]

For a typical body of each contract request (iLOQ and mechanical create, PATCH of
the end, PATCH of the contact) it times, in microseconds per call and the best of
five runs of ``--number`` calls:

* ``hand``: the parser the route runs (``contracts/*/wire.py``), which checks every
  rule of endpoints.md §3 and §9 and builds the command;
* ``pydantic``: ``model_validate`` of the request model that describes the same
  body in the OpenAPI document. It checks only what a JSON schema states (types,
  bounds, patterns); the rules between fields, the contact's email and the command
  would still have to follow, so this figure is the least a Pydantic parse costs.

Both start from the decoded JSON, as the route receives it.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from keyautomat.contracts.iloq import wire as iloq
from keyautomat.contracts.mechanical import wire as mechanical

NOW = datetime(2026, 1, 1, tzinfo=UTC)
START = "2026-06-01T12:00:00.000Z"
END = "2026-06-04T09:00:00.000Z"
CONTACT = {
    "name": "Jane Guest",
    "email": "jane@example.com",
    "language": "fi",
    "notifications": {"contractKeysNotReturned": {"email": True}},
}

ILOQ_CREATE = {
    "input": {
        "contractType": 1,
        "accessRightIds": ["fdef8481-98ad-42b8-b4b6-4eade261e281"],
        "numberOfKeys": 2,
        "keyAutomatId": "000111",
        "start": START,
        "end": END,
        "contact": CONTACT,
    }
}
MECHANICAL_CREATE = {
    "start": START,
    "end": END,
    "contact": {**CONTACT, "sendSms": False, "sendEmail": True},
    "keys": [{"id": "room-101-key"}, {"id": "room-102-key"}],
    "freeLockerAfterFetch": False,
}
PATCH_END = {"end": END}
PATCH_CONTACT = {"contact": CONTACT}

Case = tuple[str, dict[str, Any], Callable[[Any], object], type[BaseModel]]
CASES: list[Case] = [
    (
        "iLOQ create",
        ILOQ_CREATE,
        lambda body: iloq.parse_new_contract(body, NOW),
        iloq.CreateIloqKeyContractDto,
    ),
    ("iLOQ PATCH end", PATCH_END, iloq.parse_change, iloq.UpdateIloqContractDto),
    ("iLOQ PATCH contact", PATCH_CONTACT, iloq.parse_change, iloq.UpdateIloqContractDto),
    (
        "mechanical create",
        MECHANICAL_CREATE,
        lambda body: mechanical.parse_new_contract(body, NOW),
        mechanical.CreateMechanicalKeyContractDto,
    ),
    (
        "mechanical PATCH end",
        PATCH_END,
        mechanical.parse_change,
        mechanical.UpdateMechanicalKeyContractDto,
    ),
    (
        "mechanical PATCH contact",
        PATCH_CONTACT,
        mechanical.parse_change,
        mechanical.UpdateMechanicalKeyContractDto,
    ),
]


def per_call_us(call: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(call, repeat=5, number=number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--number", type=int, default=20_000, help="calls per run")
    args = parser.parse_args()
    print(f"{'body':<26} {'hand µs':>8} {'pydantic µs':>12} {'ratio':>6}")
    for name, body, hand, model in CASES:
        hand(body)  # both accept the body: the figures time the same work
        model.model_validate(body)
        hand_us = per_call_us(lambda: hand(body), args.number)  # noqa: B023
        model_us = per_call_us(lambda: model.model_validate(body), args.number)  # noqa: B023
        print(f"{name:<26} {hand_us:>8.1f} {model_us:>12.1f} {model_us / hand_us:>6.2f}")


if __name__ == "__main__":
    main()
