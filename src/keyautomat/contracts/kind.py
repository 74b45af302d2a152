"""What a contract kind plugs into the one contract flow (``service.py``, ``progress.py``).

The flow is written once: create, read, change, delete, the device events, the
end. A kind says where a new contract's keys come from (:meth:`ContractKind.plan`),
what its own terms are, and adds to a few steps through the hooks below; every
hook has the behaviour most kinds want, so a kind overrides only what differs.
Adding a kind is one module with a subclass, its ``wire`` module and a router.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from keyautomat.contracts.model import (
    Contract,
    ContractChange,
    ContractKey,
    Draft,
    Period,
    PlannedKey,
)
from keyautomat.contracts.rules import ContractType
from keyautomat.contracts.store import ContractStore
from keyautomat.domain.devices import AutomatEvent
from keyautomat.domain.notifications import ContractKind as ViewKind
from keyautomat.service_layer.principal import Principal

New = TypeVar("New")


class ContractKind(Generic[New]):
    """The base every kind subclasses; see the module docstring."""

    name: ClassVar[str]
    view_kind: ClassVar[ViewKind]
    # Codes of this kind's contracts may be chosen before they go on the automat (a
    # signature awaited): a new code must not clash with those either.
    defers_codes: ClassVar[bool] = False

    # --- identity --------------------------------------------------------------------------

    def root_unit_id(self, store: ContractStore, principal: Principal) -> str | None:
        """The root organization public ids are unique in; None: ids are the internal ids."""
        return None

    # --- creation --------------------------------------------------------------------------

    def plan(self, store: ContractStore, principal: Principal, new: New, now: datetime) -> Draft:
        """Check ``new`` against the stored world and choose its keys (and lockers)."""
        raise NotImplementedError

    def program_first(self, contract_type: ContractType) -> bool:
        """The automat asks the server before opening for this code (just-in-time)."""
        return False

    def end_required(self, contract_type: ContractType) -> bool:
        """A PATCH may not remove the end."""
        return False

    def ignores_end(self, contract_type: ContractType) -> bool:
        """A PATCH's end is ignored (fetch contracts have none, C3)."""
        return contract_type is ContractType.FETCH

    # --- change ----------------------------------------------------------------------------

    def change_terms(
        self, store: ContractStore, contract: Contract, change: ContractChange, now: datetime
    ) -> dict[str, Any]:
        """Check the kind's own fields of a PATCH; the values of its terms to store."""
        return {}

    def check_period_free(self, store: ContractStore, contract: Contract, period: Period) -> None:
        """Raise Conflict when another contract holds a key or locker over the new period."""

    def after_delete(self, store: ContractStore, contract: Contract) -> None:
        """What the kind's own rows need when the contract is deleted."""

    def replacement(
        self, store: ContractStore, contract: Contract, lost: ContractKey, now: datetime
    ) -> PlannedKey | None:
        """A key to take the place of ``lost`` for the rest of the contract (its automats
        locked and checked), or None: this kind has none, or none is free."""
        return None

    # --- what notifications show -------------------------------------------------------------

    def key_names(self, store: ContractStore, contract: Contract) -> dict[str, str | None]:
        """Display names by stored key id (None: the message shows the key id)."""
        return {}

    def signature_link(self, contract: Contract) -> str | None:
        return None

    # --- at the automats -----------------------------------------------------------------------

    def on_code_entered(
        self, store: ContractStore, contract: Contract, key: ContractKey, at: datetime
    ) -> None:
        """The contract's code was typed at the key's automat."""

    def reported_key_matches(
        self, store: ContractStore, contract: Contract, key: ContractKey, event: AutomatEvent
    ) -> bool:
        """The key the automat reports is the contract's (it may report no id at all)."""
        return event.key_id is None or event.key_id == key.key_id

    def returned_key_matches(
        self, store: ContractStore, contract: Contract, key: ContractKey, event: AutomatEvent
    ) -> bool:
        return self.reported_key_matches(store, contract, key, event)

    def after_fetch(
        self, store: ContractStore, contract: Contract, key: ContractKey, at: datetime
    ) -> None:
        """The key left its automat with the user."""

    def after_return(
        self,
        store: ContractStore,
        contract: Contract,
        key: ContractKey,
        locker_index: int | None,
        at: datetime,
    ) -> None:
        """The key is back (in ``locker_index`` of its automat, or with staff)."""


Kinds = Mapping[str, ContractKind[Any]]
"""The container's kinds by name (``Container.contract_kinds``)."""
