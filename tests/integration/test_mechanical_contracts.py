"""Mechanical key contracts over the signed API (docs/mechanical-contracts.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import Result, func, insert, inspect, literal_column, select, table, text
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters import orm
from keyautomat.adapters.orm_devices import device_pincodes
from keyautomat.adapters.orm_mechanical import mechanical_contracts, strong_auth_units
from keyautomat.bootstrap import Container
from keyautomat.client import ApiError
from keyautomat.config import Settings
from keyautomat.contracts.progress import evaluate_end
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain import webhooks as wh
from keyautomat.domain.notifications import ContractKind, ContractView
from keyautomat.domain.notifications import ContractType as NotifyContractType
from keyautomat.entrypoints.worker import OutboxWorker
from keyautomat.service_layer import notifications, webhooks
from keyautomat.service_layer.clock import ManualClock
from tests.conftest import Tenant, make_tenant
from tests.contract_helpers import iso
from tests.devices import admin_client, install
from tests.integration.webhook_support import drain

PATH = "/mechanical/keycontracts"
CONTACT = {
    "name": "John Doe",
    "email": "john.doe@example.com",
    "sendSms": False,
    "sendEmail": False,
    "language": "en",
}
# A contact who is sent the signature link (the only place its token is kept).
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").decode()
SIGNER = {**CONTACT, "notifications": {"contractSignatureRequested": {"email": True}}}


def _times(hours_from_now: float = -1, length: float = 48) -> tuple[str, str]:
    start = datetime.now(UTC) + timedelta(hours=hours_from_now)
    return iso(start), iso(start + timedelta(hours=length))


def device_keys(container: Container, tenant: Tenant, *ids: str, shared: bool = False) -> str:
    """A key30 automat with ``ids`` registered and inside lockers 0.."""
    automat = install(tenant, product="key30", name="K30")
    for key_id in ids:
        tenant.api.post(
            "/mechanical/keys",
            {
                "id": key_id,
                "selectedStorage": {"automatId": automat["id"]},
                "away": True,
                "shared": shared,
            },
        )

    def work(session: Session) -> None:
        session.execute(
            insert(orm.lockers),
            [
                {
                    "automat_id": automat["id"],
                    "locker_index": i,
                    "is_key_inside": i < len(ids),
                    "key_id": ids[i] if i < len(ids) else None,
                }
                for i in range(len(ids) + 2)
            ],
        )

    container.db.transaction(work)
    return str(automat["id"])


def manual_key(tenant: Tenant, key_id: str, place: str = "Shelf 1, Drawer 1") -> None:
    tenant.api.post(
        "/mechanical/keys",
        {"id": key_id, "selectedStorage": {"manualStorageInfo": place}, "away": False},
    )


def create(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    start, end = _times()
    body = {"start": start, "end": end, "contact": CONTACT, **fields}
    created: dict[str, Any] = tenant.api.post(PATH, body)
    return created


def status_of(call: Any) -> int:
    with pytest.raises(ApiError) as info:
        call()
    return info.value.status_code


def test_pms_booking_flow(container: Container, acme: Tenant) -> None:
    device_keys(container, acme, "room-101-key", "room-102-key")
    keys = acme.api.get("/mechanical/keys?limit=100&selectedStorage=1")["data"]
    assert {k["id"] for k in keys} == {"room-101-key", "room-102-key"}
    contract = create(acme, keys=[{"id": keys[0]["id"]}], freeLockerAfterFetch=False)
    pincode = contract["keys"][0]["storageInfo"]["pincode"]
    assert pincode.isdigit()
    assert len(contract["id"]) == 24
    assert contract["userVerification"] == "0"
    assert set(contract["contact"]["notifications"]) >= {"contractCreated", "contractUpdated"}
    new_end = iso(datetime.now(UTC) + timedelta(days=5))
    patched = acme.api.patch(f"{PATH}/{contract['id']}", {"end": new_end})
    assert patched["end"] == new_end
    assert patched["keys"][0]["storageInfo"]["pincode"] == pincode
    acme.api.delete(f"{PATH}/{contract['id']}")
    assert status_of(lambda: acme.api.get(f"{PATH}/{contract['id']}")) == 404


@pytest.fixture
def keys_a_b_and_m(container: Container, acme: Tenant) -> str:
    """Keys "a" and "b" in a key30 automat (its id), and "m" in a manual storage."""
    automat_id = device_keys(container, acme, "a", "b")
    manual_key(acme, "m")
    return automat_id


def booking_1(acme: Tenant) -> dict[str, Any]:
    """Contract "booking-1" on key "a", with the caller's code 4321."""
    return create(
        acme,
        id="booking-1",
        keys=[{"id": "a", "storageInfo": {"pincode": "4321"}}],
        userVerification=0,
    )


