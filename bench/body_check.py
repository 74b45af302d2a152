"""Cost of the signing middleware's body check, per request, before and after the pre-filter.

    uv run python bench/body_check.py [--seconds 1.0]

"before" decodes and walks every body (what ``body_problems`` did until the
pre-filter); "after" is ``body_problems`` as it is now, which decodes only a
body that could hold a problem. Printed in microseconds per check, the best of
five runs, for a typical contract body (UTF-8 with Finnish text), a contract
carrying many keys, a 1 MiB ASCII string, 1 MiB of small objects and 1 MiB of non-ASCII text.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from keyautomat.domain.text import json_problems
from keyautomat.entrypoints.api.bodies import body_problems


def contract(keys: int) -> bytes:
    body = {
        "start": "2026-01-01T10:00:00.000Z",
        "end": "2026-01-03T10:00:00.000Z",
        "contact": {
            "name": "Jääskeläinen Öljy-Äijä",
            "email": "jaa@example.com",
            "phoneNumber": "+358401234567",
            "language": "fi",
            "notifications": {"contractCreated": {"email": True, "sms": True}},
        },
        "keys": [
            {"id": f"key-{i:04}", "storageInfo": {"automatId": "000111", "pincode": "123456"}}
            for i in range(keys)
        ],
        "freeLockerAfterFetch": True,
        "pickUpInfoForManualStorageKeys": "Hyllyllä 3, lokero 12, ovi B",
        "userVerification": "0",
    }
    return json.dumps(body, ensure_ascii=False).encode()


def before(body: bytes) -> list[str]:
    try:
        return json_problems(json.loads(body))
    except RecursionError:
        return ["body: is nested too deeply"]
    except ValueError:
        return []


def per_call_us(check: Callable[[bytes], list[str]], body: bytes, seconds: float) -> float:
    best = float("inf")
    for _ in range(5):
        calls = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            check(body)
            calls += 1
        best = min(best, elapsed / calls * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="per body and variant")
    args = parser.parse_args()
    bodies = {
        "contract, 8 keys": contract(8),
        "contract, 25 keys": contract(25),
        "1 MiB ASCII": b'{"x": "' + b"a" * (1 << 20) + b'"}',
        "1 MiB of objects": json.dumps([{"id": f"k{i}", "n": i} for i in range(36_000)]).encode(),
        "1 MiB non-ASCII": ('{"x": "' + "ä" * (1 << 19) + '"}').encode(),
    }
    print(f"{'body':<20} {'bytes':>8} {'before µs':>10} {'after µs':>10} {'speed-up':>9}")
    for name, body in bodies.items():
        assert before(body) == body_problems(body) == []
        old = per_call_us(before, body, args.seconds)
        new = per_call_us(body_problems, body, args.seconds)
        print(f"{name:<20} {len(body):>8} {old:>10.1f} {new:>10.1f} {old / new:>8.1f}x")


if __name__ == "__main__":
    main()
