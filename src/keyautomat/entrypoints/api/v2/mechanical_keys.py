"""Mechanical keys (spec endpoints §8; gaps.md A5, F6-F9; docs/mechanical-keys.md).

The operation ids are the vendor's own (``list``, ``create``, ``get``,
``update``, ``delete``), which its document also gives the mechanical key
contracts' operations (endpoints.md §1); ours does the same (docs/api.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import Field, WithJsonSchema
from sqlalchemy.orm import Session

from keyautomat.domain.mechanical import MechanicalKey as Key
from keyautomat.domain.mechanical import Storage
from keyautomat.entrypoints.api.auth import Caller
from keyautomat.entrypoints.api.deps import Services
from keyautomat.entrypoints.api.schemas import (
    SCHEMA_REF,
    ApiModel,
    PageAfter,
    PageLimit,
    Paginated,
    StrictBool,
    StrictStr,
    absent,
    json_response,
    page_payload,
)
from keyautomat.service_layer import mechanical_keys
from keyautomat.service_layer.mechanical_keys import KeyUpdate
from keyautomat.service_layer.pagination import PageRequest

router = APIRouter(prefix="/mechanical/keys", tags=["mechanical keys"])


class DeviceStorage(ApiModel):
    automat_id: str | None = absent()


class ManualStorage(ApiModel):
    manual_storage_info: str | None = absent()


class KeyStatus(ApiModel):
    available: bool


class MechanicalKey(ApiModel):
    id: str
    name: str | None = None
    organization_unit_id: str
    rfid_hex: str | None = None
    selected_storage: DeviceStorage | ManualStorage
    storage: DeviceStorage | ManualStorage | None
    target_storage: DeviceStorage | ManualStorage | None
    status: KeyStatus
    shared: bool


class DeviceStorageDto(ApiModel):
    """The key's home is this automat."""

    automat_id: str


class ManualStorageDto(ApiModel):
    """The key's home is a place staff hand it out from, e.g. a shelf."""

    manual_storage_info: str


# Documented, not validated: one model reads both shapes and names the field in its 400.
DOCUMENTED = (DeviceStorageDto, ManualStorageDto)
_STORAGE_DTO = WithJsonSchema(
    {"anyOf": [{"$ref": SCHEMA_REF.format(model=m.__name__)} for m in DOCUMENTED]}
)


class StorageDto(ApiModel):
    """``DeviceStorageDto`` (``automatId``) or ``ManualStorageDto`` (``manualStorageInfo``)."""

    automat_id: StrictStr | None = None
    manual_storage_info: StrictStr | None = None

    def parse(self) -> Storage:
        return Storage.parse(self.automat_id, self.manual_storage_info, "selectedStorage")


def _shared() -> Any:
    """``shared``, documented with the vendor's default: absent or null, it is false."""
    return Field(default=None, json_schema_extra={"default": False})


class CreateMechanicalKeyDto(ApiModel):
    id: StrictStr
    name: StrictStr | None = None
    organization_unit_id: StrictStr | None = None
    rfid_hex: StrictStr | None = None
    selected_storage: Annotated[StorageDto, _STORAGE_DTO]
    shared: StrictBool | None = _shared()
    away: StrictBool


class UpdateMechanicalKeyDto(ApiModel):
    name: StrictStr | None = None
    rfid_hex: StrictStr | None = None
    selected_storage: Annotated[StorageDto, _STORAGE_DTO] | None = absent()
    shared: StrictBool | None = _shared()


class DeleteMechanicalKeyDto(ApiModel):
    delete_active_contracts: StrictBool | None = absent()


def storage_wire(storage: Storage | None) -> dict[str, str] | None:
    if storage is None:
        return None
    if storage.automat_id is not None:
        return {"automatId": storage.automat_id}
    return {"manualStorageInfo": storage.manual_info or ""}


def wire(key: Key, target: Storage | None) -> dict[str, Any]:
    """The ``MechanicalKey`` schema as JSON-ready data."""
    return {
        "id": key.id,
        "name": key.name,
        "organizationUnitId": key.organization_unit_id,
        "rfidHex": key.rfid_hex,
        "selectedStorage": storage_wire(key.selected),
        "storage": storage_wire(key.storage),
        "targetStorage": storage_wire(target),
        "status": {"available": key.available},
        "shared": key.shared,
    }


def _render(session: Session, keys: list[Key], services: Services) -> list[dict[str, Any]]:
    targets = mechanical_keys.target_storages(session, keys, services.clock.now())
    return [wire(key, targets.get(key.object_id, key.selected)) for key in keys]


@router.get("", operation_id="list", response_model=Paginated[MechanicalKey])
async def list_keys(
    caller: Caller,
    services: Services,
    after: PageAfter = None,
    limit: PageLimit = None,
    search: str | None = None,
    selected_storage: Annotated[str | None, Query(alias="selectedStorage")] = None,
    automat_id: Annotated[str | None, Query(alias="automatId")] = None,
    organization_unit_id: Annotated[str | None, Query(alias="organizationUnitId")] = None,
) -> Response:
    page = PageRequest.parse(after, limit)

    def work(session: Session) -> dict[str, Any]:
        result = mechanical_keys.list_keys(
            session,
            caller,
            page,
            search=search,
            selected_storage=selected_storage,
            automat_id=automat_id,
            organization_unit_id=organization_unit_id,
        )
        return page_payload(result, _render(session, list(result.items), services))

    return json_response(await services.db.run(work))


@router.post("", status_code=201, operation_id="create", response_model=MechanicalKey)
async def create_key(body: CreateMechanicalKeyDto, caller: Caller, services: Services) -> Response:
    selected = body.selected_storage.parse()

    def work(session: Session) -> dict[str, Any]:
        key = mechanical_keys.create_key(
            session,
            caller,
            key_id=body.id,
            name=body.name,
            organization_unit_id=body.organization_unit_id,
            rfid_hex=body.rfid_hex,
            selected=selected,
            shared=bool(body.shared),
            away=body.away,
            now=services.clock.now(),
        )
        return _render(session, [key], services)[0]

    return json_response(await services.db.run(work), 201)


@router.get("/{id}", operation_id="get", response_model=MechanicalKey)
async def get_key(id: str, caller: Caller, services: Services) -> Response:  # noqa: A002
    return json_response(
        await services.db.run(
            lambda s: _render(s, [mechanical_keys.get_key(s, caller, id)], services)[0]
        )
    )


@router.patch("/{id}", operation_id="update", response_model=MechanicalKey)
async def update_key(
    id: str,  # noqa: A002
    body: UpdateMechanicalKeyDto,
    caller: Caller,
    services: Services,
) -> Response:
    change = KeyUpdate(
        name=body.name,
        rfid_hex=body.rfid_hex,
        selected=body.selected_storage.parse() if body.selected_storage is not None else None,
        shared=body.shared,
        given=frozenset(body.model_fields_set),
    )

    def work(session: Session) -> dict[str, Any]:
        key = mechanical_keys.update_key(session, caller, id, change)
        return _render(session, [key], services)[0]

    return json_response(await services.db.run(work))


@router.delete("/{id}", status_code=204, operation_id="delete", response_class=Response)
async def delete_key(
    id: str,  # noqa: A002
    caller: Caller,
    services: Services,
    body: DeleteMechanicalKeyDto | None = Body(default=None),  # noqa: B008
) -> Response:
    flag = bool(body and body.delete_active_contracts)
    await services.db.run(
        lambda s: mechanical_keys.delete_key(
            s, caller, id, delete_active_contracts=flag, now=services.clock.now()
        )
    )
    return Response(status_code=204)
