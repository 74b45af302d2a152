"""Validation of a contract's contact (spec endpoints.md §2.3, notifications.md §3 and §5).

The contract API calls :func:`parse_contact` with what the caller sent; every
rejection is an :class:`InvalidInput` naming the offending field
(``contact.language``, ``contact.email``, ``contact.phoneNumber``, ...), which
the API answers with a 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import phonenumbers

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.notifications import (
    CHANNELS,
    LANGUAGES,
    NOTIFICATION_TYPES,
    Contact,
    Matrix,
)

# Deliberately simple: one @, a dot in the domain, no spaces, sane lengths.
# Whether the mailbox exists is only learned by sending to it.
_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_TYPE_NAMES = frozenset(t.value for t in NOTIFICATION_TYPES)


def normalise_email(value: str, field: str = "contact.email") -> str:
    value = value.strip()
    local, _, domain = value.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii") if domain else domain
    except UnicodeError as exc:
        raise InvalidInput(field, "is not a valid email address") from exc
    candidate = f"{local}@{domain.lower()}"
    if len(candidate) > 254 or len(local) > 64 or not _EMAIL.fullmatch(candidate):
        raise InvalidInput(field, "is not a valid email address")
    return candidate


def normalise_phone(value: str, field: str = "contact.phoneNumber") -> str:
    """A phone number in international format, returned as E.164 (``+358401234567``).

    ``00`` is accepted for ``+``; spaces, dashes and brackets are ignored. A
    number without a country code cannot be placed, so it is rejected.
    """
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+"):
        raise InvalidInput(field, "must be in international format, e.g. +358401234567")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(field, "is not a valid phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput(field, "is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# A number kept as given (see ``phone_number``) is bounded like one that could be dialled.
MAX_PHONE_TEXT = 32


def phone_number(value: str, *, wants_sms: bool, field: str = "contact.phoneNumber") -> str:
    """The contact's phone number: E.164 when it is a valid international number.

    A contact that asks for SMS must give one (400 otherwise): only such a number can be
    texted. A contact that asks for none may give the number in any form, say national
    (``040 123 4567``), as contact data: it is kept as given and never texted. It is not
    guessed into international form, from the automat or otherwise: automats record no
    country, and a wrong guess would text a stranger (docs/api.md).
    """
    try:
        return normalise_phone(value, field)
    except InvalidInput:
        if wants_sms:
            raise
    if len(value) > MAX_PHONE_TEXT or not value.isprintable():
        raise InvalidInput(field, f"must be at most {MAX_PHONE_TEXT} printable characters")
    return value


def parse_language(value: Any, field: str = "contact.language") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in LANGUAGES:
        raise InvalidInput(field, f"must be one of {', '.join(LANGUAGES)}")
    return value


def parse_matrix(value: Any, field: str = "contact.notifications") -> Matrix | None:
    """The caller's ``notifications`` object as given; null means absent (notifications.md §3).

    Unknown type names are ignored (gaps.md A3); a listed channel must be a boolean.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(field, "must be an object")
    matrix: Matrix = {}
    for type_name, channels in value.items():
        if type_name not in _TYPE_NAMES or channels is None:
            continue
        if not isinstance(channels, Mapping):
            raise InvalidInput(f"{field}.{type_name}", "must be an object")
        entry: dict[str, bool] = {}
        for channel in CHANNELS:
            if channel in channels and channels[channel] is not None:
                flag = channels[channel]
                if not isinstance(flag, bool):
                    raise InvalidInput(f"{field}.{type_name}.{channel}", "must be a boolean")
                entry[channel] = flag
        matrix[type_name] = entry
    return matrix


def _optional_bool(value: Any, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidInput(field, "must be a boolean")


def _optional_str(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    return value.strip() or None


def parse_contact(data: Mapping[str, Any] | None, field: str = "contact") -> Contact | None:
    """Validate and normalise a contact object in the wire format (camelCase keys)."""
    if data is None:
        return None
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"{field}.name", "is required")
    email = _optional_str(data.get("email"), f"{field}.email")
    phone = _optional_str(data.get("phoneNumber"), f"{field}.phoneNumber")
    contact = Contact(
        name=name.strip(),
        email=normalise_email(email, f"{field}.email") if email else None,
        language=parse_language(data.get("language"), f"{field}.language"),
        send_sms=_optional_bool(data.get("sendSms"), f"{field}.sendSms"),
        send_email=_optional_bool(data.get("sendEmail"), f"{field}.sendEmail"),
        notifications=parse_matrix(data.get("notifications"), f"{field}.notifications"),
    )
    if phone is None:
        return contact
    wants_sms = any(contact.may_want(t.value, "sms") for t in NOTIFICATION_TYPES)
    number = phone_number(phone, wants_sms=wants_sms, field=f"{field}.phoneNumber")
    return replace(contact, phone_number=number)
