"""End of contract (C12, once, through the outbox worker on a ManualClock), PATCH re-syncing
the pincodes' validity, and the per-type DELETE restrictions (endpoints.md §3.6)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from keyautomat.adapters import orm
from keyautomat.adapters.orm_contracts import contract_keys
from keyautomat.adapters.orm_devices import device_pincodes
from keyautomat.bootstrap import Container
from keyautomat.client import ApiError
from keyautomat.contracts.progress import evaluate_end
from keyautomat.contracts.store import SqlContractStore
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import outbox
from keyautomat.service_layer.clock import ManualClock
from tests.conftest import Tenant
from tests.contract_helpers import RIGHT, iso, period, stocked_automat

PATH = "/iloq/keycontracts"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def worker(container: Container, clock: ManualClock) -> OutboxWorker:
    return OutboxWorker(container.db, container.dispatcher, clock, worker_id="w1", batch_size=20)


def body(contract_type: int, automat_id: str, **extra: Any) -> dict[str, Any]:
    start, end = period()
    fields: dict[str, Any] = {
        "contractType": contract_type,
        "accessRightIds": [RIGHT],
        "keyAutomatId": automat_id,
        "start": start,
    }
    if contract_type == 1:
        fields["end"] = end
    if contract_type != 3:
        fields["numberOfKeys"] = 1
    fields.update(extra)
    return {"input": fields}


def set_status(container: Container, contract_id: str, position: int, status: str) -> None:
    container.db.transaction(
        lambda s: s.execute(
            update(contract_keys)
            .where(contract_keys.c.contract_id == contract_id, contract_keys.c.position == position)
            .values(status=status)
        )
    )


def live_pincodes(container: Container, contract_id: str) -> list[Any]:
    return container.db.transaction(
        lambda s: list(
            s.execute(
                select(device_pincodes).where(
                    device_pincodes.c.reference == contract_id, device_pincodes.c.removed.is_(False)
                )
            ).all()
        )
    )


def end_rows(container: Container, contract_id: str) -> list[str]:
    return container.db.transaction(
        lambda s: [
            r.status
            for r in s.execute(
                select(orm.outbox.c.status).where(orm.outbox.c.ref == f"contract:{contract_id}:end")
            )
        ]
    )


def drain(worker: OutboxWorker) -> int:
    return asyncio.run(worker.drain())


def test_a_key_never_fetched_is_marked_once_when_the_end_passes(
    container: Container, acme: Tenant, clock: ManualClock, worker: OutboxWorker
) -> None:
    automat_id, key_ids = stocked_automat(container, acme, keys=1)
    start, end = period(hours_from_now=-1, length_hours=2)
    created = acme.api.post(PATH, body(1, automat_id, start=start, end=end))
    drain(worker)  # not due yet
    assert acme.api.get(f"{PATH}/{created['id']}")["keys"][0]["status"] is None
    clock.set(datetime.fromisoformat(end.replace("Z", "+00:00")) + timedelta(seconds=1))
    drain(worker)
    key = acme.api.get(f"{PATH}/{created['id']}")["keys"][0]
    assert key["status"] == "key-not-fetched"
    assert key["inHistory"] is True
    assert live_pincodes(container, created["id"]) == []
    assert end_rows(container, created["id"]) == [outbox.DONE]
    # Once: a second run of the worker or of the evaluation changes nothing.
    drain(worker)
    assert (
        container.db.transaction(
            lambda s: evaluate_end(SqlContractStore(s), created["id"], clock.now())
        )
        == 0
    )
    assert acme.api.get(f"{PATH}/{created['id']}")["keys"][0]["status"] == "key-not-fetched"
    # The key is free again from the end on.
    later = iso(datetime.fromisoformat(end.replace("Z", "+00:00")) + timedelta(hours=2))
    acme.api.post(PATH, body(1, automat_id, keyIds=[key_ids[0]], start=end, end=later))


def test_a_key_still_out_is_marked_not_returned_and_its_code_stays_for_the_return(
    container: Container, acme: Tenant, clock: ManualClock, worker: OutboxWorker
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    start, end = period(hours_from_now=-1, length_hours=2)
    created = acme.api.post(PATH, body(1, automat_id, start=start, end=end))
    set_status(container, created["id"], 0, "key-fetched")
    clock.set(datetime.fromisoformat(end.replace("Z", "+00:00")) + timedelta(seconds=1))
    drain(worker)
    key = acme.api.get(f"{PATH}/{created['id']}")["keys"][0]
    assert key["status"] == "key-not-returned"
    assert key["inHistory"] is False
    [code] = live_pincodes(container, created["id"])
    assert code.code == created["keys"][0]["storageInfo"]["pincode"]
    assert code.valid_until is None  # opens the locker for the late return
    assert (
        container.db.transaction(
            lambda s: evaluate_end(SqlContractStore(s), created["id"], clock.now())
        )
        == 0
    )


def test_patch_re_issues_the_pincodes_with_the_new_window(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    created = acme.api.post(PATH, body(1, automat_id))
    [before] = live_pincodes(container, created["id"])
    new_start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    new_end = new_start + timedelta(hours=30)
    acme.api.patch(f"{PATH}/{created['id']}", {"start": iso(new_start), "end": iso(new_end)})
    [after] = live_pincodes(container, created["id"])
    assert after.code == before.code
    assert after.valid_from.astimezone(UTC) == new_start
    assert after.valid_until.astimezone(UTC) == new_end
    assert after.version > before.version  # the automat gets it in its next sync


def delete_status(tenant: Tenant, contract_id: str) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        tenant.api.delete(f"{PATH}/{contract_id}")
    return info.value.status_code, info.value.response.json()["message"][0]


def test_a_default_contract_with_a_key_out_cannot_be_deleted(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    created = acme.api.post(PATH, body(1, automat_id))
    for status in ("key-fetched", "key-not-returned"):
        set_status(container, created["id"], 0, status)
        code, message = delete_status(acme, created["id"])
        assert code == 400
        assert "fetched and not returned" in message
    set_status(container, created["id"], 0, "key-returned")
    acme.api.delete(f"{PATH}/{created['id']}")


def test_a_half_fetched_fetch_contract_cannot_be_deleted(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    created = acme.api.post(PATH, body(2, automat_id, numberOfKeys=2))
    set_status(container, created["id"], 0, "key-fetched")
    code, message = delete_status(acme, created["id"])
    assert code == 400
    assert "fetched while others are still waiting" in message
    set_status(container, created["id"], 1, "key-fetched")
    acme.api.delete(f"{PATH}/{created['id']}")


def test_a_half_returned_return_contract_cannot_be_deleted(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=0, empty=3)
    created = acme.api.post(PATH, body(3, automat_id, keyIds=["ret-key-1", "ret-key-2"]))
    set_status(container, created["id"], 0, "key-returned")
    code, message = delete_status(acme, created["id"])
    assert code == 400
    assert "returned while others are still waiting" in message
    set_status(container, created["id"], 1, "key-returned")
    acme.api.delete(f"{PATH}/{created['id']}")


def booked(container: Container, automat_id: str) -> tuple[int, int]:
    """The automat's open key and empty-locker reservations, as the group ranking reads them."""
    st = orm.automat_stock
    row = container.db.transaction(
        lambda s: s.execute(
            select(st.c.keys_booked, st.c.lockers_booked).where(st.c.automat_id == automat_id)
        ).one()
    )
    return row.keys_booked, row.lockers_booked


