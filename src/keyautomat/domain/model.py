"""The core objects of keyautomat: plain classes whose methods enforce the rules.

Those whose tables are written through the ORM are mapped imperatively in
``adapters/orm.py``, so that this module imports nothing but the standard
library and our own domain modules; ``Automat`` is loaded and stored with Core
statements by the service layer (docs/persistence.md).
"""

from __future__ import annotations

import enum
from datetime import datetime

from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.ids import new_object_id


class OrgUnitType(enum.IntEnum):
    ORGANIZATION = 0
    COUNTRY = 1
    AREA = 2
    TOWN = 3
    DISTRICT = 4
    COMPANY = 5
    OTHER = 6


class Role(enum.StrEnum):
    """Service-account roles (spec/gaps.md B5)."""

    ADMIN = "admin"
    INTEGRATION = "integration"


class LifecycleState(enum.StrEnum):
    WAITING_FOR_INSTALL = "waitingForInstall"
    ACTIVE = "active"
    DEACTIVATED = "deactivated"


class Product(enum.StrEnum):
    KEY20 = "key20"  # programs iLOQ S5 keys
    KEY30 = "key30"  # mechanical keys

    @property
    def programs_iloq_keys(self) -> bool:
        return self is Product.KEY20


class GroupType(enum.IntEnum):
    DEVICE = 1
    KEY = 2


class IloqApiUser:
    """Credentials of the customer's iLOQ S5 system; the password is stored encrypted."""

    def __init__(
        self, username: str, password: str, customer_code: str, service_address: str
    ) -> None:
        self.username = username
        self.password = password
        self.customer_code = customer_code
        self.service_address = service_address


class OrganizationUnit:
    """A node of the customer hierarchy.

    ``path`` lists the ids from the root down to this unit, each followed by
    ``/`` (``"/root/child/"``), so "is inside the subtree of" is a prefix test
    that a database index can answer.
    """

    def __init__(
        self,
        *,
        name: str,
        customer_id: str | None,
        type: OrgUnitType,  # noqa: A002 - the API's own word
        parent: OrganizationUnit | None,
        created_at: datetime,
        id: str | None = None,  # noqa: A002
    ) -> None:
        self.id = id or new_object_id(created_at.timestamp())
        self.name = name
        self.customer_id = customer_id
        self.type = int(type)
        self.parent_id: str | None = parent.id if parent else None
        self.path: str = (parent.path if parent else "/") + self.id + "/"
        self.created_at = created_at
        self.iloq_username: str | None = None
        self.iloq_password_encrypted: str | None = None
        self.iloq_customer_code: str | None = None
        self.iloq_service_address: str | None = None

    def contains(self, other_path: str) -> bool:
        """True when the unit with ``other_path`` is this unit or one of its descendants."""
        return other_path.startswith(self.path)

    @property
    def is_root(self) -> bool:
        return self.parent_id is None


class ServiceAccount:
    """A machine identity: only the public half of its RSA key is ever stored."""

    def __init__(
        self,
        *,
        name: str,
        role: Role,
        organization_unit_id: str,
        public_key_pem: str,
        fingerprint: str,
        created_at: datetime,
        id: str | None = None,  # noqa: A002
    ) -> None:
        self.id = id or new_object_id(created_at.timestamp())
        self.name = name
        self.role = str(role)
        self.organization_unit_id = organization_unit_id
        self.public_key_pem = public_key_pem
        self.fingerprint = fingerprint
        self.created_at = created_at


class Automat:
    """A key cabinet. Hardware binds to it with the installation pincode (gaps.md D1-D3).

    Its lockers and group memberships are rows of their own, read and written by
    the service layer (``service_layer/lockers.py``, ``automats.py``).
    """

    def __init__(
        self,
        *,
        id: str,  # noqa: A002
        organization_unit_id: str,
        name: str,
        label: str | None,
        address: str | None,
        postal_code: str | None,
        postal_office: str | None,
        timezone: str,
        product: Product,
        created_at: datetime,
    ) -> None:
        self.id = id
        self.organization_unit_id = organization_unit_id
        self.name = name
        self.label = label
        self.address = address
        self.postal_code = postal_code
        self.postal_office = postal_office
        self.timezone = timezone
        self.product = str(product)
        self.hw_id: str | None = None
        # Drawn by the service layer, which makes sure no other automat holds it; it
        # binds hardware only for a while after it was issued (docs/device-protocol.md).
        self.installation_pincode: str | None = None
        self.installation_pincode_issued_at: datetime | None = None
        self.lifecycle_state = str(LifecycleState.WAITING_FOR_INSTALL)
        self.created_at = created_at
        self.last_seen_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.lifecycle_state == LifecycleState.ACTIVE

    def replace_hardware(self) -> None:
        """Unbind the hardware; the next device to present the new pincode takes its place."""
        if self.lifecycle_state == LifecycleState.DEACTIVATED:
            raise InvalidInput("id", "is an uninstalled automat and cannot be replaced")
        self.hw_id = None
        self.installation_pincode = None  # a fresh one is drawn by the service layer
        self.installation_pincode_issued_at = None
        self.lifecycle_state = str(LifecycleState.WAITING_FOR_INSTALL)

    def bind(self, hw_id: str, pincode: str) -> bool:
        """Bind hardware presenting the installation pincode; False when the code is wrong."""
        if self.lifecycle_state != LifecycleState.WAITING_FOR_INSTALL:
            return False
        if self.installation_pincode is None or pincode != self.installation_pincode:
            return False
        self.hw_id = hw_id
        self.installation_pincode = None
        self.installation_pincode_issued_at = None
        self.lifecycle_state = str(LifecycleState.ACTIVE)
        return True

    def uninstall(self) -> None:
        """Deactivate for good; an uninstalled automat belongs to no group either."""
        self.lifecycle_state = str(LifecycleState.DEACTIVATED)
        self.installation_pincode = None
        self.installation_pincode_issued_at = None

    def issue_installation_pincode(self, code: str, now: datetime) -> None:
        """A fresh code (the service layer makes sure no other automat holds it)."""
        self.installation_pincode = code
        self.installation_pincode_issued_at = now

    def joinable_groups(self, groups: list[Group]) -> list[Group]:
        """The whole device-group membership to replace the automat's with, each group
        once (gaps.md D5)."""
        if groups and self.lifecycle_state == LifecycleState.DEACTIVATED:
            raise InvalidInput("groups", "cannot be joined by an uninstalled automat")
        for index, group in enumerate(groups):
            if group.type != GroupType.DEVICE:
                raise InvalidInput(f"groups.{index}", "is a key group; automats join device groups")
        unique: dict[str, Group] = {g.id: g for g in groups}
        return list(unique.values())


class Group:
    """A named set: device groups (type 1) hold automats, key groups (type 2) hold keys."""

    def __init__(
        self,
        *,
        name: str,
        customer_id: str | None,
        type: GroupType,  # noqa: A002
        organization_unit_id: str,
        created_at: datetime,
        id: str | None = None,  # noqa: A002
    ) -> None:
        self.id = id or new_object_id(created_at.timestamp())
        self.name = name
        self.customer_id = customer_id
        self.type = int(type)
        self.organization_unit_id = organization_unit_id
        self.created_at = created_at
