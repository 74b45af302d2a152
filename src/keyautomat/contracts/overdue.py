"""Overdue keys: keys still out after their contract's end (docs/contracts.md, "Overdue
keys").

The end evaluation (``progress.evaluate_end``) plans the ``contract-overdue`` jobs
of a contract whose keys it found still out, once per end:

* at the end, for keys kept in a manual storage (staff hand them out and take
  them back, so staff must chase them);
* at the end plus the unit's ``overdueAfterMinutes`` (notification settings,
  inherited; default an hour), for keys of automats, whose users may simply be
  on their way.

When a job runs, it looks at the keys again: those back by then are not
mentioned, and with none left nothing is sent. The unit's admins get the notice
``keysOverdue`` (its ``adminEmail``, else its ``replyTo``) listing the keys, where
they belong and whom to call; at the later stage the contact is reminded too
(``contractKeysNotReturned`` again) if the unit enables ``guestOverdueReminders``.
Everything is sent once per contract, stage and end, under outbox idempotency
keys, however often a job runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keyautomat.contracts import rules
from keyautomat.contracts.kind import Kinds
from keyautomat.contracts.model import Contract, ContractKey
from keyautomat.contracts.service import contact_line, notification_view
from keyautomat.contracts.store import ContractStore
from keyautomat.domain import webhooks as wh
from keyautomat.domain.notifications import ContractView, NotificationType
from keyautomat.service_layer.admin_notices import KEYS_OVERDUE

OVERDUE_KIND = "contract-overdue"
AT_END = "end"  # manual-storage keys
LATER = "later"  # automat keys, and the contact's reminder


def _still_out(contract: Contract) -> list[ContractKey]:
    return [
        k for k in contract.keys if rules.is_out(contract.contract_type, k.status, k.in_history)
    ]


def plan(store: ContractStore, contract: Contract, now: datetime) -> None:
    """The end found keys still out: plan the staff's (and the contact's) reminders."""
    out = _still_out(contract)
    if not out or contract.end is None:
        return
    end = contract.end
    stages = [(LATER, end + store.unit_settings(contract.organization_unit_id).overdue_after)]
    if any(not k.in_automat for k in out):
        stages.insert(0, (AT_END, end))
    for stage, due in stages:
        store.enqueue(
            OVERDUE_KIND,
            {"contractId": contract.id, "stage": stage, "end": end.isoformat()},
            now=now,
            ref=f"contract:{contract.id}:overdue",
            due_at=due,
            once=f"overdue:{contract.id}:{stage}:{end.isoformat()}",
        )


def _place(key: ContractKey, view: ContractView) -> str:
    shown = view.key(key.key_id)
    if shown is not None and shown.automat is not None:
        return f"{shown.automat.name}, locker {key.locker_index}"
    return key.manual_info or "manual storage"


def check(
    store: ContractStore,
    kinds: Kinds,
    contract_id: str,
    stage: str,
    end: str,
    now: datetime,
) -> None:
    """The ``contract-overdue`` job: tell about the keys of its stage still out, once."""
    contract = store.load(contract_id)
    if contract is None or contract.end is None or contract.end.isoformat() != end:
        return  # deleted, or its end moved (the new end plans its own)
    out = _still_out(contract)
    if not out:
        return
    view = notification_view(store, kinds[contract.kind], contract)
    occasion = f"{contract.id}:{stage}:{end}"
    for_staff = [k for k in out if k.in_automat == (stage == LATER)]
    if for_staff:
        facts: dict[str, Any] = {
            "contract": contract.public_id,
            "kind": contract.kind,
            "end_at": wh.format_time(contract.end),
            "contact": contact_line(contract.contact),
            "keys": [{"key": _label(view, k), "place": _place(k, view)} for k in for_staff],
        }
        store.notice(
            contract.organization_unit_id, KEYS_OVERDUE, occasion=occasion, facts=facts, now=now
        )
    if (
        stage == LATER
        and store.unit_settings(contract.organization_unit_id).guest_overdue_reminders
    ):
        store.remind(
            view, NotificationType.CONTRACT_KEYS_NOT_RETURNED, now=now, occasion=f"overdue:{end}"
        )


def _label(view: ContractView, key: ContractKey) -> str:
    shown = view.key(key.key_id)
    return shown.label if shown is not None else key.key_id
