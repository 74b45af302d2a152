"""A client generated from our /v2/openapi.json is the vendor's client.

openapi-typescript, the generator of the vendor's published types, turns our
document into TypeScript, and every path, schema and operation of it must
equal ``expected_v2.ts``: the vendor's types plus our marked extensions. The
failure lists every difference, piece by piece. Without npm the test skips
(and fails under KEYAUTOMAT_REQUIRE_SERVICES=1, as in CI).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from starlette.testclient import TestClient

from keyautomat.bootstrap import bootstrap
from keyautomat.config import Settings
from keyautomat.entrypoints.api.app import create_app
from keyautomat.service_layer.clock import SystemClock
from tests.openapi_ts import typescript

EXPECTED = Path(__file__).with_name("expected_v2.ts")


@pytest.fixture(scope="module")
def document(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The served V2 document (it does not depend on the database's content)."""
    folder = tmp_path_factory.mktemp("document")
    shutil.copyfile(sqlite_template, folder / "keyautomat.db")
    settings = Settings(
        database_url=f"sqlite:///{folder / 'keyautomat.db'}",
        secret_key=Fernet.generate_key().decode(),
        secret_key_file=folder / "unused.key",
    )
    container = bootstrap(settings, clock=SystemClock())
    try:
        with TestClient(create_app(container), base_url="http://testserver") as http:
            yield http.get("/v2/openapi.json").json()
    finally:
        container.close()


@pytest.fixture(scope="module")
def generated(document: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Our document's TypeScript in pieces; ``repeated_operations`` from a second run where
    the operations whose ids the document repeats have ids of their own."""
    typescript.install()
    ours = typescript.pieces(typescript.generate(document, tmp_path_factory.mktemp("ts")))
    own_ids, renamed = typescript.with_own_ids(document)
    again = typescript.pieces(typescript.generate(own_ids, tmp_path_factory.mktemp("ts")))
    ours["repeated_operations"] = {name: again["operations"][name] for name in renamed}
    return ours


def test_the_typescript_of_our_v2_document_is_the_vendors_plus_our_extensions(
    generated: dict[str, Any],
) -> None:
    expected = typescript.pieces(EXPECTED.read_text())
    found = typescript.differences(generated, expected)
    assert not found, f"{len(found)} differences:\n\n" + "\n\n".join(found)


def test_the_comparison_sees_a_changed_type_a_lost_format_and_a_missing_schema(
    generated: dict[str, Any],
) -> None:
    text = EXPECTED.read_text()
    changed = (
        text.replace("      timezone: string | null;", "      timezone: string;")
        .replace(
            "      /** Format: date-time */\n      start?: string;", "      start?: string;", 1
        )
        .replace("    KeyStatus: {\n      available: boolean;\n    };\n", "")
    )
    found = typescript.differences(generated, typescript.pieces(changed))
    assert [line.split(":")[0] for line in found] == [
        "schemas Automat",
        "schemas KeyStatus",
        "schemas ReturnKeyContractDto",
    ]


def test_the_operations_the_vendor_gives_one_id_are_typed_with_ids_of_their_own(
    document: Any,
) -> None:
    _, renamed = typescript.with_own_ids(document)
    assert sorted(renamed) == [
        "delete /mechanical/keycontracts/{id}",
        "get /mechanical/keycontracts",
        "get /mechanical/keycontracts/{id}",
        "patch /mechanical/keycontracts/{id}",
        "post /mechanical/keycontracts",
    ]
