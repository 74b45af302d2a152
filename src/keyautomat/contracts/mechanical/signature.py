"""userVerification of mechanical contracts (gaps.md F3): the signature of "1", and the
units that allow strong authentication ("2")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from keyautomat.adapters.orm_mechanical import strong_auth_units
from keyautomat.contracts import service
from keyautomat.contracts.mechanical.kind import MechanicalKind, token_hash
from keyautomat.contracts.model import Contract
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.mechanical import check_signature_image
from keyautomat.service_layer import devices, notifications
from keyautomat.service_layer.principal import Principal


def contract_for_token(session: Session, token: str, *, for_update: bool = False) -> Contract:
    store = SqlContractStore(session)
    found = store.contract_for_token_hash(token_hash(token)) if token else None
    contract = store.load(found, for_update=for_update) if found is not None else None
    if contract is None:
        raise NotFound("Signature request")
    return contract


def sign(
    session: Session,
    kind: MechanicalKind,
    token: str,
    name: str,
    data: str | None,
    *,
    now: datetime,
) -> Contract:
    """Store the signature and when it was given; the device keys' codes reach the automats."""
    # Locked: two submissions at once (a double tap) must not both put the codes on.
    contract = contract_for_token(session, token, for_update=True)
    if contract.signed_at is not None:
        return contract
    if not name.strip():
        raise InvalidInput("name", "is required")
    if data:
        check_signature_image(data)
    store = SqlContractStore(session)
    store.update_terms(
        contract.id,
        {"signed_at": now, "signature_name": name.strip(), "signature_data": data or None},
    )
    contract.signed_at = now
    service.put_due_codes(store, kind, contract)
    return contract


def strong_auth_enabled(session: Session, principal: Principal, unit_id: str) -> bool:
    """Whether ``unit_id`` allows userVerification "2" (F3); admins of its subtree only."""
    principal.require_admin()
    notifications.scoped_unit(session, principal, unit_id)
    return SqlContractStore(session).strong_auth(unit_id)


def set_strong_auth(session: Session, principal: Principal, unit_id: str, enabled: bool) -> bool:
    """Enable or disable userVerification "2" for exactly this unit (not its children).

    Idempotent; concurrent enables are harmless (insert ignoring the duplicate).
    Disabling does not touch contracts that already ask for "2"."""
    principal.require_admin()
    notifications.scoped_unit(session, principal, unit_id)
    if enabled:
        devices.insert_ignoring_duplicates(
            session, strong_auth_units, {"organization_unit_id": unit_id}
        )
    else:
        session.execute(
            delete(strong_auth_units).where(strong_auth_units.c.organization_unit_id == unit_id)
        )
    return enabled
