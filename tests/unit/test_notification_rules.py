"""The resolution rule of notifications.md §3, the reminder plan and contact validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyautomat.domain.contact import normalise_phone, parse_contact
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.notifications import (
    CHANNELS,
    FACTORY_DEFAULTS,
    GOVERNED_BY,
    NOTIFICATION_TYPES,
    Contact,
    ContractKind,
    ContractType,
    ContractView,
    NotificationType,
    OrgNotificationSettings,
    contact_to_wire,
    effective,
    effective_matrix,
    factory_matrix,
    plan_reminders,
    reported_switches,
)

T = NotificationType
ORG = OrgNotificationSettings()
NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)


def contact(**kw: object) -> Contact:
    return Contact(name="Jane", email="jane@example.com", phone_number="+358401234567", **kw)  # type: ignore[arg-type]


# (contact settings, org defaults override, type, channel, expected)
MATRIX_CASES = [
    # Rule 1: a matrix alone decides; switches are ignored.
    (
        {"notifications": {"contractCreated": {"sms": True}}, "send_sms": False},
        None,
        T.CONTRACT_CREATED,
        "sms",
        True,
    ),
    (
        {"notifications": {"contractCreated": {"sms": True}}, "send_email": True},
        None,
        T.CONTRACT_CREATED,
        "email",
        False,
    ),
    (
        {"notifications": {"contractCreated": {"sms": True}}, "send_sms": True},
        None,
        T.CONTRACT_UPDATED,
        "sms",
        False,
    ),
    # ... even against organization defaults that are off.
    (
        {"notifications": {"contractStartReminder": {"email": True}}},
        None,
        T.CONTRACT_START_REMINDER,
        "email",
        True,
    ),
    # An empty matrix sends nothing.
    (
        {"notifications": {}, "send_sms": True, "send_email": True},
        None,
        T.CONTRACT_CREATED,
        "sms",
        False,
    ),
    # Rule 2: switches and organization defaults.
    ({"send_sms": True}, None, T.CONTRACT_CREATED, "sms", True),
    ({"send_sms": True}, None, T.CONTRACT_CREATED, "email", False),
    ({"send_sms": True, "send_email": True}, None, T.CONTRACT_START_REMINDER, "sms", False),
    (
        {"send_email": True},
        {"contractCreated": {"email": False}},
        T.CONTRACT_CREATED,
        "email",
        False,
    ),
    (
        {"send_email": True},
        {"contractStartReminder": {"email": True}},
        T.CONTRACT_START_REMINDER,
        "email",
        True,
    ),
    # Omitted switches count as false (H2).
    ({}, None, T.CONTRACT_CREATED, "sms", False),
    ({}, None, T.CONTRACT_CREATED, "email", False),
    ({"send_sms": False, "send_email": False}, None, T.CONTRACT_KEY_FETCHED, "email", False),
]


@pytest.mark.parametrize(("settings", "defaults", "type_", "channel", "expected"), MATRIX_CASES)
def test_the_resolution_rule_decides_each_type_and_channel_as_the_spec_says(
    settings: dict[str, object],
    defaults: dict[str, dict[str, bool]] | None,
    type_: NotificationType,
    channel: str,
    expected: bool,
) -> None:
    org = ORG
    if defaults:
        matrix = factory_matrix()
        for t, cells in defaults.items():
            matrix[t].update(cells)
        org = OrgNotificationSettings(defaults=matrix)
    assert effective(contact(**settings), type_, channel, org) is expected  # type: ignore[arg-type]


def test_no_contact_gets_nothing() -> None:
    assert not any(effective(None, t, c, ORG) for t in NOTIFICATION_TYPES for c in CHANNELS)


def test_the_factory_defaults_are_those_of_the_spec() -> None:
    off = {t for t, on in FACTORY_DEFAULTS.items() if not on}
    assert off == {T.CONTRACT_START_REMINDER}
    assert set(FACTORY_DEFAULTS) == set(NOTIFICATION_TYPES)


def test_responses_carry_the_full_effective_matrix_and_derived_switches() -> None:
    given = contact(notifications={"contractKeysNotReturned": {"sms": True}})
    wire = contact_to_wire(given, ORG)
    assert set(wire["notifications"]) == {t.value for t in NOTIFICATION_TYPES}
    assert all(set(v) == {"sms", "email"} for v in wire["notifications"].values())
    assert wire["notifications"]["contractKeysNotReturned"] == {"sms": True, "email": False}
    assert sum(c for v in wire["notifications"].values() for c in v.values()) == 1
    assert (wire["sendSms"], wire["sendEmail"]) == (True, False)


def test_given_switches_are_echoed_even_when_a_matrix_overrides_them() -> None:
    given = contact(
        send_sms=False, send_email=True, notifications={"contractCreated": {"sms": True}}
    )
    assert reported_switches(given) == (False, True)
    matrix = effective_matrix(contact(send_email=True), ORG)
    assert matrix["contractCreated"] == {"sms": False, "email": True}
    assert matrix["contractStartReminder"] == {"sms": False, "email": False}


def view(
    start: datetime, end: datetime | None, type_: ContractType = ContractType.DEFAULT
) -> ContractView:
    return ContractView(
        kind=ContractKind.ILOQ,
        contract_id="c1",
        contract_type=type_,
        organization_unit_id="u1",
        start=start,
        end=end,
        contact=contact(send_sms=True),
    )


def test_reminders_are_planned_at_their_lead_times() -> None:
    plan = plan_reminders(view(NOW + timedelta(days=3), NOW + timedelta(days=5)), ORG, NOW)
    assert [(r.type, r.due_at - NOW) for r in plan] == [
        (T.CONTRACT_START_REMINDER, timedelta(days=2)),
        (T.CONTRACT_END_REMINDER, timedelta(days=4)),
        (T.CONTRACT_KEYS_NOT_RETURNED, timedelta(days=5)),
    ]


def test_no_start_reminder_when_the_start_is_within_the_lead_time() -> None:
    plan = plan_reminders(view(NOW + timedelta(hours=5), NOW + timedelta(days=5)), ORG, NOW)
    assert T.CONTRACT_START_REMINDER not in [r.type for r in plan]


def test_fetch_contracts_and_contracts_without_end_get_no_end_reminders() -> None:
    start = NOW + timedelta(days=3)
    assert [r.type for r in plan_reminders(view(start, None), ORG, NOW)] == [
        T.CONTRACT_START_REMINDER
    ]
    fetch = view(start, NOW + timedelta(days=9), ContractType.FETCH)
    assert [r.type for r in plan_reminders(fetch, ORG, NOW)] == [T.CONTRACT_START_REMINDER]


def test_lead_times_come_from_the_organization() -> None:
    org = OrgNotificationSettings(
        start_reminder_lead=timedelta(hours=2), end_reminder_lead=timedelta(hours=1)
    )
    plan = plan_reminders(view(NOW + timedelta(hours=5), NOW + timedelta(hours=10)), org, NOW)
    assert [r.due_at - NOW for r in plan] == [
        timedelta(hours=3),
        timedelta(hours=9),
        timedelta(hours=10),
    ]


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+358401234567", "+358401234567"),
        ("+358 40 123 4567", "+358401234567"),
        ("00358401234567", "+358401234567"),
        ("+49 (30) 901820", "+4930901820"),
    ],
)
def test_phone_numbers_are_normalised_to_e164(raw: str, e164: str) -> None:
    assert normalise_phone(raw) == e164


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "jane.example.com"),
        ("email", "jane@example"),
        ("email", "jane doe@example.com"),
        ("language", "es"),
        ("language", "EN"),
        ("sendSms", "yes"),
    ],
)
def test_invalid_contact_fields_are_rejected_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_contact({"name": "Jane", field: value})
    assert caught.value.field == f"contact.{field}"


@pytest.mark.parametrize("phone", ["0401234567", "+358 12", "call me"])
@pytest.mark.parametrize(
    "wants_sms",
    [
        pytest.param({"sendSms": True}, id="sendSms"),
        pytest.param({"notifications": {"contractCreated": {"sms": True}}}, id="the matrix"),
    ],
)
def test_a_contact_that_asks_for_sms_needs_an_international_number(
    phone: str, wants_sms: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_contact({"name": "Jane", "phoneNumber": phone, **wants_sms})
    assert caught.value.field == "contact.phoneNumber"


@pytest.mark.parametrize(
    "asks_for_none",
    [
        pytest.param({}, id="no switch"),
        pytest.param({"sendSms": False, "sendEmail": True}, id="sendSms false"),
        pytest.param(
            {"sendSms": True, "notifications": {"contractCreated": {"email": True}}},
            id="a matrix without sms",
        ),
    ],
)
def test_a_contact_that_asks_for_no_sms_keeps_a_national_number_as_given(
    asks_for_none: dict[str, Any],
) -> None:
    parsed = parse_contact({"name": "Jane", "phoneNumber": " 040 123 4567 ", **asks_for_none})
    assert parsed is not None
    assert parsed.phone_number == "040 123 4567"
    assert not any(parsed.may_want(t.value, "sms") for t in NOTIFICATION_TYPES)


def test_a_contact_that_asks_for_no_sms_still_gets_a_valid_number_normalised() -> None:
    parsed = parse_contact({"name": "Jane", "phoneNumber": "00358 40 123 4567"})
    assert parsed is not None
    assert parsed.phone_number == "+358401234567"


@pytest.mark.parametrize("phone", ["1" * 33, "040\t123"])
def test_a_number_kept_as_given_is_bounded(phone: str) -> None:
    with pytest.raises(InvalidInput, match="at most 32 printable characters"):
        parse_contact({"name": "Jane", "phoneNumber": phone})


def test_a_valid_contact_is_normalised_and_null_notifications_is_absent() -> None:
    parsed = parse_contact(
        {
            "name": " Jane ",
            "email": "Jane@Example.COM",
            "phoneNumber": "+358 40 123 4567",
            "language": None,
            "notifications": None,
            "sendSms": True,
        }
    )
    assert parsed == Contact(
        name="Jane",
        email="Jane@example.com",
        phone_number="+358401234567",
        language=None,
        send_sms=True,
    )
    assert parsed.effective_language == "en"


def test_a_matrix_keeps_only_what_was_listed_and_ignores_unknown_types() -> None:
    parsed = parse_contact(
        {"name": "J", "notifications": {"contractCreated": {"sms": True}, "bogus": {"sms": True}}}
    )
    assert parsed is not None
    assert parsed.notifications == {"contractCreated": {"sms": True}}
    with pytest.raises(InvalidInput) as caught:
        parse_contact({"name": "J", "notifications": {"contractCreated": {"sms": "on"}}})
    assert caught.value.field == "contact.notifications.contractCreated.sms"


def test_our_own_types_follow_the_matrix_cell_of_the_type_that_governs_them() -> None:
    org = OrgNotificationSettings()
    updated_only = Contact(
        name="J", email="j@example.com", notifications={"contractUpdated": {"email": True}}
    )
    nothing = Contact(name="J", email="j@example.com", notifications={})
    for own in GOVERNED_BY:
        assert GOVERNED_BY[own] is NotificationType.CONTRACT_UPDATED
        assert effective(updated_only, own.value, "email", org)
        assert not effective(updated_only, own.value, "sms", org)
        assert not effective(nothing, own.value, "email", org)
        assert updated_only.may_want(own.value, "email")
