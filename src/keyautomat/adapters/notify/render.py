"""Message content: Jinja2 layouts filled with the catalog's words and Babel's dates.

Times are shown in the automat's time zone (manual storage: the organization
unit's zone), always with the zone's abbreviation or offset. SMS texts are
folded into GSM-7 where possible and must fit two segments; the tests check
every type in every language.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from babel.dates import format_date, format_time
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from keyautomat.adapters.notify.catalog import LABELS, MESSAGES, NOTICE_SUBJECTS
from keyautomat.adapters.notify.sms import fold_to_gsm7, is_gsm7, segments
from keyautomat.domain.notifications import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    AutomatView,
    Channel,
    ContractView,
    KeyView,
    NotificationType,
    OrgNotificationSettings,
)

TEMPLATES = Path(__file__).parent / "templates"
MAX_SMS_SEGMENTS = 2
# Babel knows Norwegian Bokmål as ``nb``; the API's code is ``no``.
_BABEL_LOCALE = {"no": "nb"}

# Which blocks each type shows (notifications.md §2, "Fires when").
_BLOCKS: dict[NotificationType, frozenset[str]] = {
    NotificationType.CONTRACT_CREATED: frozenset({"pincodes", "place", "pick_up_info", "period"}),
    NotificationType.CONTRACT_UPDATED: frozenset({"pincodes", "place", "pick_up_info", "period"}),
    NotificationType.CONTRACT_START_REMINDER: frozenset(
        {"pincodes", "place", "pick_up_info", "period"}
    ),
    NotificationType.CONTRACT_END_REMINDER: frozenset({"deadline", "place"}),
    NotificationType.CONTRACT_KEYS_NOT_RETURNED: frozenset({"missing", "place"}),
    NotificationType.CONTRACT_KEY_FETCHED: frozenset({"key", "return_by"}),
    NotificationType.CONTRACT_KEY_RETURNED: frozenset({"key"}),
    NotificationType.CONTRACT_SIGNATURE_REQUESTED: frozenset({"link", "place", "period"}),
    # The code does not work yet: no pincode until the key is back (docs/contracts.md).
    NotificationType.CONTRACT_KEY_DELAYED: frozenset({"key", "place"}),
    NotificationType.CONTRACT_KEY_AVAILABLE: frozenset({"pincodes", "place", "period"}),
}


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str
    text: str
    html: str | None = None


class _Show:
    """``show.pincodes`` etc. in templates: which blocks the type carries."""

    def __init__(self, blocks: frozenset[str]) -> None:
        self._blocks = blocks

    def __getattr__(self, name: str) -> bool:
        return name in self._blocks


def _zone(name: str | None, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _zone_label(moment: datetime) -> str:
    name = moment.tzname() or "UTC"
    return f"UTC{name}" if name[:1] in "+-" else name


class Renderer:
    """Renders one (type, language, channel) message for a contract."""

    def __init__(self, templates: Path = TEMPLATES) -> None:
        self.env = Environment(
            loader=FileSystemLoader(templates),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )

    def render(
        self,
        view: ContractView,
        type_: NotificationType,
        channel: Channel,
        org: OrgNotificationSettings,
        *,
        key_id: str | None = None,
        missing_key_ids: tuple[str, ...] | None = None,
    ) -> RenderedMessage:
        context = self._context(view, type_, org, key_id, missing_key_ids)
        if channel == "sms":
            return RenderedMessage(subject=context["subject"], text=self._sms(type_, context))
        text = _tidy(self.env.get_template("email.txt").render(context))
        html = self.env.get_template("email.html").render(context)
        return RenderedMessage(subject=context["subject"], text=text, html=html)

    def render_notice(
        self, notice: str, facts: dict[str, Any], org: OrgNotificationSettings
    ) -> RenderedMessage:
        """A notice to a unit's admins (plain-text email, English), times in the unit's zone.

        ``facts`` are the notice's own fields; those ending in ``_at``/``_since``
        are ISO-8601 instants, shown in the unit's time zone.
        """
        zone = _zone(None, org.timezone)
        context: dict[str, Any] = {}
        for name, value in facts.items():
            context[name] = value
            if isinstance(value, str) and name.endswith(("_at", "_since")):
                local = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(zone)
                context[name] = f"{local:%Y-%m-%d %H:%M} ({_zone_label(local)})"
        sender = org.sender_name or "keyautomat"
        context["footer"] = LABELS[DEFAULT_LANGUAGE]["footer"].format(sender=sender)
        subject = NOTICE_SUBJECTS[notice].format(**context)
        text = _tidy(self.env.get_template(f"notices/{notice}.txt").render(context))
        return RenderedMessage(subject=subject, text=text)

    def _sms(self, type_: NotificationType, context: dict[str, Any]) -> str:
        """The SMS, shortened until it fits two segments: first without the place, then
        without the period and pick-up info; the pincode and the opening always stay."""
        template = self.env.get_template("sms.txt")
        text = ""
        for dropped in ((), ("place",), ("place", "period", "pick_up_info")):
            blocks = _BLOCKS[type_] - frozenset(dropped)
            raw = template.render({**context, "show": _Show(blocks)})
            text = fold_to_gsm7(" ".join(raw.split()))
            if segments(text) <= MAX_SMS_SEGMENTS:
                return text
        limit = 306 if is_gsm7(text) else 134
        return text[: limit - 3] + "..."

    def _context(
        self,
        view: ContractView,
        type_: NotificationType,
        org: OrgNotificationSettings,
        key_id: str | None,
        missing_key_ids: tuple[str, ...] | None,
    ) -> dict[str, Any]:
        contact = view.contact
        lang = contact.effective_language if contact else DEFAULT_LANGUAGE
        lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
        words = {**MESSAGES[DEFAULT_LANGUAGE][type_.value], **MESSAGES.get(lang, {}).get(type_, {})}
        labels = {**LABELS[DEFAULT_LANGUAGE], **LABELS.get(lang, {})}
        locale = Locale.parse(_BABEL_LOCALE.get(lang, lang))
        first_automat = next((k.automat for k in view.keys if k.automat), None)
        zone = _zone(first_automat.timezone if first_automat else None, org.timezone)

        def when(moment: datetime) -> tuple[str, str]:
            local = moment.astimezone(zone)
            shown = (
                f"{format_date(local, 'medium', locale=locale)} "
                f"{format_time(local, 'short', locale=locale)}"
            )
            return shown, _zone_label(local)

        start, start_zone = when(view.start)
        if view.end is not None:
            end, end_zone = when(view.end)
            if start_zone == end_zone:
                period = f"{start} – {end} ({start_zone})"
            else:
                period = f"{start} ({start_zone}) – {end} ({end_zone})"
            end_text: str | None = f"{end} ({end_zone})"
        else:
            period = labels["since"].format(start=f"{start} ({start_zone})")
            end_text = None

        keys = list(view.keys)
        key = view.key(key_id) if key_id else None
        if key is None and key_id:
            key = KeyView(id=key_id)
        if missing_key_ids is None:
            missing = keys
        else:
            missing = [view.key(k) or KeyView(id=k) for k in missing_key_ids]
        relevant = (
            [key]
            if key
            else (missing if type_ is NotificationType.CONTRACT_KEYS_NOT_RETURNED else keys)
        )
        places = _places(relevant)
        manual = any(k.automat is None for k in relevant) or not relevant
        sender = org.sender_name or "keyautomat"
        return {
            "lang": lang,
            "t": words,
            "l": labels,
            "subject": words["subject"],
            "name": contact.name if contact else "",
            "show": _Show(_BLOCKS[type_]),
            "pincodes": [
                {"label": k.label, "pincode": k.pincode} for k in keys if k.pincode is not None
            ],
            "key": {"label": key.label} if key else None,
            "missing": [{"label": k.label} for k in missing],
            "places": places,
            "pick_up_info": view.pick_up_info if manual else None,
            "period": period,
            "end": end_text,
            "link": view.signature_link,
            "footer": labels["footer"].format(sender=sender),
        }


def _places(keys: list[KeyView]) -> list[dict[str, str]]:
    """Each distinct place once: automat name and address, or the manual storage text."""
    seen: dict[str, dict[str, str]] = {}
    for k in keys:
        if k.automat is not None:
            seen.setdefault(f"a:{k.automat.id}", _automat_place(k.automat))
        elif k.storage_info:
            seen.setdefault(
                f"m:{k.storage_info}", {"short": k.storage_info, "long": k.storage_info}
            )
    return list(seen.values())


def _automat_place(automat: AutomatView) -> dict[str, str]:
    short = ", ".join(p for p in (automat.name, automat.address) if p)
    long = ", ".join(p for p in (automat.name, automat.label, automat.address) if p)
    return {"short": short, "long": long}


def _tidy(text: str) -> str:
    """Trailing spaces off, at most one blank line in a row."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy) + "\n"
