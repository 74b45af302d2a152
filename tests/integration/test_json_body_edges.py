"""What every JSON body must meet, whatever route takes it (issue 11, items 8, 10, 13, 15-17).

Bodies are sent as raw bytes: ``"\\ud800"`` is valid JSON but cannot be encoded
by the client's own serialiser, which is the point.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from keyautomat.adapters.iloq.emulator import EmulatedSystem
from keyautomat.adapters.orm_contracts import contracts
from keyautomat.bootstrap import Container
from keyautomat.domain.errors import InvalidInput
from keyautomat.entrypoints.api.bodies import NOT_UTF8
from keyautomat.service_layer import devices
from tests.conftest import Tenant, make_tenant
from tests.contract_helpers import (
    RIGHT,
    default_contract,
    grant_access_right,
    stocked_automat,
)
from tests.devices import admin_client, install
from tests.integration.test_mechanical_contracts import CONTACT, _times, device_keys

ILOQ = "/iloq/keycontracts"
MECHANICAL = "/mechanical/keycontracts"

SURROGATE = "x\ud800"


def send(tenant: Tenant, method: str, path: str, body: Any) -> tuple[int, Any]:
    """Status and decoded answer of a request whose body is ``json.dumps(body)`` (ASCII)."""
    response = tenant.api.request(method, path, raw_body=json.dumps(body))
    return response.status_code, response.json() if response.content else None


iloq_body = default_contract


def mechanical_body(**extra: Any) -> dict[str, Any]:
    start, end = _times()
    return {"start": start, "end": end, "contact": CONTACT, "keys": [{"id": "k1"}], **extra}


# --- item 16: lone surrogates and NUL ----------------------------------------------------


def test_a_surrogate_in_an_iloq_contact_name_is_refused_and_nothing_is_committed(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    status, answer = send(acme, "POST", ILOQ, iloq_body(automat_id, contact={"name": SURROGATE}))
    assert status == 400
    assert answer["message"] == ["input.contact.name: must not contain unpaired UTF-16 surrogates"]
    assert acme.api.get(ILOQ)["data"] == []


def test_a_surrogate_in_an_access_right_id_is_refused_before_anything_is_stored(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    status, answer = send(acme, "POST", ILOQ, iloq_body(automat_id, accessRightIds=[SURROGATE]))
    assert status == 400
    assert answer["message"] == [
        "input.accessRightIds.0: must not contain unpaired UTF-16 surrogates"
    ]
    assert acme.api.get(ILOQ)["data"] == []


def test_a_surrogate_in_a_mechanical_contact_name_is_refused_and_nothing_is_committed(
    container: Container, acme: Tenant
) -> None:
    device_keys(container, acme, "k1")
    status, answer = send(
        acme, "POST", MECHANICAL, mechanical_body(contact={**CONTACT, "name": SURROGATE})
    )
    assert status == 400
    assert answer["message"] == ["contact.name: must not contain unpaired UTF-16 surrogates"]
    assert acme.api.get(MECHANICAL)["data"] == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/groups", {"name": "G", "customerId": "c\x00", "type": 1}, "customerId"),
        (
            "/mechanical/keys",
            {
                "id": "k",
                "name": SURROGATE,
                "away": False,
                "selectedStorage": {"manualStorageInfo": "Shelf"},
            },
            "name",
        ),
        ("/automats/install", {"name": "A", "label": SURROGATE, "product": "key20"}, "label"),
        (
            "/automats/install",
            {"name": "A", "postalCode": "0\x00", "product": "key20"},
            "postalCode",
        ),
    ],
)
def test_nul_and_surrogates_are_refused_in_typed_bodies_too(
    acme: Tenant, path: str, body: dict[str, Any], field: str
) -> None:
    status, answer = send(acme, "POST", path, body)
    assert status == 400
    assert len(answer["message"]) == 1
    assert answer["message"][0].startswith(f"{field}: must not contain ")


def test_a_property_name_with_a_nul_is_refused(acme: Tenant) -> None:
    status, answer = send(
        acme, "POST", "/groups", {"name": "G", "customerId": "c", "type": 1, "x\x00": 1}
    )
    assert status == 400
    assert answer["message"] == ["body: a property name must not contain NUL characters"]


def test_a_stored_surrogate_is_answered_with_a_replacement_character_not_a_500(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    created = acme.api.post(ILOQ, iloq_body(automat_id, contact={"name": "Jane"}))

    def corrupt(session: Session) -> None:
        # How such rows came to be before bodies were checked: JSON text with an escape.
        session.execute(
            update(contracts)
            .where(contracts.c.id == created["id"])
            .values(contact='{"name": "x\\ud800"}', request=created_request(created))
        )

    container.db.transaction(corrupt)
    one = acme.api.get(f"{ILOQ}/{created['id']}")
    assert one["contact"]["name"] == "x\ufffd"
    assert one["accessRightIds"] == ["\ufffd"]
    listed = acme.api.get(ILOQ)["data"]
    assert [c["contact"]["name"] for c in listed] == ["x\ufffd"]


def created_request(created: dict[str, Any]) -> str:
    request = {k: created[k] for k in ("numberOfKeys", "keyIds", "keyAutomatId", "groupId")}
    return json.dumps({**request, "accessRightIds": ["\ud800"]})


def test_a_body_nested_too_deeply_for_the_decoder_is_a_400(acme: Tenant) -> None:
    response = acme.api.request("POST", "/groups", raw_body="[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400
    assert response.json()["message"] == ["body: is nested too deeply"]


def _mechanical_bytes(name: bytes) -> bytes:
    """A mechanical contract body whose contact name is ``name``, spliced in as raw bytes."""
    placeholder = "NAME-PLACEHOLDER"
    text = json.dumps(mechanical_body(contact={**CONTACT, "name": placeholder}))
    return text.encode().replace(placeholder.encode(), name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(b"Jo\x00e", id="a raw NUL"),
        pytest.param(b"Jo\xffe", id="a byte that is never UTF-8"),
        pytest.param(b"Jo\xc3e", id="a truncated UTF-8 sequence"),
        # Python's decoder passes a UTF-8-encoded surrogate through as a lone one.
        pytest.param(b"Jo\xed\xa0\x80e", id="a surrogate encoded as UTF-8"),
    ],
)
def test_raw_nul_and_bytes_that_are_not_utf8_are_a_400_naming_the_body_and_store_nothing(
    container: Container, acme: Tenant, name: bytes
) -> None:
    device_keys(container, acme, "k1")
    response = acme.api.request("POST", MECHANICAL, raw_body=_mechanical_bytes(name))
    assert response.status_code == 400
    assert response.json()["message"] == [NOT_UTF8]
    assert acme.api.get(MECHANICAL)["data"] == []


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Jo", id="plain text"),
        # 00 D8 80 00 in UTF-16LE: every byte sequence of it is valid UTF-8.
        pytest.param("Jo\ud800\u0080", id="a lone surrogate in UTF-8-valid bytes"),
    ],
)
def test_a_utf16_body_is_refused_as_not_utf8_and_stores_nothing(
    container: Container, acme: Tenant, name: str
) -> None:
    device_keys(container, acme, "k1")
    text = json.dumps(mechanical_body(contact={**CONTACT, "name": "NAME"}), ensure_ascii=False)
    body = text.replace("NAME", name).encode("utf-16-le", "surrogatepass")
    response = acme.api.request("POST", MECHANICAL, raw_body=body)
    assert response.status_code == 400
    assert response.json()["message"] == [NOT_UTF8]
    assert acme.api.get(MECHANICAL)["data"] == []


# --- item 17: date-times out of range -----------------------------------------------------

LATE_END = "9999-12-31T23:59:59-14:00"
EARLY_START = "0001-01-01T00:00:00+14:00"
OUT_OF_RANGE = "must lie between 2000-01-01T00:00:00Z and 2999-12-31T23:59:59Z"


@pytest.mark.parametrize(("field", "value"), [("end", LATE_END), ("start", EARLY_START)])
def test_an_iloq_contract_with_a_date_time_beyond_the_range_is_a_400(
    container: Container, acme: Tenant, field: str, value: str
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    status, answer = send(acme, "POST", ILOQ, iloq_body(automat_id, **{field: value}))
    assert status == 400
    assert answer["message"] == [f"{field}: {OUT_OF_RANGE}"]
    assert acme.api.get(ILOQ)["data"] == []


@pytest.mark.parametrize(("field", "value"), [("end", LATE_END), ("start", EARLY_START)])
def test_a_mechanical_patch_with_a_date_time_beyond_the_range_is_a_400(
    container: Container, acme: Tenant, field: str, value: str
) -> None:
    device_keys(container, acme, "k1")
    created = acme.api.post(MECHANICAL, mechanical_body())
    status, answer = send(acme, "PATCH", f"{MECHANICAL}/{created['id']}", {field: value})
    assert status == 400
    assert answer["message"] == [f"{field}: {OUT_OF_RANGE}"]
    assert acme.api.get(f"{MECHANICAL}/{created['id']}")[field] == created[field]


def test_a_typed_date_time_beyond_the_range_is_a_400(acme: Tenant, http: TestClient) -> None:
    response = admin_client(acme, http).request(
        "POST", "/admin/webhooks/unknown/recover", {"since": LATE_END}
    )
    assert response.status_code == 400
    assert response.json()["message"] == [f"since: {OUT_OF_RANGE}"]


def test_date_times_at_the_edges_of_the_range_are_accepted_and_answered_in_utc(
    container: Container, acme: Tenant
) -> None:
    device_keys(container, acme, "k1")
    created = acme.api.post(
        MECHANICAL, mechanical_body(start="2000-01-01T00:00:00Z", end="2999-12-31T23:59:59+00:00")
    )
    assert created["start"] == "2000-01-01T00:00:00.000Z"
    assert created["end"] == "2999-12-31T23:59:59.000Z"


# --- item 10: pincodes are ASCII digits ---------------------------------------------------

UNTYPEABLE = ["١٢٣٤٥٦", "¹²³⁴", "１２３４"]
DIGITS_ONLY = "must be a string of the digits 0-9"


@pytest.mark.parametrize("code", UNTYPEABLE)
def test_an_iloq_contract_pincode_of_non_ascii_digits_is_refused(
    container: Container, acme: Tenant, code: str
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    status, answer = send(acme, "POST", ILOQ, iloq_body(automat_id, pincodes=[code]))
    assert status == 400
    assert answer["message"] == [f"pincodes.0: {DIGITS_ONLY}"]
    assert acme.api.get(ILOQ)["data"] == []


@pytest.mark.parametrize("code", UNTYPEABLE)
def test_a_mechanical_contract_pincode_of_non_ascii_digits_is_refused(
    container: Container, acme: Tenant, code: str
) -> None:
    device_keys(container, acme, "k1")
    body = mechanical_body(keys=[{"id": "k1", "storageInfo": {"pincode": code}}])
    status, answer = send(acme, "POST", MECHANICAL, body)
    assert status == 400
    assert answer["message"] == [f"keys.0.storageInfo.pincode: {DIGITS_ONLY}"]


@pytest.mark.parametrize("code", UNTYPEABLE)
def test_the_device_layer_refuses_a_code_of_non_ascii_digits(
    container: Container, acme: Tenant, code: str
) -> None:
    automat = install(acme)
    now = datetime.now(UTC)
    with pytest.raises(InvalidInput) as info:
        container.db.transaction(
            lambda s: devices.add_pincode(
                s,
                automat["id"],
                code=code,
                locker_index=0,
                valid_from=now,
                valid_until=now + timedelta(hours=1),
                purpose="fetch",
            )
        )
    assert info.value.message == f"pincode: {DIGITS_ONLY}"


# --- item 15: integers in bodies are bounded ----------------------------------------------


def test_a_number_of_keys_too_big_for_any_column_is_a_400_and_nothing_is_stored(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    status, answer = send(acme, "POST", ILOQ, iloq_body(automat_id, numberOfKeys=2**70))
    assert status == 400
    assert answer["message"] == [
        "input.numberOfKeys: must be an integer between -9007199254740991 and 9007199254740991"
    ]
    assert acme.api.get(ILOQ)["data"] == []


def test_a_number_of_keys_beyond_what_an_automat_can_hold_is_a_400(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    status, answer = send(acme, "POST", ILOQ, iloq_body(automat_id, numberOfKeys=1001))
    assert status == 400
    assert answer["message"] == ["numberOfKeys: must be an integer from 1 to 1000"]


def test_a_non_finite_number_is_a_400(container: Container, acme: Tenant) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    raw = json.dumps(iloq_body(automat_id)).replace('"numberOfKeys": 1', '"numberOfKeys": NaN')
    response = acme.api.request("POST", ILOQ, raw_body=raw)
    assert response.status_code == 400
    assert response.json()["message"] == ["input.numberOfKeys: must be a finite number"]


# --- item 13: validation gaps -------------------------------------------------------------


def test_an_iloq_key_id_with_a_trailing_newline_is_refused(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    body = iloq_body(automat_id, keyIds=["K-1\n"])
    del body["input"]["numberOfKeys"]
    status, answer = send(acme, "POST", ILOQ, body)
    assert status == 400
    assert answer["message"] == ["keyIds.0: must be an iLOQ key id (a UUID, at most 64 characters)"]


def test_an_unknown_access_right_is_refused_at_creation_not_at_the_automat(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    status, answer = send(
        acme, "POST", ILOQ, iloq_body(automat_id, accessRightIds=[RIGHT, "does-not-exist"])
    )
    assert status == 400
    assert answer["message"] == ["accessRightIds.1: unknown access right"]
    assert acme.api.get(ILOQ)["data"] == []


def test_an_access_right_not_enabled_for_the_api_is_refused_at_creation(
    container: Container, acme: Tenant
) -> None:
    automat_id, _ = stocked_automat(container, acme, keys=2)
    office = container.db.transaction(
        lambda s: EmulatedSystem(s, acme.unit_id).add_access_right("Office", api_enabled=False)
    )
    status, answer = send(acme, "POST", ILOQ, iloq_body(automat_id, accessRightIds=[office]))
    assert status == 400
    assert answer["message"] == ["accessRightIds.0: unknown access right"]


def test_another_units_access_right_is_unknown_to_the_caller(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    other = make_tenant(container, http, name="Other Housing")
    theirs = "0b7c4a4e-3f55-4d0f-9d55-1c1b3c9f0a01"
    grant_access_right(container, other.unit_id, theirs)
    automat_id, _ = stocked_automat(container, acme, keys=2)
    status, answer = send(acme, "POST", ILOQ, iloq_body(automat_id, accessRightIds=[theirs]))
    assert status == 400
    assert answer["message"] == ["accessRightIds.0: unknown access right"]
