"""Admin views of the device link: online status and alarms of an automat."""

from __future__ import annotations

from fastapi import APIRouter

from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import ApiModel, UtcDatetime
from keyautomat.service_layer import devices

router = APIRouter(prefix="/automats", tags=["admin"])


class DeviceStatusDto(ApiModel):
    automat_id: str
    hw_id: str | None
    lifecycle_state: str
    online: bool
    last_seen_at: UtcDatetime | None
    firmware: str | None
    locker_count: int | None
    desired_sync_version: int
    synced_version: int


class AlarmDto(ApiModel):
    id: str
    alarm_type: str
    state: str
    start: UtcDatetime
    end: UtcDatetime | None
    acknowledged: bool
    acknowledged_at: UtcDatetime | None

    @classmethod
    def of(cls, alarm: devices.AlarmView) -> AlarmDto:
        return cls(
            id=alarm.id,
            alarm_type=alarm.alarm_type,
            state="activated" if alarm.ended_at is None else "deactivated",
            start=alarm.started_at,
            end=alarm.ended_at,
            acknowledged=alarm.acknowledged_at is not None,
            acknowledged_at=alarm.acknowledged_at,
        )


class AlarmList(ApiModel):
    data: list[AlarmDto]


@router.get("/{id}/device")
async def device_status(id: str, caller: Caller, services: Services) -> DeviceStatusDto:  # noqa: A002
    now = services.clock.now()
    offline_after = services.settings.device_offline_after_seconds
    status = await services.db.run(
        lambda s: devices.device_status(s, caller, id, now, offline_after)
    )
    return DeviceStatusDto(
        automat_id=status.automat_id,
        hw_id=status.hw_id,
        lifecycle_state=status.lifecycle_state,
        online=status.online,
        last_seen_at=status.last_seen_at,
        firmware=status.firmware,
        locker_count=status.locker_count,
        desired_sync_version=status.desired_version,
        synced_version=status.synced_version,
    )


@router.get("/{id}/alarms")
async def list_alarms(id: str, caller: Caller, services: Services) -> AlarmList:  # noqa: A002
    alarms = await services.db.run(lambda s: devices.list_alarms(s, caller, id))
    return AlarmList(data=[AlarmDto.of(a) for a in alarms])


@router.post("/{id}/alarms/{alarm_id}/acknowledge")
async def acknowledge_alarm(
    id: str,  # noqa: A002
    alarm_id: str,
    caller: Caller,
    services: Services,
) -> AlarmDto:
    now = services.clock.now()
    alarm = await services.db.run(lambda s: devices.acknowledge_alarm(s, caller, id, alarm_id, now))
    return AlarmDto.of(alarm)
