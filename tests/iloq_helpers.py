"""Builders for tests that need an iLOQ locking system."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from keyautomat.adapters.iloq.emulator import EmulatedSystem
from keyautomat.bootstrap import Container
from keyautomat.domain.model import IloqApiUser, OrgUnitType
from keyautomat.service_layer import accounts
from keyautomat.service_layer.clock import Clock
from keyautomat.simulator import SimulatedAutomat, blank_iloq_keys
from tests.conftest import Tenant
from tests.devices import BIND_SECONDS, Simulators, eventually, install


@dataclass(frozen=True)
class SeededSystem:
    unit_id: str
    front_door: str
    sauna: str
    storage: str
    office: str  # not enabled for the public API
    key_id: str


def make_unit(
    container: Container,
    name: str = "Acme",
    *,
    parent_id: str | None = None,
    iloq: IloqApiUser | None = None,
) -> str:
    def work(session: Session) -> str:
        unit = accounts.create_organization_unit(
            session,
            None,
            name=name,
            customer_id=name.lower(),
            type=OrgUnitType.ORGANIZATION if parent_id is None else OrgUnitType.COMPANY,
            parent_id=parent_id,
            iloq_api_user=iloq,
            secrets=container.secrets,
            now=container.clock.now(),
        )
        return unit.id

    return container.db.transaction(work)


def seed_system(container: Container, unit_id: str, *, prefix: str = "") -> SeededSystem:
    """Three API-enabled rights (two shown by default), one that is not, and one blank key."""
    now = container.clock.now()

    def work(session: Session) -> SeededSystem:
        system = EmulatedSystem(session, unit_id)
        estate = system.add_real_estate(f"{prefix}Mannerheimintie 1")
        stair = system.add_real_estate("Stair A", parent_id=estate)
        front = system.add_access_right(
            f"{prefix}Front door", real_estate_id=estate, default_access=True
        )
        sauna = system.add_access_right(f"{prefix}Sauna", real_estate_id=stair, default_access=True)
        storage = system.add_access_right(f"{prefix}Storage room", real_estate_id=stair)
        office = system.add_access_right(f"{prefix}Office", api_enabled=False, default_access=True)
        key_id = "7c813082-8786-4a71-a3b5-30bf10004fe1"
        system.create_key(key_id, "7C81308", now)
        return SeededSystem(unit_id, front, sauna, storage, office, key_id)

    return container.db.transaction(work)


def on_system(container: Container, unit_id: str, work: Any) -> Any:
    """Run ``work(system)`` on the emulated system of ``unit_id`` in one transaction."""
    return container.db.transaction(lambda s: work(EmulatedSystem(s, unit_id)))


CONTRACTS_PATH = "/iloq/keycontracts"


def bound_automat(
    tenant: Tenant,
    sims: Simulators,
    *,
    keys: int = 1,
    lockers: int = 3,
    clock: Clock | None = None,
) -> tuple[str, SimulatedAutomat, list[str]]:
    """An installed key20 whose simulator (on ``sims``' link, on ``clock`` if given) bound and
    reported its keys."""
    automat = install(tenant)
    sim = sims.start(
        hw_id=f"SIM-{automat['id']}",
        product="key20",
        locker_count=lockers,
        installation_pincode=automat["installationPincode"],
        **({"clock": clock} if clock is not None else {}),
    )
    stock = blank_iloq_keys(keys)
    sim.stock(stock)
    sims.call(sim.wait_bound, BIND_SECONDS)
    eventually(
        lambda: (
            sum(
                1
                for locker in tenant.api.get(f"/automats/{automat['id']}")["lockers"]
                if locker["isKeyInside"]
            )
            == keys
        )
    )
    return automat["id"], sim, [k.id for k in stock]


def first_key(tenant: Tenant, contract_id: str) -> dict[str, Any]:
    """The first key of an iLOQ contract as the API shows it."""
    key: dict[str, Any] = tenant.api.get(f"{CONTRACTS_PATH}/{contract_id}")["keys"][0]
    return key


def synced(sims: Simulators, sim: SimulatedAutomat, code: str) -> bool:
    """The simulated automat holds ``code`` in its local pincode store."""
    return any(p.code == code for p in sims.call(lambda: list(sim.pincodes.values())))
