"""The interactive API docs load everything from keyautomat itself (docs/api.md,
"Interactive docs"); tests/e2e/test_api_docs_browser.py signs requests with them."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from starlette.testclient import TestClient

from keyautomat.entrypoints.api.docs_page import ASSET_FILES, ASSETS_PREFIX

# The pages hold no data: one engine is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

DOCS_PAGES = ("/v2/docs", "/admin/docs")
# Attributes through which a page makes the browser load or send something.
LOADING_ATTRIBUTES = frozenset({"src", "href", "action", "formaction", "srcset", "data", "poster"})


class References(HTMLParser):
    """Every URL-bearing attribute of a page, every inline script and style, every form."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.forms = 0
        self.named_fields: list[str] = []
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls.extend(
            value for name, value in attrs if name in LOADING_ATTRIBUTES and value is not None
        )
        self._in_script_without_src = tag == "script" and "src" not in values
        self.forms += tag == "form"
        if tag in ("input", "textarea") and values.get("name"):
            self.named_fields.append(str(values["name"]))

    def handle_data(self, data: str) -> None:
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script_without_src = False


def _same_host(page_url: str, reference: str) -> bool:
    absolute = urljoin(page_url, reference)
    return urlsplit(absolute).netloc == urlsplit(page_url).netloc


@pytest.mark.parametrize("path", DOCS_PAGES)
def test_a_docs_page_and_every_file_it_loads_come_from_this_server(
    http: TestClient, path: str
) -> None:
    page = http.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    refs = References()
    refs.feed(page.text)
    page_url = f"http://testserver{path}"
    assert refs.urls, "the page loads its assets"
    assert [url for url in refs.urls if not _same_host(page_url, url)] == []
    assert refs.inline_scripts == 0
    openapi = path.replace("/docs", "/openapi.json")
    assert f'data-openapi-url="{openapi}"' in page.text
    for url in refs.urls:
        asset = http.get(urljoin(page_url, url))
        assert asset.status_code == 200, url
        if url.endswith(".css"):
            # A stylesheet may load fonts and images too: only inline data or this server.
            for target in re.findall(r"url\(\s*['\"]?([^'\")]+)", asset.text):
                assert target.startswith("data:") or _same_host(page_url, target), target


@pytest.mark.parametrize("path", DOCS_PAGES)
def test_a_docs_page_lets_the_browser_load_and_send_nothing_to_another_host(
    http: TestClient, path: str
) -> None:
    page = http.get(path)
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    for directive in ("default-src", "connect-src", "form-action", "base-uri", "frame-ancestors"):
        assert directive in policy
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


def test_the_key_form_cannot_be_submitted_to_the_server(http: TestClient) -> None:
    """No form element and no named field: even without script, the pasted key has no way
    to be sent."""
    refs = References()
    refs.feed(http.get("/v2/docs").text)
    assert refs.forms == 0
    assert refs.named_fields == []


def test_only_the_listed_files_are_served(http: TestClient) -> None:
    assert set(ASSET_FILES) >= {"swagger-ui-bundle.js", "swagger-ui.css", "keyautomat-docs.js"}
    for name in ("index.html", "swagger-initializer.js", "..%2F__init__.py", "docs_page.py"):
        answer = http.get(f"{ASSETS_PREFIX}/{name}")
        assert answer.status_code == 404, name
        assert answer.json()["statusCode"] == 404


def test_an_unchanged_asset_answers_304_to_its_etag(http: TestClient) -> None:
    first = http.get(f"{ASSETS_PREFIX}/swagger-ui-bundle.js")
    assert first.headers["content-type"].startswith("text/javascript")
    assert first.headers["x-content-type-options"] == "nosniff"
    assert first.headers["cache-control"] == "no-cache"
    again = http.get(
        f"{ASSETS_PREFIX}/swagger-ui-bundle.js", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    stale = http.get(f"{ASSETS_PREFIX}/swagger-ui-bundle.js", headers={"If-None-Match": '"x"'})
    assert stale.status_code == 200
    assert stale.content == first.content
