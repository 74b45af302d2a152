"""Notices to an organization unit's admins, sent as email through the notification outbox.

The platform tells a unit's admins about trouble they have to act on: a webhook
subscription disabled because its receiver kept failing, a key still out when the
next contract of it starts, keys not returned after their contract's end. A unit has
no list of admin people: service accounts are machines without addresses. So
the address is a notification setting of the unit, ``adminEmail``, inherited
like the others; a unit that has not set one falls back to its ``replyTo``
desk (``OrgNotificationSettings.admin_recipient``). With neither, the notice
is not sent and a warning is logged; the state it reports stays visible in the
admin API.

A notice is an outbox row of kind ``notification`` (the worker's notification
handler renders and mails it) plus a ``notifications`` row without a contract,
so ``GET /admin/notifications`` shows it with its recipient and status. Both
are written in the caller's transaction, under an idempotency key naming the
occasion: one notice per occasion, however often the caller runs.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from keyautomat.domain.notifications import DEFAULT_LANGUAGE
from keyautomat.service_layer import notifications, outbox

log = logging.getLogger(__name__)

WEBHOOK_DISABLED = "webhookSubscriptionDisabled"
# A contract started while its key was still out with the previous contract's user.
KEY_DELAYED = "keyDelayed"
# Keys still out after their contract's end (manual storage at once, automat keys later).
KEYS_OVERDUE = "keysOverdue"
NOTICES = (WEBHOOK_DISABLED, KEY_DELAYED, KEYS_OVERDUE)
# The payload field that marks a ``notification`` row as a notice to the unit's admins.
NOTICE = "notice"


def queue(
    session: Session,
    *,
    organization_unit_id: str,
    notice: str,
    occasion: str,
    facts: dict[str, Any],
    now: datetime,
) -> int | None:
    """Queue ``notice`` for the unit's admins, once per ``occasion``; returns the row id.

    None when the unit (and its ancestors) give no address, or when this
    occasion was already noticed.
    """
    if notice not in NOTICES:
        raise ValueError(f"unknown notice {notice!r}")
    org = notifications.load_settings(session, organization_unit_id)
    recipient = org.admin_recipient
    if recipient is None:
        log.warning(
            "no adminEmail or replyTo for unit %s: notice %s about %s not sent",
            organization_unit_id,
            notice,
            occasion,
        )
        return None
    payload = {
        NOTICE: notice,
        "channel": "email",
        "recipient": recipient,
        "organizationUnitId": organization_unit_id,
        "facts": facts,
    }
    message_id = outbox.enqueue(
        session,
        notifications.KIND,
        payload,
        now=now,
        idempotency_key=f"notice:{notice}:{occasion}",
    )
    if message_id is not None:
        notifications.record_message(
            session,
            outbox_id=message_id,
            organization_unit_id=organization_unit_id,
            contract_id=None,
            key_id=None,
            type_=notice,
            channel="email",
            recipient=recipient,
            language=DEFAULT_LANGUAGE,
            now=now,
        )
    return message_id