def test_a_contract_needs_a_contact(keys_a_b_and_m: str, acme: Tenant) -> None:
    start, _end = _times()
    assert status_of(lambda: acme.api.post(PATH, {"start": start, "keys": [{"id": "a"}]})) == 400


def test_automat_and_manual_storage_keys_cannot_be_mixed(keys_a_b_and_m: str, acme: Tenant) -> None:
    assert status_of(lambda: create(acme, keys=[{"id": "a"}, {"id": "m"}])) == 400


def test_an_unknown_key_is_refused(keys_a_b_and_m: str, acme: Tenant) -> None:
    assert status_of(lambda: create(acme, keys=[{"id": "nope"}])) == 400


def test_strong_verification_needs_the_unit_to_enable_strong_authentication(
    container: Container, keys_a_b_and_m: str, acme: Tenant
) -> None:
    assert status_of(lambda: create(acme, keys=[{"id": "a"}], userVerification=2)) == 400

    def enable(session: Session) -> None:
        session.execute(insert(strong_auth_units).values(organization_unit_id=acme.unit_id))

    container.db.transaction(enable)
    strong = create(acme, keys=[{"id": "b"}], userVerification=2)
    assert strong["userVerification"] == "2"


def test_an_unknown_verification_is_refused(keys_a_b_and_m: str, acme: Tenant) -> None:
    assert status_of(lambda: create(acme, keys=[{"id": "a"}], userVerification="3")) == 400


def test_the_callers_id_and_code_are_kept_and_the_verification_is_answered_as_a_string(
    keys_a_b_and_m: str, acme: Tenant
) -> None:
    first = booking_1(acme)
    assert first["id"] == "booking-1"
    assert first["userVerification"] == "0"
    assert first["keys"][0]["storageInfo"] == {"pincode": "4321", "automatId": keys_a_b_and_m}


def test_an_id_in_use_is_a_conflict(keys_a_b_and_m: str, acme: Tenant) -> None:
    booking_1(acme)  # F5
    assert status_of(lambda: create(acme, id="booking-1", keys=[{"id": "b"}])) == 409


def test_a_contract_overlapping_another_for_its_key_is_a_conflict(
    keys_a_b_and_m: str, acme: Tenant
) -> None:
    booking_1(acme)  # F6
    assert status_of(lambda: create(acme, keys=[{"id": "a"}])) == 409


def test_a_code_in_use_on_the_same_automat_is_refused(keys_a_b_and_m: str, acme: Tenant) -> None:
    booking_1(acme)
    clash = [{"id": "b", "storageInfo": {"pincode": "4321"}}]
    assert status_of(lambda: create(acme, keys=clash)) == 400


def test_a_future_manual_storage_contract_needs_pick_up_info(
    keys_a_b_and_m: str, acme: Tenant
) -> None:
    later_start, later_end = _times(24)  # F4
    assert (
        status_of(
            lambda: acme.api.post(
                PATH,
                {"start": later_start, "end": later_end, "contact": CONTACT, "keys": [{"id": "m"}]},
            )
        )
        == 400
    )


