"""The demo organization comes with an emulated iLOQ system and registered blank keys."""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session

from keyautomat.adapters.iloq.emulator import EmulatorIloq
from keyautomat.bootstrap import Container
from keyautomat.domain.iloq import IloqKey
from keyautomat.entrypoints.demo import DemoAccess, demo_iloq_keys, seed_demo


def seed(container: Container) -> DemoAccess:
    return container.db.transaction(
        lambda s: seed_demo(
            s, secrets=container.secrets, now=container.clock.now(), known_fingerprint=None
        )
    )


def test_demo_keys_have_stable_ids_and_short_names() -> None:
    keys = demo_iloq_keys()
    assert keys == demo_iloq_keys()
    assert len({k.id for k in keys}) == len(keys) == 8
    assert all(len(k.name) == 7 and k.name.isupper() for k in keys if not k.name.isdigit())


def test_the_demo_organization_has_access_rights_and_blank_keys(container: Container) -> None:
    access = seed(container)
    port = EmulatorIloq(container.db, access.organization_unit_id, container.clock)
    rights = asyncio.run(port.list_access_rights())
    assert len(rights) == 6
    assert sum(not r.api_enabled for r in rights) == 1
    assert {r.name for r in rights if r.default_access} >= {"Main entrance", "Sauna"}
    for demo_key in demo_iloq_keys():
        in_system = asyncio.run(port.get_key(demo_key.id))
        assert in_system is not None
        assert in_system.is_blank

        def registered_key(s: Session, key_id: str = demo_key.id) -> IloqKey | None:
            return s.get(IloqKey, key_id)

        registered = container.db.transaction(registered_key)
        assert registered is not None
        assert registered.organization_unit_id == access.organization_unit_id
        assert registered.name == demo_key.name
    # Seeding again for a returning user adds nothing twice.
    seed(container)
