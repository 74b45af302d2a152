"""iLOQ key contracts through the signed API: every rule of endpoints §3 and gaps C1-C16."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.orm_devices import device_pincodes
from keyautomat.adapters.orm_iloq import iloq_keys
from keyautomat.bootstrap import Container
from keyautomat.client import ApiError
from keyautomat.contracts.allocation import SHORTLIST
from keyautomat.domain.iloq import IloqKey
from keyautomat.service_layer import iloq_keys as registry
from keyautomat.service_layer import outbox
from tests.conftest import Tenant
from tests.contract_helpers import (
    RIGHT,
    default_contract,
    grant_access_right,
    iso,
    period,
    stocked_automat,
)

PATH = "/iloq/keycontracts"


def _error(tenant: Tenant, body: Any, method: str = "POST", path: str = PATH) -> tuple[int, Any]:
    with pytest.raises(ApiError) as info:
        tenant.api.call(method, path, body)
    return info.value.status_code, info.value.response.json()["message"]


_default = default_contract


def test_it_creates_a_default_contract_with_a_pincode_per_key(
    container: Container, acme: Tenant
) -> None:
    automat_id, key_ids = stocked_automat(container, acme, keys=3)
    body = _default(
        automat_id,
        numberOfKeys=2,
        pincodes=["482910", "773201"],
        contact={
            "name": "Jane Guest",
            "email": "jane@example.com",
            "language": "fi",
            "iloqPersonId": "f5ac6bce",
            "notifications": {"contractKeysNotReturned": {"email": True}},
        },
    )
    created = acme.api.post(PATH, body)
    assert created["contractType"] == 1
    assert created["accessRightIds"] == [RIGHT]
    assert created["numberOfKeys"] == 2
    assert created["keyIds"] is None
    assert created["keyAutomatId"] == automat_id
    assert created["groupId"] is None
    assert created["start"].endswith("Z")
    assert len(created["start"]) == 24
    assert [k["id"] for k in created["keys"]] == key_ids[:2]  # lowest lockers first (C6)
    assert created["keys"][0] == {
        "id": key_ids[0],
        "status": None,
        "storageInfo": {"deviceId": automat_id, "pincode": "482910"},
        "inHistory": False,
    }
    contact = created["contact"]
    assert contact["iloqPersonId"] == "f5ac6bce"
    assert contact["sendEmail"] is True
    assert contact["sendSms"] is False
    assert len(contact["notifications"]) == 8
    assert contact["notifications"]["contractKeysNotReturned"] == {"sms": False, "email": True}
    assert acme.api.get(f"{PATH}/{created['id']}") == created

    def pincodes(session: Any) -> list[Any]:
        return list(
            session.execute(
                select(device_pincodes.c.code, device_pincodes.c.program_first).where(
                    device_pincodes.c.automat_id == automat_id
                )
            )
        )

    assert sorted(container.db.transaction(pincodes)) == [("482910", True), ("773201", True)]

    def kinds(session: Any) -> list[str]:
        from keyautomat.adapters import orm

        return [r.kind for r in session.execute(select(orm.outbox.c.kind)).all()]

    queued = container.db.transaction(kinds)
    assert "contract-end" in queued
    assert "notification" in queued  # contractCreated by email, and reminders


def test_it_accepts_the_unwrapped_body(container: Container, acme: Tenant) -> None:
    automat_id, _ = stocked_automat(container, acme)
    created = acme.api.post(PATH, _default(automat_id)["input"])
    assert len(created["keys"]) == 1
    assert len(created["keys"][0]["storageInfo"]["pincode"]) == 6


def test_it_answers_409_when_the_automat_has_too_few_keys(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    acme.api.post(PATH, _default(automat_id, numberOfKeys=2))
    status, _ = _error(acme, _default(automat_id))
    assert status == 409


def test_non_overlapping_contracts_share_a_key(container: Container, acme: Tenant) -> None:
    automat_id, key_ids = stocked_automat(container, acme, keys=1)
    first = acme.api.post(PATH, _default(automat_id))
    start, end = period(hours_from_now=100)
    second = acme.api.post(PATH, _default(automat_id, start=start, end=end))
    assert first["keys"][0]["id"] == second["keys"][0]["id"] == key_ids[0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"contractType": 4}, "contractType"),
        ({"accessRightIds": None}, "accessRightIds"),
        ({"start": None}, "start"),
        ({"end": None}, "end"),
        ({"start": "2025-06-01T12:00:00"}, "start"),
        ({"end": "2000-01-01T00:00:00.000Z"}, "end"),
        ({"numberOfKeys": 0}, "numberOfKeys"),
        ({"numberOfKeys": None}, "numberOfKeys"),
        ({"pincodes": ["1234", "5678"]}, "pincodes"),
        ({"pincodes": ["12a4"]}, "pincodes.0"),
        ({"pincodes": ["123"]}, "pincodes.0"),
        ({"contact": {"name": "X", "language": "xx"}}, "contact.language"),
        ({"contact": {"name": "X", "email": "nope"}}, "contact.email"),
        ({"keyAutomatId": "999999"}, "keyAutomatId"),
        ({"keyAutomatId": None}, "numberOfKeys"),
    ],
)
def test_it_names_the_field_of_a_bad_request(
    container: Container, acme: Tenant, change: dict[str, Any], field: str
) -> None:
    automat_id, _ = stocked_automat(container, acme)
    body = _default(automat_id)
    body["input"].update(change)
    if change.get("keyAutomatId", "x") is None:
        body["input"].pop("keyAutomatId")
        body["input"]["groupId"] = None
        body["input"]["numberOfKeys"] = None
        body["input"]["keyIds"] = None
    status, message = _error(acme, body)
    assert status == 400
    assert message[0].startswith(f"{field}:") or (
        field == "numberOfKeys" and message[0].startswith("keyAutomatId:")
    ), message


def test_a_pincode_in_use_on_the_automat_is_refused(container: Container, acme: Tenant) -> None:
    automat_id, _ = stocked_automat(container, acme)
    acme.api.post(PATH, _default(automat_id, pincodes=["111111"]))
    status, message = _error(acme, _default(automat_id, pincodes=["111111"]))
    assert status == 400
    assert message == ["pincodes.0: Pincode already in use"]


def _fetch_by_key_ids(container: Container, acme: Tenant) -> tuple[dict[str, Any], list[str], str]:
    """A fetch contract body naming the second of two keys of an automat, the keys, and a
    second automat "B"."""
    _automat_id, key_ids = stocked_automat(container, acme, keys=2)
    other_id, _ = stocked_automat(container, acme, name="B")
    start, _ = period()
    body = {"contractType": 2, "accessRightIds": [RIGHT], "keyIds": [key_ids[1]], "start": start}
    return body, key_ids, other_id


def test_key_ids_locate_the_keys(container: Container, acme: Tenant) -> None:
    body, key_ids, _ = _fetch_by_key_ids(container, acme)
    created = acme.api.post(PATH, {"input": body})
    assert created["keys"][0]["id"] == key_ids[1]
    assert created["end"] is None  # fetch contracts have none (C3)
    assert created["numberOfKeys"] is None
    assert created["keyIds"] == [key_ids[1]]


def test_key_ids_must_be_in_the_named_automat(container: Container, acme: Tenant) -> None:
    body, key_ids, other_id = _fetch_by_key_ids(container, acme)
    status, message = _error(
        acme, {"input": {**body, "keyIds": [key_ids[0]], "keyAutomatId": other_id}}
    )
    assert status == 400
    assert message[0].startswith("keyIds.0:")


def test_a_key_a_fetch_contract_reserves_cannot_be_booked_again(
    container: Container, acme: Tenant
) -> None:
    body, key_ids, _ = _fetch_by_key_ids(container, acme)
    acme.api.post(PATH, {"input": body})
    status, _ = _error(acme, {"input": {**body, "keyIds": [key_ids[1]]}})
    assert status == 409  # reserved by the fetch contract until fetched


def test_an_unknown_key_id_is_refused_naming_it(container: Container, acme: Tenant) -> None:
    body, _, _ = _fetch_by_key_ids(container, acme)
    status, message = _error(acme, {"input": {**body, "keyIds": ["unknown-key"]}})
    assert status == 400
    assert message[0].startswith("keyIds.0:")


def test_a_group_gives_the_automat_with_most_keys(container: Container, acme: Tenant) -> None:
    small, _ = stocked_automat(container, acme, keys=1, name="small")
    big, _ = stocked_automat(container, acme, keys=3, name="big")
    group = acme.api.post("/groups", {"name": "G", "type": 1, "customerId": "g"})
    for automat_id in (small, big):
        acme.api.patch(f"/automats/{automat_id}", {"groups": [group["id"]]})
    body = _default(small)
    body["input"].pop("keyAutomatId")
    body["input"]["groupId"] = group["id"]
    created = acme.api.post(PATH, body)
    assert created["keys"][0]["storageInfo"]["deviceId"] == big
    assert created["groupId"] == group["id"]
    body["input"]["numberOfKeys"] = 5
    assert _error(acme, body)[0] == 409


def _group_of(acme: Tenant, automat_ids: list[str]) -> str:
    group = acme.api.post("/groups", {"name": "Big", "type": 1, "customerId": "big"})
    for automat_id in automat_ids:
        acme.api.patch(f"/automats/{automat_id}", {"groups": [group["id"]]})
    return str(group["id"])


def _block(container: Container, acme: Tenant, key_ids: list[str]) -> None:
    def work(session: Session) -> None:
        session.execute(
            insert(iloq_keys),
            [
                {
                    "id": key_id,
                    "organization_unit_id": acme.unit_id,
                    "name": key_id[:7],
                    "blocked": True,
                    "created_at": container.clock.now(),
                }
                for key_id in key_ids
            ],
        )

    container.db.transaction(work)


def test_a_group_larger_than_the_shortlist_still_gives_the_automat_with_most_keys(
    container: Container, acme: Tenant
) -> None:
    others = [stocked_automat(container, acme, keys=2, name=f"o{i}")[0] for i in range(SHORTLIST)]
    best, _ = stocked_automat(container, acme, keys=3, name="best")
    assert best > max(others)  # every tie-break on the id would go against it
    body = {"input": {**_default(best)["input"], "groupId": _group_of(acme, [best, *others])}}
    body["input"].pop("keyAutomatId")
    created = acme.api.post(PATH, body)
    assert created["keys"][0]["storageInfo"]["deviceId"] == best


def test_blocked_keys_cannot_push_the_best_automat_out_of_the_shortlist(
    container: Container, acme: Tenant
) -> None:
    # SHORTLIST automats with three keys of which two are blocked (one usable each)
    # rank above, by their kept counts, one automat with three usable keys that is
    # last on every tie-break; the blocked keys must not hide it.
    crippled = []
    for i in range(SHORTLIST):
        automat_id, key_ids = stocked_automat(container, acme, keys=3, name=f"c{i}")
        _block(container, acme, key_ids[:2])
        crippled.append(automat_id)
    best, _ = stocked_automat(container, acme, keys=3, name="best")
    assert best > max(crippled)
    body = {"input": {**_default(best)["input"], "groupId": _group_of(acme, [*crippled, best])}}
    body["input"].pop("keyAutomatId")
    created = acme.api.post(PATH, body)
    assert created["keys"][0]["storageInfo"]["deviceId"] == best


def test_keys_out_on_a_contract_do_not_hide_an_automat_from_the_shortlist(
    container: Container, acme: Tenant
) -> None:
    # SHORTLIST automats with one key each, and one with four of which two are out on
    # a contract ending in an hour: it has the most keys free for a later period.
    others = [stocked_automat(container, acme, keys=1, name=f"o{i}")[0] for i in range(SHORTLIST)]
    best, key_ids = stocked_automat(container, acme, keys=4, name="best")
    start, _ = period(hours_from_now=-1)
    soon = iso(datetime.now(UTC) + timedelta(hours=1))
    acme.api.post(PATH, _default(best, numberOfKeys=2, keyIds=key_ids[:2], start=start, end=soon))
    container.db.transaction(
        lambda s: s.execute(
            update(orm.lockers)
            .where(orm.lockers.c.key_id.in_(key_ids[:2]))
            .values(is_key_inside=False)
        )
    )
    later, after = period(hours_from_now=2, length_hours=3)
    body = _default(best, start=later, end=after)
    body["input"]["groupId"] = _group_of(acme, [best, *others])
    body["input"].pop("keyAutomatId")
    assert acme.api.post(PATH, body)["keys"][0]["storageInfo"]["deviceId"] == best


def test_a_group_without_a_usable_automat_is_a_conflict(container: Container, acme: Tenant) -> None:
    grant_access_right(container, acme.unit_id)
    group = acme.api.post("/groups", {"name": "Empty", "type": 1, "customerId": "empty"})
    start, end = period()
    body = {
        "contractType": 1,
        "accessRightIds": [RIGHT],
        "numberOfKeys": 1,
        "groupId": group["id"],
        "start": start,
        "end": end,
    }
    assert _error(acme, {"input": body}) == (
        409,
        "The group has no active automat that can program iLOQ keys",
    )
    back = {"contractType": 3, "keyIds": ["k-1"], "groupId": group["id"]}
    assert _error(acme, {"input": back}) == (
        409,
        "The group has no active automat that can take the keys",
    )


def test_a_return_contract_reserves_an_empty_locker_for_a_key_nobody_knows(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1, empty=1)
    body = {"contractType": 3, "keyIds": ["locksmith-key-1"], "keyAutomatId": automat_id}
    created = acme.api.post(PATH, {"input": body})
    assert created["accessRightIds"] is None
    assert created["end"] is None
    assert created["numberOfKeys"] is None
    assert created["keys"][0]["id"] == "locksmith-key-1"
    assert created["keys"][0]["storageInfo"]["deviceId"] == automat_id


def test_a_return_contract_without_a_free_empty_locker_is_a_conflict(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1, empty=1)
    body = {"contractType": 3, "keyIds": ["locksmith-key-1"], "keyAutomatId": automat_id}
    acme.api.post(PATH, {"input": body})
    status, _ = _error(acme, {"input": {**body, "keyIds": ["locksmith-key-2"]}})
    assert status == 409  # the only empty locker is taken


def test_a_return_contract_needs_key_ids(container: Container, acme: Tenant) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1, empty=1)
    status, message = _error(acme, {"input": {"contractType": 3, "keyAutomatId": automat_id}})
    assert status == 400
    assert message[0].startswith("keyIds:")


def _without_ids(contract: dict[str, Any]) -> dict[str, Any]:
    """A created contract with what differs by request (ids, pincodes, times) masked."""
    masked = {k: v for k, v in contract.items() if k not in {"id", "keyIds", "created", "start"}}
    masked["keys"] = [
        {**key, "id": "*", "storageInfo": {**key["storageInfo"], "pincode": "*", "lockerIndex": 0}}
        for key in contract["keys"]
    ]
    return masked


def test_a_return_contract_answers_alike_for_another_organizations_key_and_an_unknown_one(
    container: Container, acme: Tenant, operator: Tenant
) -> None:
    theirs = "0b0e3c4d-1111-4222-8333-444455556666"
    container.db.transaction(
        lambda s: registry.register_key(
            s, organization_unit_id=operator.unit_id, key_id=theirs, now=container.clock.now()
        )
    )
    automat_id, _ = stocked_automat(container, acme, keys=0, empty=2)
    body = {"contractType": 3, "keyAutomatId": automat_id}
    foreign = acme.api.post(PATH, {"input": {**body, "keyIds": [theirs]}})
    unknown = acme.api.post(PATH, {"input": {**body, "keyIds": ["7c813082-nobody-knows"]}})
    assert _without_ids(foreign) == _without_ids(unknown)
    owned = container.db.transaction(lambda s: s.get(IloqKey, theirs))
    assert owned is not None
    assert owned.organization_unit_id == operator.unit_id


def test_naming_an_unknown_key_in_a_return_contract_does_not_claim_it_for_the_caller(
    container: Container, acme: Tenant, operator: Tenant
) -> None:
    squatted = "7c813082-8786-4a71-a3b5-30bf10004fe1"
    automat_id, _ = stocked_automat(container, acme, keys=0, empty=1)
    body = {"contractType": 3, "keyIds": [squatted], "keyAutomatId": automat_id}
    acme.api.post(PATH, {"input": body})
    assert container.db.transaction(lambda s: s.get(IloqKey, squatted)) is None
    # Its real owner registers it and returns it into its own automat, unhindered.
    container.db.transaction(
        lambda s: registry.register_key(
            s, organization_unit_id=operator.unit_id, key_id=squatted, now=container.clock.now()
        )
    )
    own_automat, _ = stocked_automat(container, operator, keys=0, empty=1, name="O1")
    mine = operator.api.post(PATH, {"input": {**body, "keyAutomatId": own_automat}})
    assert mine["keys"][0]["id"] == squatted


def test_lists_filter_ongoing_ended_and_future(container: Container, acme: Tenant) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    ongoing = acme.api.post(PATH, _default(automat_id))
    start, end = period(hours_from_now=200)
    future = acme.api.post(PATH, _default(automat_id, start=start, end=end))
    everything = acme.api.get(PATH)
    assert [c["id"] for c in everything["data"]] == [ongoing["id"], future["id"]]
    assert everything["hasNext"] is False
    assert everything["after"] == "2"
    assert [c["id"] for c in acme.api.get(f"{PATH}?future=true")["data"]] == [future["id"]]
    assert [c["id"] for c in acme.api.get(f"{PATH}?ongoing=true")["data"]] == [ongoing["id"]]
    assert acme.api.get(f"{PATH}?ended=true")["data"] == []
    assert acme.api.get(f"{PATH}?ongoing=false&future=false")["data"] == []
    assert len(acme.api.get(f"{PATH}?ongoing=true&future=true")["data"]) == 2
    page = acme.api.get(f"{PATH}?limit=1")
    assert page["hasNext"] is True
    assert page["after"] == "1"


def test_other_units_do_not_see_a_contract(
    container: Container, acme: Tenant, operator: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme)
    created = acme.api.post(PATH, _default(automat_id))
    assert _error(operator, None, "GET", f"{PATH}/{created['id']}")[0] == 404
    assert _error(acme, None, "GET", f"{PATH}/000000000000000000000000")[0] == 404
    assert operator.api.get(PATH)["data"] == []


def test_patch_changes_the_period(container: Container, acme: Tenant) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    first = acme.api.post(PATH, _default(automat_id))
    new_start, new_end = period(hours_from_now=-2, length_hours=10)
    patched = acme.api.patch(f"{PATH}/{first['id']}", {"start": new_start, "end": new_end})
    assert patched["end"] == new_end
    assert patched["start"] == new_start


def test_patch_refuses_an_end_overlapping_the_next_contract_for_the_key(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    first = acme.api.post(PATH, _default(automat_id))
    start, end = period(hours_from_now=100)
    second = acme.api.post(PATH, _default(automat_id, start=start, end=end))
    status, message = _error(acme, {"end": second["end"]}, "PATCH", f"{PATH}/{first['id']}")
    assert status == 409
    assert message == "Overlapping contract"


def test_patch_refuses_an_end_at_the_start_naming_the_end(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    first = acme.api.post(PATH, _default(automat_id))
    new_start, new_end = period(hours_from_now=-2, length_hours=10)
    acme.api.patch(f"{PATH}/{first['id']}", {"start": new_start, "end": new_end})
    status, message = _error(acme, {"end": new_start}, "PATCH", f"{PATH}/{first['id']}")
    assert status == 400
    assert message[0].startswith("end:")


def test_patch_refuses_an_end_long_past(container: Container, acme: Tenant) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    first = acme.api.post(PATH, _default(automat_id))
    status, _ = _error(acme, {"end": "2001-01-01T00:00:00.000Z"}, "PATCH", f"{PATH}/{first['id']}")
    assert status == 400


def test_patch_replaces_the_contact_whole(container: Container, acme: Tenant) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    first = acme.api.post(PATH, _default(automat_id))
    contact = {"name": "New Person", "phoneNumber": "+358401234567", "sendSms": True}
    patched = acme.api.patch(f"{PATH}/{first['id']}", {"contact": contact})
    assert patched["contact"]["name"] == "New Person"
    assert patched["contact"]["email"] is None  # replaced whole
    assert patched["contact"]["notifications"]["contractUpdated"] == {"sms": True, "email": False}


def test_delete_removes_pincodes_and_frees_the_key(container: Container, acme: Tenant) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=1)
    created = acme.api.post(PATH, _default(automat_id))
    acme.api.delete(f"{PATH}/{created['id']}")
    assert _error(acme, None, "GET", f"{PATH}/{created['id']}")[0] == 404

    def live(session: Any) -> int:
        return len(
            session.execute(
                select(device_pincodes.c.id).where(device_pincodes.c.removed.is_(False))
            ).all()
        )

    assert container.db.transaction(live) == 0
    acme.api.post(PATH, _default(automat_id))  # the key is free again

    def reminders(session: Any) -> list[str]:
        from keyautomat.adapters import orm

        rows = session.execute(
            select(orm.outbox.c.status).where(orm.outbox.c.ref == f"contract:{created['id']}:end")
        ).all()
        return [r.status for r in rows]

    assert container.db.transaction(reminders) == [outbox.CANCELLED]


def test_uninstall_is_refused_while_a_contract_uses_the_automat(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme)
    acme.api.post(PATH, _default(automat_id))
    status, message = _error(acme, None, "POST", f"/automats/{automat_id}/uninstall")
    assert status == 400
    assert "still uses this automat" in message[0]
