"""50 creations racing for 10 free keys: exactly 10 win, 40 get 409, nothing is booked twice;
and a creation passes over an automat another creation is allocating from."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from keyautomat.adapters import orm
from keyautomat.bootstrap import Container
from keyautomat.contracts import service
from keyautomat.contracts.iloq import wire
from keyautomat.contracts.iloq.kind import IloqKind
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.errors import Conflict
from keyautomat.service_layer.accounts import load_account
from keyautomat.service_layer.principal import Principal
from tests.conftest import Tenant
from tests.contract_helpers import RIGHT, booked_keys, group_of, iso, stocked_automat


def _principal(container: Container, acme: Tenant) -> Principal:
    account = container.db.transaction(lambda s: load_account(s, acme.account_id))
    assert account is not None
    return account.principal


ILOQ = IloqKind()


def _body(now: datetime, **location: str) -> dict[str, Any]:
    return {
        "input": {
            "contractType": 1,
            "accessRightIds": [RIGHT],
            "numberOfKeys": 1,
            "start": iso(now - timedelta(minutes=1)),
            "end": iso(now + timedelta(days=1)),
            **location,
        }
    }


def _race(
    container: Container, principal: Principal, body: dict[str, Any], now: datetime
) -> list[str]:
    def create(_: int) -> str:
        new = wire.parse_new_contract(body, now)
        try:
            container.db.transaction(
                lambda s: service.create(SqlContractStore(s), ILOQ, principal, new, now=now)
            )
        except Conflict:
            return "409"
        return "201"

    # Plain threads, each with its own connection on PostgreSQL: real concurrency.
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(create, range(50)))


def test_fifty_concurrent_creations_share_ten_keys_without_double_booking(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=10, empty=0)
    now = datetime.now(UTC)
    outcomes = _race(
        container, _principal(container, acme), _body(now, keyAutomatId=automat_id), now
    )
    assert outcomes.count("201") == 10
    assert outcomes.count("409") == 40
    assert booked_keys(container) == (10, 10, 10)


def test_fifty_concurrent_creations_in_a_group_share_its_ten_keys_without_double_booking(
    container: Container, acme: Tenant
) -> None:
    automats = [
        stocked_automat(container, acme, keys=5, empty=0, name=f"A{i}")[0] for i in range(2)
    ]
    now = datetime.now(UTC)
    body = _body(now, groupId=group_of(acme, automats))
    outcomes = _race(container, _principal(container, acme), body, now)
    assert outcomes.count("201") == 10
    assert outcomes.count("409") == 40
    assert booked_keys(container) == (10, 10, 10)


# PostgreSQL only: SQLite has one writer, so no creation ever finds an automat held
# by another.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_creation_passes_over_an_automat_another_one_is_allocating_from(
    container: Container, acme: Tenant
) -> None:
    best, _ = stocked_automat(container, acme, keys=3, name="best")
    other, _ = stocked_automat(container, acme, keys=2, name="other")
    now = datetime.now(UTC)
    body = _body(now, groupId=group_of(acme, [best, other]))
    principal = _principal(container, acme)
    holding = container.db.session()
    # Another transaction allocating from the best automat holds its row.
    holding.execute(select(orm.automats.c.id).where(orm.automats.c.id == best).with_for_update())
    got: list[str] = []

    def create() -> None:
        new = wire.parse_new_contract(body, now)
        contract = container.db.transaction(
            lambda s: service.create(SqlContractStore(s), ILOQ, principal, new, now=now)
        )
        got.append(str(contract.keys[0].automat_id))

    creating = threading.Thread(target=create)
    creating.start()
    creating.join(timeout=10)
    finished_while_held = not creating.is_alive()
    holding.rollback()
    holding.close()
    creating.join()
    assert finished_while_held, "the creation waited for the held automat"
    assert got == [other]
    # Once nobody holds it, the best automat is the one given again.
    new = wire.parse_new_contract(body, now)
    again = container.db.transaction(
        lambda s: service.create(SqlContractStore(s), ILOQ, principal, new, now=now)
    )
    assert again.keys[0].automat_id == best
