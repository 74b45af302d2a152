"""The plain HTML pages a contract's contact opens from a message (``/sign``, ``/identify``).

One look for all of them, no scripts or assets from elsewhere, nothing cached
(their URLs and answers are credentials or personal), and no Referer sent on.
"""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

# Headers of every page and redirect of these routers.
PRIVATE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A page titled ``title`` (escaped here) over ``body`` (HTML the caller escaped)."""
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
        headers=PRIVATE_HEADERS,
    )
