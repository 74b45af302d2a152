"""Every notification type in every language renders with the facts it must carry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keyautomat.adapters.notify.render import RenderedMessage, Renderer
from keyautomat.adapters.notify.sms import fold_to_gsm7, is_gsm7, segments
from keyautomat.domain.notifications import (
    ALL_TYPES,
    LANGUAGES,
    AutomatView,
    Channel,
    Contact,
    ContractKind,
    ContractType,
    ContractView,
    KeyView,
    NotificationType,
    OrgNotificationSettings,
)

T = NotificationType
HELSINKI = AutomatView(
    id="000111",
    name="Kamppi automat",
    label="Lobby",
    address="Urho Kekkosen katu 1, 00100 Helsinki",
    timezone="Europe/Helsinki",
)
START = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)  # 15:00 in Helsinki (EEST)
END = datetime(2030, 6, 3, 9, 0, tzinfo=UTC)  # 12:00 in Helsinki
PINCODE_TYPES = {
    T.CONTRACT_CREATED,
    T.CONTRACT_UPDATED,
    T.CONTRACT_START_REMINDER,
    T.CONTRACT_KEY_AVAILABLE,
}
KEY_TYPES = {T.CONTRACT_KEY_FETCHED, T.CONTRACT_KEY_RETURNED, T.CONTRACT_KEY_DELAYED}
RENDERER = Renderer()


def make_view(
    language: str | None,
    keys: tuple[KeyView, ...] = (KeyView("k1", "Flat A12", "123456", HELSINKI),),
    pick_up_info: str | None = None,
) -> ContractView:
    return ContractView(
        kind=ContractKind.MECHANICAL,
        contract_id="c1",
        contract_type=ContractType.DEFAULT,
        organization_unit_id="u1",
        start=START,
        end=END,
        contact=Contact(
            name="Jane <Guest>",
            email="jane@example.com",
            phone_number="+358401234567",
            language=language,
        ),
        keys=keys,
        pick_up_info=pick_up_info,
        signature_link="https://keys.example.com/sign/abc",
    )


def render(
    view: ContractView,
    type_: NotificationType,
    channel: Channel,
    org: OrgNotificationSettings | None = None,
) -> RenderedMessage:
    return RENDERER.render(
        view,
        type_,
        channel,
        org or OrgNotificationSettings(),
        key_id="k1" if type_ in KEY_TYPES else None,
    )


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("type_", ALL_TYPES)
def test_every_type_renders_in_every_language_with_its_facts(
    language: str, type_: NotificationType
) -> None:
    view = make_view(language)
    sms = render(view, type_, "sms")
    email = render(view, type_, "email")
    english = render(make_view("en"), type_, "email")

    assert segments(sms.text) <= 2
    assert is_gsm7(sms.text), sms.text
    if language != "en":
        assert email.subject != english.subject  # translated, not the fallback
    assert email.html is not None
    if type_ in PINCODE_TYPES:
        assert sms.text.index("123456") < 60  # the pincode comes early
        assert "123456" in email.text
        assert "123456" in email.html
    else:
        assert "123456" not in sms.text + email.text
    if type_ in PINCODE_TYPES or type_ is T.CONTRACT_END_REMINDER:
        assert "Kamppi automat" in email.text
        assert "Urho Kekkosen katu 1" in email.text
    if type_ in PINCODE_TYPES:
        # 12:00 UTC is 15:00 in Helsinki in summer, and the zone is stated.
        assert ("3:00" if language == "en" else "15") in email.text
        assert "(EEST)" in email.text
        assert "(EEST)" in sms.text
    if type_ in KEY_TYPES or type_ is T.CONTRACT_KEYS_NOT_RETURNED:
        assert "Flat A12" in sms.text
    if type_ is T.CONTRACT_SIGNATURE_REQUESTED:
        assert "https://keys.example.com/sign/abc" in sms.text
        assert 'href="https://keys.example.com/sign/abc"' in email.html
    assert "Jane &lt;Guest&gt;" in email.html  # HTML is escaped


def test_manual_storage_uses_the_unit_zone_and_carries_the_pick_up_info() -> None:
    view = make_view(
        "de",
        keys=(KeyView("k1", "Garage", "998877", None, storage_info="Reception desk"),),
        pick_up_info="Ask at the reception, open 8-16.",
    )
    org = OrgNotificationSettings(timezone="America/New_York")
    email = render(view, T.CONTRACT_CREATED, "email", org)
    sms = render(view, T.CONTRACT_CREATED, "sms", org)
    assert "Ask at the reception, open 8-16." in email.text
    assert "Reception desk" in email.text
    assert "08:00" in email.text  # 12:00 UTC in New York
    assert "(EDT)" in email.text
    assert "998877" in sms.text


def test_a_missing_language_falls_back_to_english() -> None:
    assert render(make_view(None), T.CONTRACT_CREATED, "email").subject == "Your key is ready"


def test_an_sms_with_many_long_keys_still_fits_two_segments_with_every_pincode() -> None:
    keys = tuple(
        KeyView(f"k{i}", f"Apartment building B staircase {i} flat {i}0{i}", f"55500{i}", HELSINKI)
        for i in range(5)
    )
    sms = render(make_view("fi", keys=keys), T.CONTRACT_CREATED, "sms")
    assert segments(sms.text) <= 2
    assert all(f"55500{i}" in sms.text for i in range(5))


def test_segments_are_counted_as_gsm7_or_ucs2() -> None:
    assert segments("a" * 160) == 1
    assert segments("a" * 161) == 2
    assert segments("a" * 306) == 2
    assert segments("€" * 80) == 1  # extension characters count twice
    assert segments("ä" * 160) == 1  # ä is GSM-7
    assert segments("ê" * 70) == 1  # UCS-2
    assert segments("ê" * 71) == 2
    assert fold_to_gsm7("prête à être reçue") == "prete à etre recue"


def test_the_webhook_disabled_notice_names_the_subscription_in_the_units_time_zone() -> None:
    facts = {
        "id": "sub-1",
        "name": "PMS",
        "unit": "Acme Housing",
        "url": "https://pms.example.com/hooks",
        "failing_since": "2030-06-01T12:00:00.000Z",
        "disabled_at": "2030-06-06T18:00:00.000Z",
        "last_error": "HTTP 500",
    }
    org = OrgNotificationSettings(timezone="Europe/Stockholm", sender_name="Acme Keys")
    rendered = RENDERER.render_notice("webhookSubscriptionDisabled", facts, org)
    assert rendered.subject == 'Webhook subscription "PMS" disabled'
    assert rendered.html is None
    text = rendered.text
    assert "Failing since: 2030-06-01 14:00 (CEST)" in text
    assert "Disabled: 2030-06-06 20:00 (CEST)" in text
    assert "Last error: HTTP 500" in text
    assert 'POST /admin/webhooks/sub-1/enable with {"recover": true}' in text
    assert text.rstrip().endswith("This is an automated message from Acme Keys.")


@pytest.mark.parametrize(
    ("admin_email", "reply_to", "recipient"),
    [
        ("it@acme.example", "desk@acme.example", "it@acme.example"),
        (None, "desk@acme.example", "desk@acme.example"),
        (None, None, None),
    ],
)
def test_notices_to_a_units_admins_go_to_its_admin_email_else_its_reply_to_desk(
    admin_email: str | None, reply_to: str | None, recipient: str | None
) -> None:
    org = OrgNotificationSettings(admin_email=admin_email, reply_to=reply_to)
    assert org.admin_recipient == recipient


def test_the_key_delayed_notice_says_which_key_is_late_and_who_has_it() -> None:
    facts = {
        "contract": "booking-17",
        "kind": "mechanical",
        "key": "Flat A12",
        "automat": "Kamppi automat",
        "locker": 3,
        "start_at": "2030-06-01T12:00:00.000Z",
        "holder": "booking-16",
        "holder_contact": "John Guest, +358401234567",
    }
    rendered = RENDERER.render_notice("keyDelayed", facts, OrgNotificationSettings())
    assert rendered.subject == "Key Flat A12 is late for contract booking-17"
    text = rendered.text
    assert "Contract booking-17 started at 2030-06-01 15:00 (EEST)" in text
    assert "Kamppi automat is waiting for it in locker 3" in text
    assert "contract booking-16 (John Guest, +358401234567)" in text


def test_the_key_delayed_notice_reads_well_when_nobody_is_known_to_have_the_key() -> None:
    facts = {
        "contract": "c1",
        "kind": "iloq",
        "key": "7C81308",
        "automat": "A1",
        "locker": 0,
        "start_at": "2030-06-01T12:00:00.000Z",
        "holder": None,
        "holder_contact": None,
    }
    text = RENDERER.render_notice("keyDelayed", facts, OrgNotificationSettings()).text
    assert "still out with" not in text


def test_the_keys_overdue_notice_lists_each_key_where_it_belongs_and_whom_to_call() -> None:
    facts = {
        "contract": "stay-1",
        "kind": "mechanical",
        "end_at": "2030-06-03T09:00:00.000Z",
        "contact": "Jane Guest, +358401234567",
        "keys": [
            {"key": "Flat A12", "place": "Front desk"},
            {"key": "Garage", "place": "Kamppi automat, locker 2"},
        ],
    }
    rendered = RENDERER.render_notice("keysOverdue", facts, OrgNotificationSettings())
    assert rendered.subject == "Keys of contract stay-1 not returned"
    text = rendered.text
    assert "Contract stay-1 ended at 2030-06-03 12:00 (EEST)" in text
    assert "- Flat A12 (Front desk)\n- Garage (Kamppi automat, locker 2)" in text
    assert "Contact: Jane Guest, +358401234567" in text
