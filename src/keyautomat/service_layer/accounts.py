"""Organization units and service accounts: the tenancy tree and who may act in it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.crypto import SecretBox, generate_service_account_key
from keyautomat.domain.errors import Forbidden, InvalidInput, NotFound
from keyautomat.domain.model import IloqApiUser, OrganizationUnit, OrgUnitType, Role, ServiceAccount
from keyautomat.service_layer.principal import Principal


@dataclass(frozen=True, slots=True)
class AccountKey:
    """What request verification needs about a service account."""

    public_key_pem: str
    principal: Principal


# The ``id_counters`` row that triggers bump in the same transaction as any change to a
# service account, or to the path or type of an organization unit (migration 0027).
ACCOUNTS_VERSION_ROW = "service_accounts"
ACCOUNTS_VERSION = select(orm.id_counters.c.value).where(
    orm.id_counters.c.name == ACCOUNTS_VERSION_ROW
)
_sa, _ou = orm.service_accounts, orm.organization_units
_LOAD_ACCOUNT = (
    select(_sa.c.public_key_pem, _sa.c.organization_unit_id, _sa.c.role, _ou.c.path, _ou.c.type)
    .join(_ou, _ou.c.id == _sa.c.organization_unit_id)
    .where(_sa.c.id == bindparam("account_id"))
)


def accounts_version(session: Session) -> int:
    """The counter of changes to service accounts (and their units) committed so far."""
    return int(session.execute(ACCOUNTS_VERSION).scalar_one())


def load_account_versioned(session: Session, account_id: str) -> tuple[AccountKey | None, int]:
    """:func:`load_account` and the counter of account changes, in one transaction.

    The counter is read first: a change committed between the two reads then leaves
    the account newer than the counter says, which a cache only reloads too soon,
    never too late.
    """
    version = accounts_version(session)
    return load_account(session, account_id), version


def load_account(session: Session, account_id: str) -> AccountKey | None:
    """The caller behind ``x-service-account-id``, with its unit; None when unknown or deleted."""
    row = session.execute(_LOAD_ACCOUNT, {"account_id": account_id}).first()
    if row is None:
        return None
    return AccountKey(
        row.public_key_pem,
        Principal(account_id, row.organization_unit_id, row.path, row.type, row.role),
    )


def create_organization_unit(
    session: Session,
    principal: Principal | None,
    *,
    name: str,
    customer_id: str | None,
    type: int,  # noqa: A002 - the API's own word
    parent_id: str | None,
    iloq_api_user: IloqApiUser | None,
    secrets: SecretBox,
    now: datetime,
) -> OrganizationUnit:
    """Create a unit under ``parent_id`` (default: the caller's unit).

    ``principal`` is None for the bootstrap CLI, which acts as the platform operator
    and alone may start a new tree (a unit without a parent).
    """
    unit_type = OrgUnitType(type)
    operator = principal is None or principal.is_platform_operator
    if principal is not None:
        principal.require_admin()
    if unit_type is OrgUnitType.ORGANIZATION and not operator:
        raise Forbidden("Only platform operators may create organizations (type 0)")
    parent: OrganizationUnit | None = None
    if parent_id is not None:
        parent = session.get(OrganizationUnit, parent_id)
        if parent is None or (principal is not None and not principal.sees(parent.path)):
            raise Forbidden("parentId is outside your organization subtree")
    elif principal is not None:
        parent = principal.own_unit(session)
    unit = OrganizationUnit(
        name=name, customer_id=customer_id, type=unit_type, parent=parent, created_at=now
    )
    if iloq_api_user is not None:
        unit.iloq_username = iloq_api_user.username
        unit.iloq_password_encrypted = secrets.encrypt(iloq_api_user.password)
        unit.iloq_customer_code = iloq_api_user.customer_code
        unit.iloq_service_address = iloq_api_user.service_address
    session.add(unit)
    session.flush()
    return unit


@dataclass(frozen=True, slots=True)
class CreatedServiceAccount:
    account: ServiceAccount
    private_key_pem: str


def create_service_account(
    session: Session,
    principal: Principal | None,
    *,
    organization_unit_id: str,
    name: str,
    role: str | None,
    now: datetime,
) -> CreatedServiceAccount:
    """Generate a key pair, keep the public half, hand the private half back once."""
    if principal is not None:
        principal.require_admin()
    try:
        chosen = Role(role) if role is not None else Role.INTEGRATION
    except ValueError:
        raise InvalidInput("role", "must be one of admin, integration") from None
    if chosen is Role.ADMIN and principal is not None and not principal.is_platform_operator:
        raise Forbidden("Only platform operators may create admin service accounts")
    unit = session.get(OrganizationUnit, organization_unit_id)
    if unit is None or (principal is not None and not principal.sees(unit.path)):
        raise Forbidden("organizationUnitId is outside your organization subtree")
    keys = generate_service_account_key()
    account = ServiceAccount(
        name=name,
        role=chosen,
        organization_unit_id=unit.id,
        public_key_pem=keys.public_pem,
        fingerprint=keys.fingerprint,
        created_at=now,
    )
    session.add(account)
    session.flush()
    return CreatedServiceAccount(account, keys.private_pem)


def delete_service_account(session: Session, principal: Principal, account_id: str) -> None:
    principal.require_admin()
    account = session.get(ServiceAccount, account_id)
    if account is None:
        raise NotFound("Service account")
    unit = session.get(OrganizationUnit, account.organization_unit_id)
    if unit is None or not principal.sees(unit.path):
        raise NotFound("Service account")
    session.delete(account)
    session.flush()
