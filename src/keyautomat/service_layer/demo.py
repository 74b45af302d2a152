"""Demo data for ``keyautomat serve --demo``: seeded once per database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.iloq.emulator import EmulatedSystem
from keyautomat.domain.iloq import short_key_name
from keyautomat.domain.model import OrganizationUnit, OrgUnitType, Role, ServiceAccount
from keyautomat.service_layer import accounts, automats, groups, iloq_keys
from keyautomat.service_layer.automats import Location
from keyautomat.service_layer.principal import Principal

DEMO_CUSTOMER_ID = "keyautomat-demo"


@dataclass(frozen=True, slots=True)
class DemoAccess:
    organization_unit_id: str
    service_account_id: str
    private_key_pem: str | None  # None: the existing account's key file is still valid


def _principal_for(unit: OrganizationUnit, account: ServiceAccount) -> Principal:
    return Principal(account.id, unit.id, unit.path, unit.type, account.role)


def seed_demo(
    session: Session, *, secrets: SecretBox, now: datetime, known_fingerprint: str | None
) -> DemoAccess:
    """Create the demo organization on first use; hand out an admin key when none is valid."""
    unit = session.scalars(
        select(OrganizationUnit).where(
            orm.organization_units.c.customer_id == DEMO_CUSTOMER_ID,
            orm.organization_units.c.parent_id.is_(None),
        )
    ).first()
    if unit is None:
        unit = accounts.create_organization_unit(
            session,
            None,
            name="Demo Housing Ltd",
            customer_id=DEMO_CUSTOMER_ID,
            type=OrgUnitType.ORGANIZATION,
            parent_id=None,
            iloq_api_user=None,
            secrets=secrets,
            now=now,
        )
        created = accounts.create_service_account(
            session, None, organization_unit_id=unit.id, name="demo admin", role=Role.ADMIN, now=now
        )
        _seed_automats(session, _principal_for(unit, created.account), now)
        _seed_iloq(session, unit.id, now)
        return DemoAccess(unit.id, created.account.id, created.private_key_pem)
    if known_fingerprint is not None:
        account = session.scalars(
            select(ServiceAccount).where(
                orm.service_accounts.c.organization_unit_id == unit.id,
                orm.service_accounts.c.fingerprint == known_fingerprint,
            )
        ).first()
        if account is not None:
            return DemoAccess(unit.id, account.id, None)
    created = accounts.create_service_account(
        session, None, organization_unit_id=unit.id, name="demo admin", role=Role.ADMIN, now=now
    )
    return DemoAccess(unit.id, created.account.id, created.private_key_pem)


def _seed_automats(session: Session, admin: Principal, now: datetime) -> None:
    center = groups.create_group(
        session, admin, name="Helsinki center", customer_id="hki-center", type=1, now=now
    )
    groups.create_group(session, admin, name="Master keys", customer_id="masters", type=2, now=now)
    sites = [
        ("Mainstreet 1", "A", "Mannerheimintie 1", "00100", "Helsinki", "key20", center.id),
        ("Mainstreet 1", "B", "Mannerheimintie 1", "00100", "Helsinki", "key20", center.id),
        ("Harbour office", None, "Satamakatu 3", "00160", "Helsinki", "key30", None),
    ]
    for name, label, address, postal_code, office, product, group_id in sites:
        automats.install_automat(
            session,
            admin,
            name=name,
            organization_unit_id=None,
            label=label,
            group_id=group_id,
            location=Location(address, postal_code, office),
            timezone="Europe/Helsinki",
            product=product,
            now=now,
        )


@dataclass(frozen=True, slots=True)
class DemoAutomat:
    id: str
    product: str
    installation_pincode: str | None
    hw_id: str | None


def demo_automats(session: Session, organization_unit_id: str) -> list[DemoAutomat]:
    """The demo organization's installed automats, for ``serve --demo`` to simulate."""
    rows = session.execute(
        select(
            orm.automats.c.id,
            orm.automats.c.product,
            orm.automats.c.installation_pincode,
            orm.automats.c.hw_id,
        )
        .where(
            orm.automats.c.organization_unit_id == organization_unit_id,
            orm.automats.c.lifecycle_state != "deactivated",
        )
        .order_by(orm.automats.c.id)
    ).all()
    return [DemoAutomat(r.id, r.product, r.installation_pincode, r.hw_id) for r in rows]


@dataclass(frozen=True, slots=True)
class DemoKey:
    id: str
    name: str


DEMO_KEY_COUNT = 8


def demo_iloq_keys() -> list[DemoKey]:
    """The blank iLOQ keys of the demo organization; ids are the same in every database."""
    keys = []
    for number in range(1, DEMO_KEY_COUNT + 1):
        key_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"keyautomat:demo:iloq-key:{number}"))
        keys.append(DemoKey(key_id, short_key_name(key_id)))
    return keys


# (name, stair or None for the whole estate, API-enabled, shown by default)
DEMO_ACCESS_RIGHTS = (
    ("Main entrance", None, True, True),
    ("Stair A apartments", "Stair A", True, True),
    ("Stair B apartments", "Stair B", True, False),
    ("Sauna", "Stair A", True, True),
    ("Laundry room", None, True, False),
    ("Office (not for the API)", None, False, True),
)


def _seed_iloq(session: Session, unit_id: str, now: datetime) -> None:
    """An emulated iLOQ system for the demo organization, and its blank keys registered.

    The demo unit has no iloqApiUser, so it owns an emulated system. Keys are
    enrolled in that system and in our registry; placing them into lockers is
    the devices' business.
    """
    system = EmulatedSystem(session, unit_id)
    estate = system.add_real_estate("Demo Housing, Mannerheimintie 1")
    stairs = {
        name: system.add_real_estate(name, parent_id=estate) for name in ("Stair A", "Stair B")
    }
    for name, stair, api_enabled, default_access in DEMO_ACCESS_RIGHTS:
        system.add_access_right(
            name,
            real_estate_id=stairs[stair] if stair else estate,
            api_enabled=api_enabled,
            default_access=default_access,
        )
    for key in demo_iloq_keys():
        system.create_key(key.id, key.name, now)
        iloq_keys.register_key(
            session, organization_unit_id=unit_id, key_id=key.id, name=key.name, now=now
        )