def test_a_manual_storage_contract_has_no_locker_to_free_after_the_fetch(
    keys_a_b_and_m: str, acme: Tenant
) -> None:
    assert status_of(lambda: create(acme, keys=[{"id": "m"}], freeLockerAfterFetch=True)) == 400


def test_a_future_manual_storage_contract_with_pick_up_info_shows_where_the_key_is(
    keys_a_b_and_m: str, acme: Tenant
) -> None:
    later_start, later_end = _times(24)
    manual = acme.api.post(
        PATH,
        {
            "start": later_start,
            "end": later_end,
            "contact": CONTACT,
            "keys": [{"id": "m"}],
            "pickUpInfoForManualStorageKeys": "Desk",
        },
    )
    assert manual["keys"][0]["storageInfo"] == {"manualStorageInfo": "Shelf 1, Drawer 1"}
    assert manual["keys"][0]["status"] is None
    assert manual["keys"][0]["inHistory"] is False


def test_shared_keys_may_overlap(container: Container, acme: Tenant) -> None:
    device_keys(container, acme, "s", shared=True)
    create(acme, keys=[{"id": "s"}])
    create(acme, keys=[{"id": "s"}])


def test_the_list_filters_by_period_and_key_and_pages(container: Container, acme: Tenant) -> None:
    device_keys(container, acme, "a", "b")
    now_one = create(acme, keys=[{"id": "a"}])
    later_start, later_end = _times(100)
    later = acme.api.post(
        PATH, {"start": later_start, "end": later_end, "contact": CONTACT, "keys": [{"id": "b"}]}
    )

    def ids(q: str) -> list[str]:
        return [c["id"] for c in acme.api.get(f"{PATH}{q}")["data"]]

    assert ids("") == [now_one["id"], later["id"]]
    assert ids("?future=true") == [later["id"]]
    assert ids("?ongoing=true") == [now_one["id"]]
    assert ids("?keyId=b") == [later["id"]]
    assert ids("?limit=1") == [now_one["id"]]


def test_patch_refuses_an_end_overlapping_another_contract_for_the_key(
    container: Container, acme: Tenant
) -> None:
    device_keys(container, acme, "a")
    now_one = create(acme, keys=[{"id": "a"}])
    later_start, later_end = _times(100)
    clash = create(acme, keys=[{"id": "a"}], start=later_start, end=later_end)
    overlap = {"end": iso(datetime.now(UTC) + timedelta(hours=200))}
    assert status_of(lambda: acme.api.patch(f"{PATH}/{now_one['id']}", overlap)) == 409
    assert clash["id"]


def test_patch_replaces_the_contact_whole_and_changes_the_verification(
    container: Container, acme: Tenant
) -> None:
    device_keys(container, acme, "a")
    now_one = create(acme, keys=[{"id": "a"}])
    contact = {"name": "Jane Roe", "email": "jane@example.com"}
    changed = acme.api.patch(f"{PATH}/{now_one['id']}", {"contact": contact, "userVerification": 1})
    assert changed["contact"]["name"] == "Jane Roe"
    assert changed["userVerification"] == "1"


def test_patch_refuses_strong_verification_the_unit_has_not_enabled(
    container: Container, acme: Tenant
) -> None:
    device_keys(container, acme, "a")
    now_one = create(acme, keys=[{"id": "a"}])
    assert (
        status_of(lambda: acme.api.patch(f"{PATH}/{now_one['id']}", {"userVerification": "2"}))
        == 400
    )


def test_an_unknown_contract_is_not_found(acme: Tenant) -> None:
    assert status_of(lambda: acme.api.get(f"{PATH}/unknown")) == 404


