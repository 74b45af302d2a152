"""What every JSON request body must meet before any route sees it (issue 11, items 8/15/16).

The signing middleware holds the raw body of every ``/v2`` and ``/admin``
request (the only routes taking JSON), so it checks it here, once, whatever
the route does with it afterwards: typed by a Pydantic model or parsed by
hand. A string with NUL or a lone surrogate, or a number no field can hold,
is refused with 400 naming its place, before anything is stored.
"""

from __future__ import annotations

import json

from keyautomat.domain.text import json_problems


def body_problems(body: bytes) -> list[str]:
    """The reasons to refuse ``body``; empty when it is fine or not JSON at all.

    A body that does not decode is left to the route, which answers
    ``body: is not valid JSON`` in the one error shape.
    """
    if not body:
        return []
    try:
        value = json.loads(body)
    except RecursionError:
        return ["body: is nested too deeply"]
    except ValueError:
        return []
    return json_problems(value)
