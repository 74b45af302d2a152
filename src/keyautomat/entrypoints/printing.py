"""What the command line prints for scripts to read: one compact JSON object a line."""

from __future__ import annotations

import json
from collections.abc import Mapping


def print_json_line(payload: Mapping[str, object]) -> None:
    """Print ``payload`` as one line of compact JSON, flushed at once (a caller may be
    reading the pipe while the command still runs)."""
    print(json.dumps(payload, separators=(",", ":")), flush=True)