def test_a_contract_counts_as_booked_until_its_end_has_passed(
    container: Container, acme: Tenant, clock: ManualClock, worker: OutboxWorker
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    start, end = period(hours_from_now=-1, length_hours=2)
    never = acme.api.post(PATH, body(1, automat_id, start=start, end=end))
    returned = acme.api.post(PATH, body(1, automat_id, start=start, end=end))
    assert booked(container, automat_id) == (2, 0)
    set_status(container, returned["id"], 0, "key-returned")  # back before the end
    clock.set(datetime.fromisoformat(end.replace("Z", "+00:00")) + timedelta(seconds=1))
    drain(worker)
    assert acme.api.get(f"{PATH}/{never['id']}")["keys"][0]["status"] == "key-not-fetched"
    assert booked(container, automat_id) == (0, 0)


def test_a_key_still_out_at_the_end_keeps_its_locker_booked(
    container: Container, acme: Tenant, clock: ManualClock, worker: OutboxWorker
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    start, end = period(hours_from_now=-1, length_hours=2)
    created = acme.api.post(PATH, body(1, automat_id, start=start, end=end))
    set_status(container, created["id"], 0, "key-fetched")
    clock.set(datetime.fromisoformat(end.replace("Z", "+00:00")) + timedelta(seconds=1))
    drain(worker)
    assert booked(container, automat_id) == (1, 0)


def test_a_return_contract_books_an_empty_locker_until_deleted(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=0, empty=2)
    created = acme.api.post(PATH, body(3, automat_id, keyIds=["ret-key-1"]))
    assert booked(container, automat_id) == (0, 1)
    acme.api.delete(f"{PATH}/{created['id']}")
    assert booked(container, automat_id) == (0, 0)


def _returned(container: Container, contract_id: str, position: int) -> None:
    """What a key-inserted event does for a returned key: history, and the locker freed."""
    at = datetime.now(UTC)

    def work(session: Any) -> None:
        session.execute(
            update(contract_keys)
            .where(contract_keys.c.contract_id == contract_id, contract_keys.c.position == position)
            .values(status="key-returned", returned_at=at)
        )
        SqlContractStore(session).release(contract_id, position, at)

    container.db.transaction(work)


def test_patching_the_period_does_not_book_a_released_locker_again(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=0, empty=2)
    start, end = period()
    created = acme.api.post(PATH, body(3, automat_id, keyIds=["r-1", "r-2"], start=start, end=end))
    assert booked(container, automat_id) == (0, 2)
    _returned(container, created["id"], 0)
    assert booked(container, automat_id) == (0, 1)
    acme.api.patch(f"{PATH}/{created['id']}", {"end": None})
    assert booked(container, automat_id) == (0, 1)
    _returned(container, created["id"], 1)
    assert booked(container, automat_id) == (0, 0)


def test_a_fetched_key_leaves_the_booked_count_with_the_key_and_comes_back_with_it(
    container: Container, acme: Tenant
) -> None:
    automat_id, key_ids = stocked_automat(container, acme, keys=2)
    acme.api.post(PATH, body(1, automat_id, keyIds=[key_ids[0]]))
    assert booked(container, automat_id) == (1, 0)

    def key_inside(inside: bool) -> None:
        container.db.transaction(
            lambda s: s.execute(
                update(orm.lockers)
                .where(orm.lockers.c.key_id == key_ids[0])
                .values(is_key_inside=inside)
            )
        )

    key_inside(False)  # fetched: out of keys_inside, so out of keys_booked too
    assert booked(container, automat_id) == (0, 0)
    key_inside(True)
    assert booked(container, automat_id) == (1, 0)
