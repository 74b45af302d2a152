"""One contract model for every kind, and the commands the use cases take.

A contract has a period and keys. Each key sits in an automat locker (with a
pincode the automat honours) or, for mechanical keys, in a manual storage. What
a kind adds is carried by the same model: iLOQ contracts have three types and
the caller's request echoed on the wire; mechanical contracts have a public id
per root organization, ``freeLockerAfterFetch`` and a signature. The wire
format is not here: each kind's ``wire`` module parses requests into the
commands below and writes responses from the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keyautomat.contracts.rules import ContractType
from keyautomat.domain.notifications import Contact

# userVerification values that hold a contract's codes back until the contact acts:
# "1" a signature, "2" strong authentication (gaps.md F3).
VERIFYING = frozenset({"1", "2"})


@dataclass(slots=True)
class ContractKey:
    position: int
    # The key's id on the wire: the iLOQ key id, or the mechanical key's caller-given id.
    key_id: str
    # ``contract_keys.key_id``: the iLOQ key id, or the mechanical key's object id.
    stored_id: str
    automat_id: str | None
    locker_index: int | None
    manual_info: str | None
    pincode: str | None
    pincode_id: str | None
    status: str | None
    in_history: bool
    # When the contract's code last released the key (iLOQ: programmed for this
    # contract; key30: opened by its code), cleared when it is put back.
    opened_at: datetime | None = None
    # Since when the key's code is held back from the automat because the key is out with
    # another contract (back to back, docs/contracts.md); None while it is not.
    held_since: datetime | None = None

    @property
    def due_on_automat(self) -> bool:
        """The key has a code that is not on its automat and should be there unless a
        signature is awaited: it is not held back, nor retired."""
        return (
            self.automat_id is not None
            and self.pincode is not None
            and self.pincode_id is None
            and self.held_since is None
            and not self.in_history
        )

    @property
    def in_automat(self) -> bool:
        return self.automat_id is not None


@dataclass(slots=True)
class Contract:
    id: str  # internal, 24 hex
    kind: str
    public_id: str  # the id on the wire: ``id`` for iLOQ, the caller's id for mechanical
    organization_unit_id: str
    contract_type: ContractType
    start: datetime
    end: datetime | None
    contact: Contact | None
    # What the caller asked for, echoed as requested (iLOQ: accessRightIds, numberOfKeys,
    # keyIds, keyAutomatId, groupId; mechanical: the keys as named).
    request: dict[str, Any]
    end_evaluated_at: datetime | None
    completed_at: datetime | None
    keys: list[ContractKey] = field(default_factory=list)
    iloq_person_id: str | None = None
    free_locker_after_fetch: bool = False
    user_verification: str = "0"
    pick_up_info: str | None = None
    # When the contact completed the verification: signed ("1") or proved who they are
    # with the unit's identity provider ("2", docs/strong-authentication.md).
    signed_at: datetime | None = None
    # The verification link's token, known only in the transaction that minted it (the
    # database keeps its hash): the contractSignatureRequested message carries it.
    signature_token: str | None = None
    # Until when the link of "2" may be used (a signature link of "1" does not expire).
    link_expires_at: datetime | None = None

    @property
    def awaiting_verification(self) -> bool:
        """userVerification "1" before the signature, or "2" before the identity is
        proved: the codes are not on the automats."""
        return self.user_verification in VERIFYING and self.signed_at is None

    @property
    def progressed(self) -> bool:
        return any(k.status is not None for k in self.keys)

    @property
    def has_manual_keys(self) -> bool:
        return any(not k.in_automat for k in self.keys)

    @property
    def access_right_ids(self) -> list[str]:
        return list(self.request.get("accessRightIds") or [])

    def key_at(self, position: int) -> ContractKey:
        return next(k for k in self.keys if k.position == position)


@dataclass(frozen=True, slots=True)
class Slot:
    """A locker of an automat, and the key the contract blocks with it (None: empty)."""

    automat_id: str
    locker_index: int
    key_id: str | None


@dataclass(frozen=True, slots=True)
class CodeGrant:
    """A code the automat honours for one key of a contract, over a window
    (``devices.add_pincode``)."""

    automat_id: str
    code: str
    locker_index: int
    valid_from: datetime
    valid_until: datetime | None
    purpose: str
    key_id: str
    reference: str  # the contract's id
    program_first: bool = False

    @classmethod
    def for_key(
        cls,
        contract: Contract,
        key: ContractKey,
        window: tuple[datetime, datetime | None],
        purpose: str,
        *,
        program_first: bool = False,
    ) -> CodeGrant:
        assert key.automat_id is not None
        assert key.locker_index is not None
        assert key.pincode is not None
        return cls(
            key.automat_id,
            key.pincode,
            key.locker_index,
            *window,
            purpose,
            key.key_id,
            contract.id,
            program_first,
        )


@dataclass(frozen=True, slots=True)
class PlannedKey:
    """One key a new contract books, as its kind chose it."""

    key_id: str  # on the wire
    stored_id: str  # in contract_keys
    automat_id: str | None = None
    locker_index: int | None = None
    manual_info: str | None = None
    given_pincode: str | None = None
    # The key the reservation blocks with the locker (None: an empty locker awaiting a return).
    reserved_key_id: str | None = None
    # The key is in its locker now; False: it is out (with another contract's user), and
    # the new contract's code waits for it (docs/contracts.md, "Back to back").
    in_place: bool = True


@dataclass(frozen=True, slots=True)
class Terms:
    """A new contract's period and the terms every kind stores the same way."""

    contract_type: ContractType
    start: datetime
    end: datetime | None
    contact: Contact | None
    iloq_person_id: str | None = None
    free_locker_after_fetch: bool = False
    user_verification: str = "0"
    pick_up_info: str | None = None


@dataclass(frozen=True, slots=True)
class Period:
    """A contract's (new) period, and until when it blocks its keys and lockers."""

    start: datetime
    end: datetime | None
    until: datetime


@dataclass(slots=True)
class Draft:
    """A new contract as its kind planned it, before the core books it."""

    terms: Terms
    keys: list[PlannedKey]
    request: dict[str, Any]
    public_id: str | None = None  # the caller's id; None: the internal id
    root_unit_id: str | None = None  # set for kinds whose ids are unique per root
    # Where a caller's code is named in the request, for the 400 of a code in use.
    pincode_field: str = "pincodes.{}"
    # userVerification "1" or "2": the link's token (sent; the store keeps only its hash),
    # and for "2" until when it may be used.
    signature_token: str | None = None
    link_expires_at: datetime | None = None


UNSET: Any = object()
"""A PATCH field that was not sent (None means "sent as null")."""


@dataclass(frozen=True, slots=True)
class ContractChange:
    """A PATCH after its shape was checked: fields left UNSET keep their value."""

    start: datetime | None = None
    end: Any = UNSET  # datetime | None
    contact: Any = UNSET  # Contact | None
    iloq_person_id: Any = UNSET  # str | None, sent with the contact
    user_verification: str | None = None
    pick_up_info: Any = UNSET  # str | None

    @property
    def changes_end(self) -> bool:
        return self.end is not UNSET

    @property
    def changes_contact(self) -> bool:
        return self.contact is not UNSET


@dataclass(frozen=True, slots=True)
class ListFilters:
    """The list filters (gaps.md C14: none given = all, several = their union), and F2's key."""

    ongoing: bool | None = None
    ended: bool | None = None
    future: bool | None = None
    key_id: str | None = None
