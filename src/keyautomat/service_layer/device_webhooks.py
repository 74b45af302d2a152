"""Device alarms become ``device-alarm`` webhooks (webhooks.md §5.4).

The device gateway records every alarm activation, acknowledgement and
deactivation as an automat event; this handler publishes each one to the
subscribers of the automat's organization unit, in the same transaction, so an
alarm and its webhook commit together.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.domain import webhooks as wh
from keyautomat.domain.devices import AutomatEvent, AutomatEventType
from keyautomat.service_layer import webhooks
from keyautomat.service_layer.wiring import Wiring


def publish_device_alarm(session: Session, event: AutomatEvent) -> None:
    if event.type != AutomatEventType.DEVICE_ALARM:
        return
    data = event.data
    if data.get("alarmType") not in wh.ALARM_TYPES:
        return  # internal alarm kinds stay internal; the webhook catalogue is closed
    unit_id = session.scalar(
        select(orm.automats.c.organization_unit_id).where(orm.automats.c.id == event.automat_id)
    )
    if unit_id is None:
        return
    end = data.get("end")
    webhooks.publish(
        session,
        organization_unit_id=unit_id,
        event_type="device-alarm",
        data=wh.device_alarm_data(
            alarm_type=data["alarmType"],
            state=data["state"],
            device_id=event.automat_id,
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(end) if end else None,
            acknowledged=bool(data["acknowledged"]),
        ),
        occurred_at=event.occurred_at,
        now=event.recorded_at or event.occurred_at,
    )


def register(wiring: Wiring) -> None:
    wiring.device_event_handlers.append(publish_device_alarm)
