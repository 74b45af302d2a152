"""What the forms of the contract, key, group, webhook, notification and organization pages
share: a refused field shown where the form has it, and times typed on a wall clock
(docs/console.md). The use cases name fields as the API does (``contact.email``,
``keyIds.2``); the forms name them their own way (``contact_email``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from keyautomat.domain.errors import DomainError, InvalidInput
from keyautomat.domain.times import time_zone
from keyautomat.entrypoints.console.strings import t
from keyautomat.entrypoints.console.web import Submission, field_errors

FORM = "_form"  # the key of an error that is no field's: shown above the form


def form_errors(exc: DomainError, fields: Mapping[str, str]) -> dict[str, str]:
    """The refused field as the form names it (``contact.email`` → ``contact_email``,
    ``keyIds.2`` → ``key_ids``, a form's own name as it is); a refusal that names no field
    of the form (a conflict, a field no form has) is the form's own error."""
    if not isinstance(exc, InvalidInput):
        return {FORM: exc.message}
    ((name, message),) = field_errors(exc).items()
    parts = name.split(".")
    for size in (2, 1):
        found = fields.get(".".join(parts[:size]))
        if found is not None:
            return {found: f"{name}: {message}" if name != found else message}
    if name in fields.values():
        return {name: message}
    return {FORM: f"{name}: {message}"}


def zone_of(submitted: Submission, field: str = "timezone") -> ZoneInfo:
    """The time zone a form's times are typed in."""
    return time_zone(submitted.required(field, max_length=64), field)


def wall_clock(submitted: Submission, field: str, zone: ZoneInfo) -> datetime | None:
    """A ``datetime-local`` field, the wall clock in ``zone``, as a UTC time (None: empty)."""
    value = submitted.text(field, max_length=32)
    if value is None:
        return None
    try:
        local = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(field, t("form.datetime.invalid")) from None
    if local.tzinfo is not None:
        raise InvalidInput(field, t("form.datetime.invalid"))
    return local.replace(tzinfo=zone).astimezone(UTC)


def local_input(value: datetime | None, zone: str) -> str:
    """A stored time as a ``datetime-local`` field shows it, on the wall clock of ``zone``."""
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M")
