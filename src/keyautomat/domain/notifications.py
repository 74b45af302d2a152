"""End-user notifications: who gets which message on which channel (spec notifications.md).

Pure rules only. The contract code describes a contract with a
:class:`ContractView`; :func:`effective` decides, for one type and channel,
whether the contact is messaged, exactly as notifications.md §3 states.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

Channel = Literal["sms", "email"]
CHANNELS: tuple[Channel, ...] = ("sms", "email")
LANGUAGES: tuple[str, ...] = ("en", "fi", "sv", "de", "no", "fr")
DEFAULT_LANGUAGE = "en"


class NotificationType(enum.StrEnum):
    CONTRACT_CREATED = "contractCreated"
    CONTRACT_UPDATED = "contractUpdated"
    CONTRACT_KEY_FETCHED = "contractKeyFetched"
    CONTRACT_KEY_RETURNED = "contractKeyReturned"
    CONTRACT_START_REMINDER = "contractStartReminder"
    CONTRACT_END_REMINDER = "contractEndReminder"
    CONTRACT_KEYS_NOT_RETURNED = "contractKeysNotReturned"
    CONTRACT_SIGNATURE_REQUESTED = "contractSignatureRequested"
    # keyautomat's own (docs/notifications.md, "Types of our own"): not in the contact's
    # matrix; each is sent when the matrix type that governs it is (GOVERNED_BY).
    CONTRACT_KEY_DELAYED = "contractKeyDelayed"
    CONTRACT_KEY_AVAILABLE = "contractKeyAvailable"


# The order of ContactNotificationsDto in the spec (endpoints.md §2.2).
NOTIFICATION_TYPES: tuple[NotificationType, ...] = (
    NotificationType.CONTRACT_KEY_FETCHED,
    NotificationType.CONTRACT_KEY_RETURNED,
    NotificationType.CONTRACT_CREATED,
    NotificationType.CONTRACT_START_REMINDER,
    NotificationType.CONTRACT_END_REMINDER,
    NotificationType.CONTRACT_KEYS_NOT_RETURNED,
    NotificationType.CONTRACT_UPDATED,
    NotificationType.CONTRACT_SIGNATURE_REQUESTED,
)

# Our own types, and the type of the contact's matrix that decides whether they are sent:
# a key late for the contract's start, and back again, change what the guest can do
# with the contract, as a PATCH does.
GOVERNED_BY: Mapping[NotificationType, NotificationType] = {
    NotificationType.CONTRACT_KEY_DELAYED: NotificationType.CONTRACT_UPDATED,
    NotificationType.CONTRACT_KEY_AVAILABLE: NotificationType.CONTRACT_UPDATED,
}
ALL_TYPES: tuple[NotificationType, ...] = NOTIFICATION_TYPES + tuple(GOVERNED_BY)


def governing(type_: str) -> str:
    """The matrix type whose cell decides whether ``type_`` is sent (itself for the eight)."""
    try:
        return GOVERNED_BY[NotificationType(type_)].value
    except (ValueError, KeyError):
        return type_


# Scheduled types: written ahead with a future due time, re-checked when they fire.
SCHEDULED_TYPES: tuple[NotificationType, ...] = (
    NotificationType.CONTRACT_START_REMINDER,
    NotificationType.CONTRACT_END_REMINDER,
    NotificationType.CONTRACT_KEYS_NOT_RETURNED,
)

Matrix = dict[str, dict[str, bool]]

# notifications.md §4: factory defaults, applied to each channel the contact enabled.
FACTORY_DEFAULTS: Mapping[NotificationType, bool] = {
    NotificationType.CONTRACT_CREATED: True,
    NotificationType.CONTRACT_START_REMINDER: False,
    NotificationType.CONTRACT_END_REMINDER: True,
    NotificationType.CONTRACT_KEYS_NOT_RETURNED: True,
    NotificationType.CONTRACT_KEY_FETCHED: True,
    NotificationType.CONTRACT_KEY_RETURNED: True,
    NotificationType.CONTRACT_UPDATED: True,
    NotificationType.CONTRACT_SIGNATURE_REQUESTED: True,
}
DEFAULT_START_LEAD = timedelta(hours=24)
DEFAULT_END_LEAD = timedelta(hours=24)
DEFAULT_TIMEZONE = "Europe/Helsinki"
# How long after its contract's end a device key still out is overdue (docs/contracts.md,
# "Overdue keys"); a manual-storage key is overdue at the end.
DEFAULT_OVERDUE_AFTER = timedelta(hours=1)


def factory_matrix() -> Matrix:
    return {t.value: dict.fromkeys(CHANNELS, FACTORY_DEFAULTS[t]) for t in NOTIFICATION_TYPES}


@dataclass(frozen=True, slots=True)
class OrgNotificationSettings:
    """What an organization unit decides about notifications, after inheritance."""

    defaults: Matrix = field(default_factory=factory_matrix)
    start_reminder_lead: timedelta = DEFAULT_START_LEAD
    end_reminder_lead: timedelta = DEFAULT_END_LEAD
    timezone: str = DEFAULT_TIMEZONE
    sender_name: str | None = None
    sms_sender_id: str | None = None
    reply_to: str | None = None
    admin_email: str | None = None
    overdue_after: timedelta = DEFAULT_OVERDUE_AFTER
    # The contact gets a reminder of overdue keys too (contractKeysNotReturned again).
    guest_overdue_reminders: bool = False

    def default_for(self, type_: str, channel: Channel) -> bool:
        return bool(self.defaults.get(type_, {}).get(channel, False))

    @property
    def admin_recipient(self) -> str | None:
        """Where notices for the unit's admins go: ``adminEmail``, else the unit's
        ``replyTo`` desk (the one address a unit already gives for people to write
        to), else nowhere."""
        return self.admin_email or self.reply_to


@dataclass(frozen=True, slots=True)
class Contact:
    """A contract's recipient as the caller sent it (already validated and normalised).

    ``send_sms``/``send_email`` are None when omitted; ``notifications`` is None
    when absent or null, and otherwise holds only what the caller listed.
    """

    name: str
    email: str | None = None
    phone_number: str | None = None
    language: str | None = None
    send_sms: bool | None = None
    send_email: bool | None = None
    notifications: Matrix | None = None

    @property
    def effective_language(self) -> str:
        return self.language if self.language in LANGUAGES else DEFAULT_LANGUAGE

    def address(self, channel: Channel) -> str | None:
        return self.phone_number if channel == "sms" else self.email

    def master_switch(self, channel: Channel) -> bool:
        return (self.send_sms if channel == "sms" else self.send_email) is True

    def may_want(self, type_: str, channel: Channel) -> bool:
        """The contact's own part of the rule, without the organization defaults.

        True when the contact's settings alone do not rule the message out; the
        organization defaults then decide at send time.
        """
        if self.notifications is not None:
            return bool(self.notifications.get(governing(type_), {}).get(channel, False))
        return self.master_switch(channel)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "email": self.email,
            "phoneNumber": self.phone_number,
            "language": self.language,
            "sendSms": self.send_sms,
            "sendEmail": self.send_email,
            "notifications": self.notifications,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Contact:
        return cls(
            name=data["name"],
            email=data.get("email"),
            phone_number=data.get("phoneNumber"),
            language=data.get("language"),
            send_sms=data.get("sendSms"),
            send_email=data.get("sendEmail"),
            notifications=data.get("notifications"),
        )


def effective(
    contact: Contact | None, type_: str, channel: Channel, org: OrgNotificationSettings
) -> bool:
    """notifications.md §3, verbatim: does ``contact`` get ``type_`` on ``channel``? Our own
    types follow the cell of the matrix type that governs them."""
    if contact is None:
        return False
    type_ = governing(type_)
    if contact.notifications is not None:
        return bool(contact.notifications.get(type_, {}).get(channel, False))
    return contact.master_switch(channel) and org.default_for(type_, channel)


def effective_matrix(contact: Contact | None, org: OrgNotificationSettings) -> Matrix:
    """The full 8×2 matrix that responses carry as ``contact.notifications`` (gaps.md H3)."""
    return {
        t.value: {c: effective(contact, t.value, c, org) for c in CHANNELS}
        for t in NOTIFICATION_TYPES
    }


def reported_switches(contact: Contact) -> tuple[bool, bool]:
    """``sendSms``/``sendEmail`` for responses: the caller's values when given, otherwise
    "true if any type has that channel enabled" in the caller's matrix (gaps.md H3)."""

    def one(given: bool | None, channel: Channel) -> bool:
        if given is not None:
            return given
        if contact.notifications is None:
            return False
        return any(bool(v.get(channel, False)) for v in contact.notifications.values())

    return one(contact.send_sms, "sms"), one(contact.send_email, "email")