def test_manual_storage_handover_and_return(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    manual_key(acme, "m")
    contract = create(acme, keys=[{"id": "m"}])
    admin = admin_client(acme, http)
    base = f"/admin{PATH}/{contract['id']}/keys/m"
    out = admin.post(f"{base}/handover", {})
    assert out["keys"][0]["status"] == "key-fetched"
    assert acme.api.get("/mechanical/keys/m")["status"] == {"available": False}
    assert status_of(lambda: acme.api.delete(f"{PATH}/{contract['id']}")) == 400
    back = admin.post(f"{base}/return", {})
    assert back["keys"][0]["status"] == "key-returned"
    assert acme.api.get("/mechanical/keys/m")["storage"] == {
        "manualStorageInfo": "Shelf 1, Drawer 1"
    }
    assert status_of(lambda: admin.post(f"{base}/return", {})) == 400


def test_key_delete_hooks_and_target_storage(container: Container, acme: Tenant) -> None:
    automat_id = device_keys(container, acme, "a")
    create(acme, keys=[{"id": "a"}])
    assert acme.api.get("/mechanical/keys/a")["targetStorage"] == {"automatId": automat_id}
    assert status_of(lambda: acme.api.delete("/mechanical/keys/a", {})) == 400
    acme.api.delete("/mechanical/keys/a", {"deleteActiveContracts": True})
    assert acme.api.get(PATH)["data"] == []


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The development sink writes what is sent under this test's directory."""
    return settings.model_copy(update={"notify_sink_dir": tmp_path / "sink"})


def sent_signature_token(container: Container) -> str:
    """The token of the newest signature link queued for the contact (the database keeps
    only its hash, the queued message the link sealed with the container's key)."""
    payloads = container.db.transaction(
        lambda s: [
            r.payload
            for r in s.execute(select(orm.outbox.c.kind, orm.outbox.c.payload))
            if r.kind == "notification"
        ]
    )
    links = [
        notifications.unsealed_view(json.loads(p), container.secrets).signature_link or ""
        for p in payloads
    ]
    tokens: list[str] = re.findall(r"/sign/([A-Za-z0-9_-]+)", " ".join(links))
    return tokens[-1]


def test_no_table_holds_the_signature_token_yet_the_sent_message_carries_a_working_link(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    device_keys(container, acme, "a")
    create(acme, keys=[{"id": "a"}], userVerification="1", contact=SIGNER)
    drain(OutboxWorker(container.db, container.dispatcher, container.clock))
    sink = container.settings.notify_sink_dir / "notifications.jsonl"
    sent = [json.loads(line) for line in sink.read_text().splitlines()]
    tokens = re.findall(r"/sign/([A-Za-z0-9_-]+)", " ".join(m["text"] for m in sent))
    assert len(set(tokens)) == 1
    token = tokens[0]
    assert http.get(f"/sign/{token}").status_code == 200

    def cells(session: Session) -> list[str]:
        def rows_of(name: str) -> Result[Any]:
            # ``SELECT *`` of a table reflected by name: no column types to carry.
            return session.execute(select(literal_column("*")).select_from(table(name)))

        names = inspect(session.connection()).get_table_names()
        return [
            str(value)
            for name in names
            for row in rows_of(name)
            for value in row
            if value is not None
        ]

    stored = container.db.transaction(cells)
    assert stored  # the scan did read the database
    assert not [cell for cell in stored if token in cell]


def test_a_national_phone_number_is_kept_when_no_sms_is_asked_for_and_refused_when_it_is(
    container: Container, acme: Tenant
) -> None:
    device_keys(container, acme, "a", "b")
    national = {**CONTACT, "phoneNumber": "040 123 4567"}
    kept = create(acme, keys=[{"id": "a"}], contact=national)
    assert kept["contact"]["phoneNumber"] == "040 123 4567"
    refused = acme.api.request(
        "POST",
        PATH,
        {"start": _times()[0], "contact": {**national, "sendSms": True}, "keys": [{"id": "b"}]},
    )
    assert refused.status_code == 400
    assert refused.json()["message"] == [
        "contact.phoneNumber: must be in international format, e.g. +358401234567"
    ]


def test_signature_gates_the_pincode(container: Container, acme: Tenant, http: TestClient) -> None:
    device_keys(container, acme, "a")
    contract = create(acme, keys=[{"id": "a"}], userVerification="1", contact=SIGNER)

    def signed_at(session: Session) -> Any:
        return session.scalar(select(mechanical_contracts.c.signed_at))

    def codes(session: Session) -> int:
        return len(session.execute(select(device_pincodes.c.id)).all())

    assert container.db.transaction(codes) == 0  # not on the automat before the signature
    token = sent_signature_token(container)
    assert container.db.transaction(signed_at) is None
    page = http.get(f"/sign/{token}")
    assert page.status_code == 200
    assert "Sign" in page.text
    assert http.get("/sign/wrong").status_code == 404
    done = http.post(
        f"/sign/{token}",
        content=b"name=John+Doe",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    assert container.db.transaction(signed_at) is not None
    assert container.db.transaction(codes) == 1
    assert contract["userVerification"] == "1"


def test_a_signature_form_with_nul_is_refused_naming_the_field_and_signs_nothing(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    device_keys(container, acme, "a")
    create(acme, keys=[{"id": "a"}], userVerification="1", contact=SIGNER)
    token = sent_signature_token(container)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    for form, field in (
        (b"name=a%00b", "name"),
        (b"name=Jo&signature=data%3Aimage%2F%00", "signature"),
    ):
        response = http.post(f"/sign/{token}", content=form, headers=headers)
        assert response.status_code == 400, form
        assert f"{field}: must not contain NUL characters" in response.text
    signed_at = container.db.transaction(
        lambda s: s.scalar(select(mechanical_contracts.c.signed_at))
    )
    assert signed_at is None


def test_end_marks_keys_not_fetched(container: Container, acme: Tenant) -> None:
    device_keys(container, acme, "a")
    contract = create(acme, keys=[{"id": "a"}])

    def end(session: Session) -> int:
        from keyautomat.adapters.orm_contracts import contracts

        internal = session.scalar(select(contracts.c.id))
        assert internal is not None
        return evaluate_end(SqlContractStore(session), internal, datetime.now(UTC))

    def booked(session: Session) -> int:
        return int(session.scalar(select(func.sum(orm.automat_stock.c.keys_booked))) or 0)

    assert container.db.transaction(booked) == 1  # what the group ranking reads
    assert container.db.transaction(end) == 1
    assert container.db.transaction(end) == 0
    key = acme.api.get(f"{PATH}/{contract['id']}")["keys"][0]
    assert (key["status"], key["inHistory"]) == ("key-not-fetched", True)
    assert container.db.transaction(booked) == 0


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Webhook events as published inside the transactions (no subscription needed)."""
    events: list[tuple[str, dict[str, Any]]] = []

    def capture(session: Session, **kwargs: Any) -> list[str]:
        events.append((str(kwargs["event_type"]), kwargs["data"]))
        return []

    monkeypatch.setattr(webhooks, "publish", capture)
    return events


def test_manual_keys_publish_without_device_fields(
    container: Container,
    acme: Tenant,
    http: TestClient,
    published: list[tuple[str, dict[str, Any]]],
) -> None:
    manual_key(acme, "m")
    contract = create(acme, id="stay-7", keys=[{"id": "m"}])
    update = [d for t, d in published if t == wh.EventType.CONTRACT_UPDATE]
    assert update == [
        {
            "contractType": "default",
            "contractId": "stay-7",
            "contractObjectId": update[0]["contractObjectId"],
            "start": contract["start"],
            "end": contract["end"],
            "keyId": "m",
        }
    ]
    admin_client(acme, http).post(f"/admin{PATH}/stay-7/keys/m/handover", {})
    status = [d for t, d in published if t == wh.EventType.KEY_STATUS]
    assert status[0]["state"] == "key-fetched"
    assert status[0]["storageType"] == "manualStorage"
    assert "deviceId" not in status[0]


def test_device_keys_publish_pincode_and_device(
    container: Container, acme: Tenant, published: list[tuple[str, dict[str, Any]]]
) -> None:
    automat_id = device_keys(container, acme, "a")
    on = {"email": True}
    contact = {
        "name": "John Doe",
        "email": "john.doe@example.com",
        "notifications": {"contractCreated": on, "contractSignatureRequested": on},
    }
    contract = create(acme, keys=[{"id": "a"}], userVerification="1", contact=contact)
    update = [d for t, d in published if t == wh.EventType.CONTRACT_UPDATE]
    assert update[0]["deviceId"] == automat_id
    assert update[0]["pincode"] == contract["keys"][0]["storageInfo"]["pincode"]

    def queued(session: Session) -> list[str]:
        rows = session.execute(select(orm.outbox.c.kind, orm.outbox.c.payload)).all()
        return [r.payload for r in rows if r.kind == "notification"]

    payloads = " ".join(container.db.transaction(queued))
    assert "contractCreated" in payloads
    assert "contractSignatureRequested" in payloads
    assert notifications.SEALED_LINK in payloads
    assert "/sign/" not in payloads  # the link is queued encrypted


def test_the_shared_end_job_evaluates_mechanical_contracts(
    container: Container, acme: Tenant
) -> None:
    manual_key(acme, "m")
    start = datetime.now(UTC) - timedelta(hours=1)
    end = datetime.now(UTC) + timedelta(seconds=1)
    contract = acme.api.post(
        PATH, {"start": iso(start), "end": iso(end), "contact": CONTACT, "keys": [{"id": "m"}]}
    )
    # The worker's clock passes the end: the job is due, without waiting for it.
    drain(OutboxWorker(container.db, container.dispatcher, ManualClock(end + timedelta(seconds=1))))
    key = acme.api.get(f"{PATH}/{contract['id']}")["keys"][0]
    assert (key["status"], key["inHistory"]) == ("key-not-fetched", True)


def test_ids_are_per_root_organization_and_contracts_stay_in_their_unit(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    other = make_tenant(container, http, name="Other Housing")
    manual_key(acme, "m")
    manual_key(other, "m")
    create(acme, id="stay-1", keys=[{"id": "m"}])
    assert status_of(lambda: other.api.get(f"{PATH}/stay-1")) == 404
    assert other.api.get(PATH)["data"] == []
    assert create(other, id="stay-1", keys=[{"id": "m"}])["id"] == "stay-1"


def test_a_contact_without_a_name_is_refused(acme: Tenant) -> None:
    manual_key(acme, "m")
    assert status_of(lambda: create(acme, keys=[{"id": "m"}], contact={"email": "x@y.fi"})) == 400


def test_a_drawn_signature_is_stored(container: Container, acme: Tenant, http: TestClient) -> None:
    device_keys(container, acme, "a")
    create(acme, keys=[{"id": "a"}], userVerification=1, contact=SIGNER)
    token = sent_signature_token(container)
    assert "<canvas" in http.get(f"/sign/{token}").text
    body = b"name=Jane&signature=" + quote(PNG).encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert http.post(f"/sign/{token}", content=body, headers=headers).status_code == 200
    row = container.db.transaction(
        lambda s: s.execute(
            select(mechanical_contracts.c.signature_name, mechanical_contracts.c.signature_data)
        ).first()
    )
    assert row is not None
    assert tuple(row) == ("Jane", PNG)
    assert http.post(f"/sign/{token}", content=b"name=", headers=headers).status_code == 200


def refusal(call: Any) -> tuple[int, str]:
    """The status and the error text (which names the offending field) of a refused call."""
    with pytest.raises(ApiError) as info:
        call()
    return info.value.status_code, str(info.value)


def test_patch_start_and_verification_are_frozen_once_a_key_is_fetched(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    manual_key(acme, "m")
    contract = create(acme, keys=[{"id": "m"}])
    path = f"{PATH}/{contract['id']}"
    admin_client(acme, http).post(f"/admin{path}/keys/m/handover", {})
    new_start = iso(datetime.now(UTC) - timedelta(hours=2))
    status, text = refusal(lambda: acme.api.patch(path, {"start": new_start}))
    assert status == 400
    assert "start" in text
    status, text = refusal(lambda: acme.api.patch(path, {"userVerification": "1"}))
    assert status == 400
    assert "userVerification" in text
    # the same values, and other fields, may still be sent
    same = acme.api.patch(path, {"start": contract["start"], "userVerification": "0"})
    assert same["start"] == contract["start"]
    later = iso(datetime.now(UTC) + timedelta(days=4))
    assert acme.api.patch(path, {"end": later})["end"] == later


def test_patch_verification_is_frozen_once_signed(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    device_keys(container, acme, "a")
    contract = create(acme, keys=[{"id": "a"}], userVerification="1", contact=SIGNER)
    path = f"{PATH}/{contract['id']}"
    token = sent_signature_token(container)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert http.post(f"/sign/{token}", content=b"name=John", headers=headers).status_code == 200
    status, text = refusal(lambda: acme.api.patch(path, {"userVerification": "0"}))
    assert status == 400
    assert "userVerification" in text
    assert acme.api.get(path)["userVerification"] == "1"


def test_pick_up_info_is_refused_on_device_key_contracts(
    container: Container, acme: Tenant
) -> None:
    device_keys(container, acme, "a", "b")
    status, text = refusal(
        lambda: create(acme, keys=[{"id": "a"}], pickUpInfoForManualStorageKeys="Desk")
    )
    assert status == 400
    assert "pickUpInfoForManualStorageKeys" in text
    contract = create(acme, keys=[{"id": "b"}])
    path = f"{PATH}/{contract['id']}"
    change = {"pickUpInfoForManualStorageKeys": "Desk"}
    status, text = refusal(lambda: acme.api.patch(path, change))
    assert status == 400
    assert "pickUpInfoForManualStorageKeys" in text
    assert acme.api.get(path)["pickUpInfoForManualStorageKeys"] is None


@pytest.mark.parametrize(
    ("storage_info", "field"),
    [
        ({"automatId": "x", "manualStorageInfo": "Shelf"}, "keys.0.storageInfo"),
        ({"pincode": "1234", "manualStorageInfo": "Shelf"}, "keys.0.storageInfo"),
        ("Shelf 1", "keys.0.storageInfo"),
        (["x"], "keys.0.storageInfo"),
        ({"automatId": 7}, "keys.0.storageInfo.automatId"),
        ({"automatId": ""}, "keys.0.storageInfo.automatId"),
        ({"pincode": 1234}, "keys.0.storageInfo.pincode"),
        ({"pincode": "12ab"}, "keys.0.storageInfo.pincode"),
        ({"pincode": "123"}, "keys.0.storageInfo.pincode"),
        ({"manualStorageInfo": 5}, "keys.0.storageInfo.manualStorageInfo"),
        ({"manualStorageInfo": "  "}, "keys.0.storageInfo.manualStorageInfo"),
    ],
)
def test_malformed_storage_info_is_refused_naming_the_field(
    container: Container, acme: Tenant, storage_info: Any, field: str
) -> None:
    device_keys(container, acme, "a")
    status, text = refusal(lambda: create(acme, keys=[{"id": "a", "storageInfo": storage_info}]))
    assert status == 400
    assert field in text
    assert acme.api.get(PATH)["data"] == []


def test_the_database_keeps_only_a_hash_of_the_signature_token(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    device_keys(container, acme, "a")
    create(acme, keys=[{"id": "a"}], userVerification="1", contact=SIGNER)
    token = sent_signature_token(container)
    stored = container.db.transaction(
        lambda s: s.scalar(select(mechanical_contracts.c.signature_token_hash))
    )
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert http.get(f"/sign/{stored}").status_code == 404  # the hash opens nothing
    assert http.get(f"/sign/{token}").status_code == 200


def test_signature_tokens_stored_before_hashing_are_hashed_by_the_migration_and_still_work(
    container: Container, acme: Tenant, http: TestClient, database_url: str
) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    from keyautomat.adapters.db import make_engine
    from keyautomat.adapters.migrate import alembic_config, upgrade

    device_keys(container, acme, "a")
    create(acme, keys=[{"id": "a"}], userVerification="1")
    config = alembic_config(database_url)
    before = ScriptDirectory.from_config(config).get_revision("0014").down_revision
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, str(before))
        # A link sent before the change: its token was stored as it is.
        connection.execute(text("UPDATE mechanical_contracts SET signature_token = 'sent-before'"))
    engine.dispose()
    upgrade(database_url)
    stored = container.db.transaction(
        lambda s: s.scalar(select(mechanical_contracts.c.signature_token_hash))
    )
    assert stored == hashlib.sha256(b"sent-before").hexdigest()
    assert http.get("/sign/sent-before").status_code == 200


@pytest.mark.parametrize(
    "signature",
    [
        "data:image/svg+xml;base64,"
        + base64.b64encode(b"<svg onload='alert(1)'></svg>").decode(),  # scripts
        "data:image/png;base64," + base64.b64encode(b"<svg></svg>").decode(),  # mislabelled
        "data:image/jpeg;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode(),
        "data:image/png;base64,not base64!",
        "data:text/html;base64,PGgxPg==",
        "javascript:alert(1)",
    ],
)
def test_a_drawn_signature_that_is_not_a_png_or_jpeg_is_refused_naming_the_field(
    container: Container, acme: Tenant, http: TestClient, signature: str
) -> None:
    device_keys(container, acme, "a")
    create(acme, keys=[{"id": "a"}], userVerification="1", contact=SIGNER)
    token = sent_signature_token(container)
    body = b"name=Jane&signature=" + quote(signature).encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    refused = http.post(f"/sign/{token}", content=body, headers=headers)
    assert refused.status_code == 400
    assert "signature: must be a PNG or JPEG image" in refused.text
    row = container.db.transaction(
        lambda s: s.execute(
            select(mechanical_contracts.c.signed_at, mechanical_contracts.c.signature_data)
        ).first()
    )
    assert row is not None
    assert tuple(row) == (None, None)
    jpeg = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0JFIF").decode()
    body = b"name=Jane&signature=" + quote(jpeg).encode()
    assert http.post(f"/sign/{token}", content=body, headers=headers).status_code == 200


def test_signature_links_queued_in_clear_before_sealing_are_sealed_once_at_start(
    container: Container,
) -> None:
    link = "https://keys.example.com/sign/old-plain-token"
    view = ContractView(
        kind=ContractKind.MECHANICAL,
        contract_id="c1",
        contract_type=NotifyContractType.DEFAULT,
        organization_unit_id="ou-1",
        start=datetime.now(UTC),
        end=None,
        contact=None,
        signature_link=link,
    )
    old = {"type": "contractSignatureRequested", "channel": "email", "keyId": None}
    payload = json.dumps({**old, "view": view.to_json()})  # as queued before sealing
    meta = orm.server_metadata

    def queue_as_before(session: Session) -> None:
        session.execute(meta.delete().where(meta.c.name == notifications.LINKS_SEALED))
        session.execute(
            insert(orm.outbox).values(
                kind="notification",
                payload=payload,
                status="done",
                due_at=datetime.now(UTC),
                attempts=1,
                created_at=datetime.now(UTC),
            )
        )

    container.db.transaction(queue_as_before)
    assert container.db.transaction(notifications.seal_stored_links) == 1
    assert container.db.transaction(notifications.seal_stored_links) == 0  # once only
    stored = container.db.transaction(
        lambda s: s.scalars(
            select(orm.outbox.c.payload).where(orm.outbox.c.kind == "notification")
        ).all()
    )
    assert "old-plain-token" not in " ".join(stored)
    assert (
        notifications.unsealed_view(json.loads(stored[-1]), container.secrets).signature_link
        == link
    )
