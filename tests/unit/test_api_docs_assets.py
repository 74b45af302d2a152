"""Our own files of the interactive API docs (entrypoints/api/docs_assets): what they may
not do, read from the files (tests/integration/test_api_docs.py serves them)."""

from __future__ import annotations

import re

from keyautomat.entrypoints.api.docs_page import OWN_ASSETS


def test_our_own_script_and_style_name_no_other_host() -> None:
    for name in ("keyautomat-docs.js", "keyautomat-docs.css"):
        text = (OWN_ASSETS / name).read_text()
        assert re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE) == []
    script = (OWN_ASSETS / "keyautomat-docs.js").read_text()
    # Swagger UI's default validator is a public service: it must be switched off.
    assert "validatorUrl: null" in script
    for storage in ("localStorage", "sessionStorage", "indexedDB", "document.cookie"):
        assert storage not in script
