"""Twenty creations racing for one manual key (no automat to lock): exactly one wins."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from keyautomat.adapters.orm_contracts import contract_keys
from keyautomat.bootstrap import Container
from keyautomat.contracts import service
from keyautomat.contracts.mechanical import wire
from keyautomat.contracts.mechanical.kind import MechanicalKind
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.errors import Conflict
from keyautomat.service_layer.accounts import load_account
from tests.conftest import Tenant
from tests.contract_helpers import iso


def test_concurrent_creations_book_a_key_once(container: Container, acme: Tenant) -> None:
    acme.api.post(
        "/mechanical/keys",
        {"id": "m", "selectedStorage": {"manualStorageInfo": "Desk"}, "away": False},
    )
    account = container.db.transaction(lambda s: load_account(s, acme.account_id))
    assert account is not None
    principal = account.principal
    now = datetime.now(UTC)
    body = {
        "start": iso(now - timedelta(minutes=1)),
        "end": iso(now + timedelta(days=1)),
        "contact": {"name": "Guest"},
        "keys": [{"id": "m"}],
    }

    def create(_: int) -> str:
        new = wire.parse_new_contract(body, now)
        try:
            container.db.transaction(
                lambda s: service.create(
                    SqlContractStore(s), MechanicalKind(), principal, new, now=now
                )
            )
        except Conflict:
            return "409"
        return "201"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(create, range(20)))
    assert outcomes.count("201") == 1
    assert outcomes.count("409") == 19
    booked = container.db.transaction(
        lambda s: s.scalar(select(func.count()).select_from(contract_keys))
    )
    assert booked == 1
