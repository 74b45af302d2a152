"""Demo data for ``keyautomat serve --demo``: seeded once per database."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.crypto import SecretBox
from keyautomat.adapters.iloq.emulator import EmulatedSystem
from keyautomat.adapters.orm_mechanical import mechanical_keys as mk
from keyautomat.adapters.passwords import Passwords
from keyautomat.domain.console import ConsoleRole, email_key, generate_password
from keyautomat.domain.iloq import short_key_name
from keyautomat.domain.mechanical import Storage
from keyautomat.domain.model import OrganizationUnit, OrgUnitType, Role, ServiceAccount
from keyautomat.service_layer import (
    accounts,
    automats,
    console_users,
    groups,
    iloq_keys,
    mechanical_keys,
)
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
        admin = _principal_for(unit, created.account)
        _seed_automats(session, admin, now)
        _seed_iloq(session, unit.id, now)
        _seed_mechanical_keys(session, admin, now)
        return DemoAccess(unit.id, created.account.id, created.private_key_pem)
    _seed_mechanical_keys(session, _principal_for(unit, _any_admin(session, unit)), now)
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


def _any_admin(session: Session, unit: OrganizationUnit) -> ServiceAccount:
    account = session.scalars(
        select(ServiceAccount)
        .where(
            orm.service_accounts.c.organization_unit_id == unit.id,
            orm.service_accounts.c.role == Role.ADMIN,
        )
        .limit(1)
    ).first()
    if account is None:  # every demo organization is created with its admin
        raise LookupError("the demo organization has no admin account")
    return account


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
class DemoMechanicalKey:
    id: str
    name: str
    rfid_hex: str


# The mechanical keys of the demo organization, at home in its key30 automat.
DEMO_MECHANICAL_KEYS = (
    DemoMechanicalKey("room-101-key", "Room 101", "1A00D1"),
    DemoMechanicalKey("room-102-key", "Room 102", "1A00D2"),
    DemoMechanicalKey("room-103-key", "Room 103", "1A00D3"),
    DemoMechanicalKey("room-104-key", "Room 104", "1A00D4"),
    DemoMechanicalKey("sauna-key", "Sauna", "1A00E1"),
    DemoMechanicalKey("garage-key", "Garage door", "1A00E2"),
)


def _seed_mechanical_keys(session: Session, admin: Principal, now: datetime) -> None:
    """Register the demo mechanical keys missing from the demo organization's key30.

    Their storage is left to the automat: its simulator holds exactly these keys
    (``demo_automats``) and reports them after binding.
    """
    home = session.scalar(
        select(orm.automats.c.id)
        .where(
            orm.automats.c.organization_unit_id == admin.organization_unit_id,
            orm.automats.c.product == "key30",
            orm.automats.c.lifecycle_state != "deactivated",
        )
        .order_by(orm.automats.c.id)
        .limit(1)
    )
    if home is None:
        return
    existing = set(
        session.scalars(
            select(mk.c.id).where(mk.c.organization_unit_id == admin.organization_unit_id)
        )
    )
    for number, key in enumerate(DEMO_MECHANICAL_KEYS):
        if key.id in existing:
            continue
        mechanical_keys.create_key(
            session,
            admin,
            key_id=key.id,
            name=key.name,
            organization_unit_id=None,
            rfid_hex=key.rfid_hex,
            selected=Storage.device(home),
            shared=False,
            away=True,
            # A millisecond apart, so that lists (by creation time) keep this order.
            now=now + timedelta(milliseconds=number),
        )


@dataclass(frozen=True, slots=True)
class DemoAutomat:
    id: str
    product: str
    installation_pincode: str | None
    hw_id: str | None
    # The registered mechanical keys at home in this automat, for its simulator to hold.
    mechanical_keys: tuple[DemoMechanicalKey, ...] = ()


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
    homes: dict[str, list[DemoMechanicalKey]] = {r.id: [] for r in rows}
    keys = session.execute(
        select(mk.c.id, mk.c.name, mk.c.rfid_hex, mk.c.selected_automat_id)
        .where(mk.c.selected_automat_id.in_(list(homes)))
        .order_by(mk.c.created_at, mk.c.id)
    )
    for key in keys:
        homes[key.selected_automat_id].append(
            DemoMechanicalKey(key.id, key.name or key.id, key.rfid_hex or "")
        )
    return [
        DemoAutomat(r.id, r.product, r.installation_pincode, r.hw_id, tuple(homes[r.id]))
        for r in rows
    ]


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


def demo_access_right_id(name: str) -> str:
    """Access rights of the demo have the same id in every database (README examples)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"keyautomat:demo:access-right:{name}"))


def demo_iloq_stocks(automats: Sequence[DemoAutomat]) -> dict[str, list[DemoKey]]:
    """The demo iLOQ keys dealt over the demo's key20 automats, in id order, for their
    simulators to hold: a contract can be made against the demo at once."""
    key20 = [a.id for a in automats if a.product == "key20"]
    stocks: dict[str, list[DemoKey]] = {automat_id: [] for automat_id in key20}
    for n, key in enumerate(demo_iloq_keys()):
        if key20:
            stocks[key20[n % len(key20)]].append(key)
    return stocks


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
            id=demo_access_right_id(name),
        )
    for key in demo_iloq_keys():
        system.create_key(key.id, key.name, now)
        iloq_keys.register_key(
            session, organization_unit_id=unit_id, key_id=key.id, name=key.name, now=now
        )


# The console login of the demo organization (docs/console.md).
DEMO_CONSOLE_EMAIL = "demo@keyautomat.local"


def demo_console_password(
    session: Session,
    unit_id: str,
    *,
    passwords: Passwords,
    known_password: str | None,
    now: datetime,
) -> str:
    """The demo console admin's password: the one printed last time while it still signs
    in (a restart keeps the browser's login), else a new one (the admin made on first use)."""
    candidate = console_users.login_candidate(session, email_key(DEMO_CONSOLE_EMAIL))
    if (
        candidate is not None
        and known_password is not None
        and passwords.verify(candidate.password_hash, known_password)
    ):
        return known_password
    password = generate_password()
    if candidate is None:
        console_users.create_user(
            session,
            None,
            email=DEMO_CONSOLE_EMAIL,
            organization_unit_id=unit_id,
            role=ConsoleRole.ADMIN,
            password_hash=passwords.hash(password),
            now=now,
        )
    else:
        console_users.set_password(session, candidate.user_id, passwords.hash(password), now)
    return password
