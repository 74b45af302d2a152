"""Webhook wire format: signatures the official library accepts, envelope and data shapes."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from keyautomat.adapters.outbound import UnsafeTarget, check_url, is_public_address, vet_url
from keyautomat.adapters.webhook_sender import delivery_headers, signature_header
from keyautomat.domain import webhooks as wh
from keyautomat.service_layer.webhooks import RETRY_DELAYS

VECTOR_SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
VECTOR_BODY = (
    '{"specVersion":"1","type":"key-status","occurredAt":"2025-08-03T05:46:40.000Z",'
    '"createdAt":"2025-08-03T05:46:40.250Z","organizationUnitId":"ou-1","data":{"state":'
    '"key-fetched","storageType":"device","deviceId":"000111","lockerIndex":3,"keyId":"k-1",'
    '"contractId":"c-1","contractObjectId":"c-1"}}'
)


def test_the_spec_test_vector_is_reproduced_from_the_builders() -> None:
    body = wh.serialise(
        wh.envelope(
            event_type="key-status",
            organization_unit_id="ou-1",
            data=wh.key_status_data(
                state="key-fetched",
                device_id="000111",
                locker_index=3,
                key_id="k-1",
                contract_id="c-1",
                contract_object_id="c-1",
            ),
            occurred_at=datetime(2025, 8, 3, 5, 46, 40, tzinfo=UTC),
            created_at=datetime(2025, 8, 3, 5, 46, 40, 250_000, tzinfo=UTC),
        )
    )
    assert body == VECTOR_BODY
    headers = delivery_headers(
        webhook_id="msg_0001",
        event_type="key-status",
        body=body,
        secrets=[VECTOR_SECRET],
        at=datetime.fromtimestamp(1754200000, UTC),
    )
    assert headers["webhook-timestamp"] == "1754200000"
    assert headers["webhook-signature"] == "v1,xbT6KXFblT9iJE772t1FpQLNbIVd86jJ1NHQvaXp1wc="
    assert headers["webhook-event-type"] == "key-status"
    assert headers["content-type"] == "application/json"


def test_the_standard_webhooks_example_vector_is_reproduced() -> None:
    signature = signature_header(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        datetime.fromtimestamp(1614265330, UTC),
        '{"test": 2432232314}',
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _signed(
    secret: str, *, at: datetime | None = None, secrets: list[str] | None = None
) -> dict[str, str]:
    return delivery_headers(
        webhook_id="msg_x",
        event_type="key-status",
        body=VECTOR_BODY,
        secrets=secrets or [secret],
        at=at or datetime.now(UTC),
    )


def test_the_official_library_accepts_a_delivery_and_rejects_tampering() -> None:
    secret = wh.new_secret()
    headers = _signed(secret)
    assert Webhook(secret).verify(VECTOR_BODY.encode(), headers)["type"] == "key-status"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(VECTOR_BODY.replace("000111", "000112").encode(), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(wh.new_secret()).verify(VECTOR_BODY.encode(), headers)
    stale = _signed(secret, at=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(VECTOR_BODY.encode(), stale)


def test_during_rotation_both_secrets_verify_the_same_delivery() -> None:
    old, new = wh.new_secret(), wh.new_secret()
    headers = _signed(new, secrets=[new, old])
    assert headers["webhook-signature"].count("v1,") == 2
    Webhook(new).verify(VECTOR_BODY.encode(), headers)
    Webhook(old).verify(VECTOR_BODY.encode(), headers)


def test_a_secret_is_whsec_and_base64_of_32_bytes() -> None:
    import base64

    secret = wh.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_manual_storage_keys_carry_no_device_fields() -> None:
    data = wh.key_status_data(
        state="key-returned", key_id="k", contract_id="c", contract_object_id="o"
    )
    assert data == {
        "state": "key-returned",
        "storageType": "manualStorage",
        "keyId": "k",
        "contractId": "c",
        "contractObjectId": "o",
    }


def test_contract_update_has_exactly_the_spec_fields() -> None:
    data = wh.contract_update_data(
        contract_type="fetch",
        contract_id="c-1",
        contract_object_id="o-1",
        key_id="k-1",
        pincode="123456",
        device_id="000111",
        start=datetime(2025, 6, 1, 12, tzinfo=UTC),
        end=None,
    )
    assert json.dumps(data, separators=(",", ":")) == (
        '{"contractType":"fetch","contractId":"c-1","contractObjectId":"o-1","pincode":"123456",'
        '"start":"2025-06-01T12:00:00.000Z","end":null,"deviceId":"000111","keyId":"k-1"}'
    )
    with pytest.raises(ValueError, match="contractType"):
        wh.contract_update_data(
            contract_type="1",
            contract_id="c",
            contract_object_id="o",
            key_id="k",
            start=datetime.now(UTC),
            end=None,
        )


def test_code_entered_leaves_out_what_a_code_kind_does_not_have() -> None:
    access = wh.code_entered_data(code_type="right-access-code", code="4321", device_id="000111")
    assert access == {"codeType": "right-access-code", "code": "4321", "deviceId": "000111"}
    returned = wh.code_entered_data(
        code_type="right-return-code",
        code="1111",
        device_id="000111",
        locker_index=2,
        key_id="k",
        contract_object_id="o",
    )
    assert "contractId" not in returned
    assert returned["lockerIndex"] == 2


def test_device_alarm_shape() -> None:
    start = datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert wh.device_alarm_data(
        alarm_type="DEVICE_MOVED",
        state="deactivated",
        device_id="000111",
        start=start,
        end=start + timedelta(minutes=5),
        acknowledged=True,
    ) == {
        "alarmType": "DEVICE_MOVED",
        "state": "deactivated",
        "deviceId": "000111",
        "start": "2025-06-01T12:00:00.000Z",
        "end": "2025-06-01T12:05:00.000Z",
        "acknowledged": True,
    }


@pytest.mark.parametrize("event_type", wh.EVENT_TYPES)
def test_test_payloads_use_placeholders_only(event_type: str) -> None:
    data = wh.sample_data(event_type, datetime.now(UTC))
    assert data["deviceId"] == "000000"
    for field in ("pincode", "code"):
        assert data.get(field, "000000") == "000000"


def test_the_lane_source_is_the_device_else_the_key_else_the_unit() -> None:
    assert wh.source_key({"deviceId": "000111", "keyId": "k"}, "ou") == "000111"
    assert wh.source_key({"keyId": "k"}, "ou") == "k"
    assert wh.source_key({}, "ou") == "ou"


def test_webhook_ids_are_msg_ulids_in_time_order() -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    first = wh.new_webhook_id(t0)
    later = wh.new_webhook_id(t0 + timedelta(milliseconds=1))
    assert first.startswith("msg_")
    assert len(first) == 4 + 26
    assert first < later


def test_the_retry_schedule_is_twenty_attempts_over_about_six_hours() -> None:
    assert len(RETRY_DELAYS) == 19
    assert sum(RETRY_DELAYS, timedelta()) == timedelta(hours=5, minutes=53, seconds=50)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address under test, nothing binds to it
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::",
        "ff02::1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address)


def test_only_https_urls_unless_private_targets_are_allowed() -> None:
    with pytest.raises(UnsafeTarget, match="https"):
        check_url("http://example.com/hook", allow_private=False)
    with pytest.raises(UnsafeTarget, match="https"):
        check_url("ftp://example.com/hook", allow_private=True)
    with pytest.raises(UnsafeTarget, match="credentials"):
        check_url("https://user:pw@example.com/hook", allow_private=False)
    assert check_url("https://example.com/hook", allow_private=False) == ("example.com", 443)
    assert check_url("http://127.0.0.1:8080/", allow_private=True) == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("loopback.test", "127.0.0.1"),
        ("private.test", "10.0.0.7"),
        ("metadata.test", "169.254.169.254"),
        ("v6.test", "::1"),
    ],
)
def test_a_host_resolving_to_a_private_address_is_refused_unless_allowed(
    host: str, address: str
) -> None:
    async def resolve(_host: str, _port: int) -> list[str]:
        return ["93.184.216.34", address]

    url = f"https://{host}/hook"
    with pytest.raises(UnsafeTarget, match="not a publicly reachable address") as refused:
        asyncio.run(vet_url(url, allow_private=False, resolve=resolve))
    assert address not in str(refused.value)
    asyncio.run(vet_url(url, allow_private=True, resolve=resolve))


def test_ip_literals_are_vetted_like_names() -> None:
    for url in (
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://10.0.0.1/",
        "https://169.254.1.1/",
    ):
        with pytest.raises(UnsafeTarget):
            asyncio.run(vet_url(url, allow_private=False))


def test_a_host_that_does_not_resolve_gets_the_same_refusal_as_a_private_one() -> None:
    async def unknown(_host: str, _port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    async def private(_host: str, _port: int) -> list[str]:
        return ["10.1.2.3"]

    reasons = []
    for resolve in (unknown, private):
        with pytest.raises(UnsafeTarget) as refused:
            asyncio.run(vet_url("https://intranet.test/", allow_private=False, resolve=resolve))
        reasons.append(refused.value.reason)
    assert reasons == ["host 'intranet.test' is not a publicly reachable address"] * 2


def test_private_ip_literals_and_queries_are_refused_by_syntax_alone() -> None:
    with pytest.raises(UnsafeTarget, match="publicly reachable"):
        check_url("https://10.0.0.1/hook", allow_private=False)
    with pytest.raises(UnsafeTarget, match="query"):
        check_url("https://example.com/?a=1", allow_private=False, allow_query=False)
    with pytest.raises(UnsafeTarget, match="fragment"):
        check_url("https://example.com/#x", allow_private=False)
    assert check_url("https://10.0.0.1/hook", allow_private=True) == ("10.0.0.1", 443)
