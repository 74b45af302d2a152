"""userVerification of mechanical contracts (gaps.md F3): the signature of "1", and what
"1" and "2" share: the verification link and releasing the codes once verified
(strong authentication itself is ``identity.py``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from keyautomat.contracts import service
from keyautomat.contracts.mechanical.kind import MechanicalKind, token_hash
from keyautomat.contracts.model import Contract
from keyautomat.contracts.store import SqlContractStore
from keyautomat.domain.errors import InvalidInput, NotFound
from keyautomat.domain.mechanical import check_signature_image


def contract_for_token(
    session: Session, token: str, *, verification: str = "1", for_update: bool = False
) -> Contract:
    """The contract whose verification link of kind ``verification`` ("1" signature, "2"
    identity) carries ``token``; a link of the other kind is not found here."""
    store = SqlContractStore(session)
    found = store.contract_for_token_hash(token_hash(token)) if token else None
    contract = store.load(found, for_update=for_update) if found is not None else None
    if contract is None or contract.user_verification != verification:
        raise NotFound("Signature request")
    return contract


def release_codes(
    store: SqlContractStore, kind: MechanicalKind, contract: Contract, now: datetime
) -> None:
    """The verification is done (``signed_at`` set): the device keys' codes reach their
    automats with the next sync, and ``contract-update`` tells the integrator."""
    assert not contract.awaiting_verification
    service.put_due_codes(store, kind, contract)  # not those held while their key is out
    service.publish_contract_update(store, contract, now)


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
    release_codes(store, kind, contract, now)
    return contract