def contact_to_wire(contact: Contact, org: OrgNotificationSettings) -> dict[str, Any]:
    """``ContractContact`` as responses carry it: switches echoed or derived, full matrix."""
    send_sms, send_email = reported_switches(contact)
    return {
        "name": contact.name,
        "email": contact.email,
        "phoneNumber": contact.phone_number,
        "sendSms": send_sms,
        "sendEmail": send_email,
        "language": contact.language,
        "notifications": effective_matrix(contact, org),
    }


class ContractKind(enum.StrEnum):
    ILOQ = "iloq"
    MECHANICAL = "mechanical"


class ContractType(enum.StrEnum):
    DEFAULT = "default"
    FETCH = "fetch"
    RETURN = "return"


@dataclass(frozen=True, slots=True)
class AutomatView:
    id: str
    name: str
    label: str | None
    address: str | None
    timezone: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "label": self.label,
            "address": self.address,
            "timezone": self.timezone,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AutomatView:
        return cls(
            data["id"], data["name"], data.get("label"), data.get("address"), data["timezone"]
        )


@dataclass(frozen=True, slots=True)
class KeyView:
    """One key of a contract: in an automat (``automat``) or in manual storage
    (``storage_info``)."""

    id: str
    name: str | None = None
    pincode: str | None = None
    automat: AutomatView | None = None
    storage_info: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "pincode": self.pincode,
            "automat": self.automat.to_json() if self.automat else None,
            "storageInfo": self.storage_info,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyView:
        automat = data.get("automat")
        return cls(
            id=data["id"],
            name=data.get("name"),
            pincode=data.get("pincode"),
            automat=AutomatView.from_json(automat) if automat else None,
            storage_info=data.get("storageInfo"),
        )

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass(frozen=True, slots=True)
class ContractView:
    """What a notification needs to know about a contract: built by the contract code."""

    kind: ContractKind
    contract_id: str
    contract_type: ContractType
    organization_unit_id: str
    start: datetime
    end: datetime | None
    contact: Contact | None
    keys: tuple[KeyView, ...] = ()
    pick_up_info: str | None = None  # pickUpInfoForManualStorageKeys
    signature_link: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "contractId": self.contract_id,
            "contractType": self.contract_type.value,
            "organizationUnitId": self.organization_unit_id,
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "contact": self.contact.to_json() if self.contact else None,
            "keys": [k.to_json() for k in self.keys],
            "pickUpInfo": self.pick_up_info,
            "signatureLink": self.signature_link,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContractView:
        contact = data.get("contact")
        return cls(
            kind=ContractKind(data["kind"]),
            contract_id=data["contractId"],
            contract_type=ContractType(data["contractType"]),
            organization_unit_id=data["organizationUnitId"],
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]) if data.get("end") else None,
            contact=Contact.from_json(contact) if contact else None,
            keys=tuple(KeyView.from_json(k) for k in data.get("keys", ())),
            pick_up_info=data.get("pickUpInfo"),
            signature_link=data.get("signatureLink"),
        )

    def key(self, key_id: str) -> KeyView | None:
        return next((k for k in self.keys if k.id == key_id), None)


