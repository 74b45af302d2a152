"""The interactive API docs (``/v2/docs``, ``/admin/docs``), served whole by keyautomat.

Swagger UI comes from the ``swagger-ui-bundle-v2`` package and our own script and
style from ``docs_assets/`` of this package, all under ``/api-docs/``: the page
loads nothing from another host, so it works on a site network without internet,
and its Content-Security-Policy lets it connect to nothing but this server.

Our script (``docs_assets/keyautomat-docs.js``) starts Swagger UI with a request
interceptor that signs each "Try it out" request in the browser (docs/api.md,
"Interactive docs") with a service account id and private key pasted into the
page's form; the key stays in the page's memory, as a non-extractable WebCrypto
key, and is never sent anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import html
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

ASSETS_PREFIX = "/api-docs"
OWN_ASSETS = Path(__file__).with_name("docs_assets")

JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
# Every file the docs pages may load, by the name they load it under; nothing else of
# either folder is served (the bundle's own index.html would load a demo from the web).
ASSET_FILES: dict[str, tuple[Traversable, str]] = {
    "swagger-ui-bundle.js": (swagger_ui_path / "swagger-ui-bundle.js", JS),
    "swagger-ui.css": (swagger_ui_path / "swagger-ui.css", CSS),
    "favicon-32x32.png": (swagger_ui_path / "favicon-32x32.png", "image/png"),
    "keyautomat-docs.js": (OWN_ASSETS / "keyautomat-docs.js", JS),
    "keyautomat-docs.css": (OWN_ASSETS / "keyautomat-docs.css", CSS),
}

# Scripts and connections to this server only: a pasted key can only ever be used
# here. Swagger UI sets style attributes from its script, hence 'unsafe-inline' for
# styles (styles cannot send anything anywhere); its icons are data: images.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="stylesheet" href="{assets}/keyautomat-docs.css">
</head>
<body data-openapi-url="{openapi_url}">
<section class="ka-signing" aria-labelledby="ka-signing-title">
<h2 id="ka-signing-title">Sign &ldquo;Try it out&rdquo; requests</h2>
<p>Every request to this API is signed with a service account&rsquo;s private key.
Paste the account&rsquo;s id and its key (PEM): this page signs each request you send
from it, in your browser. The key stays in this page&rsquo;s memory only: it is never
stored and never sent, and reloading the page forgets it.</p>
<noscript><p class="ka-error">These docs need JavaScript.</p></noscript>
<div class="ka-fields">
<label for="ka-account">Service account id</label>
<input id="ka-account" type="text" autocomplete="off" autocapitalize="off"
 spellcheck="false">
<label for="ka-key">Private key (PEM)</label>
<textarea id="ka-key" rows="3" autocomplete="off" autocapitalize="off" spellcheck="false"
 placeholder="-----BEGIN RSA PRIVATE KEY-----"></textarea>
</div>
<p class="ka-actions">
<button type="button" id="ka-use">Sign with this key</button>
<button type="button" id="ka-forget" hidden>Forget the key</button>
</p>
<p id="ka-status" role="status">Not signing: requests go out unsigned and answer 401.</p>
</section>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/keyautomat-docs.js"></script>
</body>
</html>
"""


def docs_page(title: str, openapi_url: str) -> HTMLResponse:
    """The docs page of the document at ``openapi_url``."""
    page = _PAGE.format(
        title=html.escape(title),
        assets=ASSETS_PREFIX,
        openapi_url=html.escape(openapi_url),
    )
    return HTMLResponse(page, headers=PAGE_HEADERS)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@functools.cache
def load_asset(name: str) -> Asset | None:
    """The file served as ``name``, read once; None for a name not in ASSET_FILES."""
    found = ASSET_FILES.get(name)
    if found is None:
        return None
    source, media_type = found
    body = source.read_bytes()
    return Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def install_docs_assets(app: FastAPI) -> None:
    """``/api-docs/<name>``: the files of ASSET_FILES, revalidated by ETag (they change
    only with an upgrade), outside every signed prefix and every OpenAPI document."""

    @app.get(f"{ASSETS_PREFIX}/{{name}}", include_in_schema=False)
    async def docs_asset(name: str, request: Request) -> Response:
        asset = load_asset(name)
        if asset is None:
            raise HTTPException(404)
        headers = {
            "ETag": asset.etag,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)
