"""50 creations racing for 10 free keys: exactly 10 win, 40 get 409, nothing is booked twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from keyautomat.adapters.orm_contracts import contract_keys
from keyautomat.bootstrap import Container
from keyautomat.domain.errors import Conflict
from keyautomat.service_layer import iloq_contracts
from keyautomat.service_layer.accounts import load_account
from tests.conftest import Tenant
from tests.contract_helpers import iso, stocked_automat


def test_fifty_concurrent_creations_share_ten_keys_without_double_booking(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=10, empty=0)
    account = container.db.transaction(lambda s: load_account(s, acme.account_id))
    assert account is not None
    principal = account.principal
    now = datetime.now(UTC)
    body = {
        "input": {
            "contractType": 1,
            "accessRightIds": ["right"],
            "numberOfKeys": 1,
            "keyAutomatId": automat_id,
            "start": iso(now - timedelta(minutes=1)),
            "end": iso(now + timedelta(days=1)),
        }
    }

    def create(_: int) -> str:
        new = iloq_contracts.parse_new_contract(body, now)
        try:
            container.db.transaction(
                lambda s: iloq_contracts.create_contract(s, principal, new, now=now)
            )
        except Conflict:
            return "409"
        return "201"

    # Plain threads, each with its own connection on PostgreSQL: real concurrency.
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(create, range(50)))
    assert outcomes.count("201") == 10
    assert outcomes.count("409") == 40

    def assigned(session: object) -> tuple[int, int, int]:
        k = contract_keys
        rows = session.execute(  # type: ignore[attr-defined]
            select(
                func.count(),
                func.count(func.distinct(k.c.key_id)),
                func.count(func.distinct(k.c.locker_index)),
            )
        ).one()
        return int(rows[0]), int(rows[1]), int(rows[2])

    assert container.db.transaction(assigned) == (10, 10, 10)