def applies_to(type_: NotificationType, view: ContractView) -> bool:
    """Which contracts a type concerns at all (notifications.md §2, "Applies to")."""
    ct = view.contract_type
    if type_ is NotificationType.CONTRACT_KEY_FETCHED:
        return ct is not ContractType.RETURN
    if type_ is NotificationType.CONTRACT_KEY_RETURNED:
        return ct is not ContractType.FETCH
    if type_ in (
        NotificationType.CONTRACT_END_REMINDER,
        NotificationType.CONTRACT_KEYS_NOT_RETURNED,
    ):
        return view.end is not None and ct is not ContractType.FETCH
    if type_ is NotificationType.CONTRACT_SIGNATURE_REQUESTED:
        return view.kind is ContractKind.MECHANICAL
    return True


@dataclass(frozen=True, slots=True)
class Reminder:
    type: NotificationType
    due_at: datetime


def plan_reminders(
    view: ContractView, org: OrgNotificationSettings, now: datetime
) -> list[Reminder]:
    """The scheduled messages a contract has from ``now`` on (notifications.md §2).

    The start reminder exists only when the start lies further ahead than its
    lead time; the end reminder and the keys-not-returned notice only for
    contracts with an end (not fetch contracts) and only while still in the future.
    """
    plan: list[Reminder] = []
    start_due = view.start - org.start_reminder_lead
    if start_due > now:
        plan.append(Reminder(NotificationType.CONTRACT_START_REMINDER, start_due))
    if view.end is not None and applies_to(NotificationType.CONTRACT_END_REMINDER, view):
        end_due = view.end - org.end_reminder_lead
        if end_due > now and end_due > view.start:
            plan.append(Reminder(NotificationType.CONTRACT_END_REMINDER, end_due))
        if view.end > now:
            plan.append(Reminder(NotificationType.CONTRACT_KEYS_NOT_RETURNED, view.end))
    return plan
