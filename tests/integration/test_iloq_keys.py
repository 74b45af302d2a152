"""The iLOQ key registry and its agreement with the lockers, on both engines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import Row, insert, select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.bootstrap import Container
from keyautomat.domain.errors import Conflict, InvalidInput, NotFound
from keyautomat.domain.iloq import IloqKey, short_key_name
from keyautomat.domain.model import OrganizationUnit, Role
from keyautomat.service_layer import automats, iloq_keys, lockers
from keyautomat.service_layer.automats import Location
from keyautomat.service_layer.pagination import PageRequest
from keyautomat.service_layer.principal import Principal
from tests.iloq_helpers import make_unit

T = TypeVar("T")
KEY_A = "7c813082-8786-4a71-a3b5-30bf10004fe1"
KEY_B = "0b0e3c4d-1111-4222-8333-444455556666"


def principal_of(session: Session, unit_id: str) -> Principal:
    unit = session.get(OrganizationUnit, unit_id)
    assert unit is not None
    return Principal("sa", unit.id, unit.path, unit.type, str(Role.ADMIN))


@pytest.fixture
def unit_id(container: Container) -> str:
    return make_unit(container)


@pytest.fixture
def automat_id(container: Container, unit_id: str) -> str:
    def work(session: Session) -> str:
        automat = automats.install_automat(
            session,
            principal_of(session, unit_id),
            name="Mainstreet 1",
            organization_unit_id=None,
            label="A",
            group_id=None,
            location=Location("Mannerheimintie 1", "00100", "Helsinki"),
            timezone="Europe/Helsinki",
            product="key20",
            now=container.clock.now(),
        )
        session.execute(
            insert(orm.lockers),
            [{"automat_id": automat.id, "locker_index": i} for i in range(3)],
        )
        return automat.id

    return container.db.transaction(work)


def run(container: Container, work: Callable[[Session], T]) -> T:
    return container.db.transaction(work)


def register(container: Container, unit_id: str, key_id: str) -> IloqKey:
    return run(
        container,
        lambda s: iloq_keys.register_key(
            s, organization_unit_id=unit_id, key_id=key_id, now=container.clock.now()
        ),
    )


def locker(container: Container, automat_id: str, index: int) -> Row[Any]:
    lk = orm.lockers
    return run(
        container,
        lambda s: s.execute(
            select(lk).where(lk.c.automat_id == automat_id, lk.c.locker_index == index)
        ).one(),
    )


def test_a_registered_key_gets_its_short_name_and_is_neither_blocked_nor_stored(
    container: Container, unit_id: str
) -> None:
    key = register(container, unit_id, KEY_A)
    assert key.name == "7C81308" == short_key_name(KEY_A)
    assert not key.blocked
    assert not key.is_stored


def test_registering_a_key_twice_returns_the_same_key(container: Container, unit_id: str) -> None:
    first = register(container, unit_id, KEY_A)
    again = register(container, unit_id, KEY_A)
    assert (again.id, again.created_at) == (first.id, first.created_at)


def test_a_key_of_another_unit_cannot_be_registered_again(
    container: Container, unit_id: str
) -> None:
    register(container, make_unit(container, "Other"), KEY_A)
    with pytest.raises(Conflict, match="another organization unit"):
        register(container, unit_id, KEY_A)


def receive(container: Container, unit_id: str, key_id: str, automat_id: str, index: int) -> bool:
    return run(
        container,
        lambda s: iloq_keys.receive_returned_key(
            s,
            organization_unit_id=unit_id,
            key_id=key_id,
            automat_id=automat_id,
            locker_index=index,
            now=container.clock.now(),
        ),
    )


def test_an_unknown_key_returned_into_a_locker_is_registered_there_named_by_its_id(
    container: Container, unit_id: str, automat_id: str
) -> None:
    assert receive(container, unit_id, KEY_B, automat_id, 1) is True
    key = run(container, lambda s: iloq_keys.get_key(s, principal_of(s, unit_id), KEY_B))
    assert (key.name, key.organization_unit_id, key.blocked) == (KEY_B, unit_id, False)
    assert (key.automat_id, key.locker_index) == (automat_id, 1)
    assert locker(container, automat_id, 1).key_id == KEY_B


def test_a_key_of_a_child_unit_returned_by_its_parent_is_placed_not_refused(
    container: Container, unit_id: str, automat_id: str
) -> None:
    register(container, make_unit(container, "Child", parent_id=unit_id), KEY_A)
    assert receive(container, unit_id, KEY_A, automat_id, 0) is True
    assert locker(container, automat_id, 0).key_id == KEY_A


def test_a_key_of_another_organization_returned_into_a_locker_stays_its_owners(
    container: Container, unit_id: str, automat_id: str
) -> None:
    owner = make_unit(container, "Other")
    register(container, owner, KEY_A)
    assert receive(container, unit_id, KEY_A, automat_id, 0) is False
    key = run(container, lambda s: s.get(IloqKey, KEY_A))
    assert key is not None
    assert (key.organization_unit_id, key.automat_id) == (owner, None)
    assert locker(container, automat_id, 0).key_id is None


def test_a_return_contract_may_not_repeat_a_key_or_use_a_malformed_id() -> None:
    for ids, field in (([KEY_A, KEY_A], r"keyIds\.1"), (["bad id/"], r"keyIds\.0")):
        with pytest.raises(InvalidInput, match=field):
            iloq_keys.check_return_key_ids(ids)
    iloq_keys.check_return_key_ids([KEY_A, KEY_B])


def test_a_parent_unit_sees_the_keys_of_its_children(container: Container, unit_id: str) -> None:
    child = make_unit(container, "Child", parent_id=unit_id)
    register(container, child, KEY_A)
    page = run(container, lambda s: iloq_keys.list_keys(s, principal_of(s, unit_id), PageRequest()))
    assert [k.id for k in page.items] == [KEY_A]
    assert run(container, lambda s: iloq_keys.list_keys(s, principal_of(s, child), PageRequest()))
    sibling = make_unit(container, "Sibling", parent_id=unit_id)
    assert not run(
        container, lambda s: iloq_keys.list_keys(s, principal_of(s, sibling), PageRequest())
    ).items


def test_placing_a_key_points_the_locker_at_it_and_back(
    container: Container, unit_id: str, automat_id: str
) -> None:
    register(container, unit_id, KEY_A)
    key = run(container, lambda s: iloq_keys.place_key(s, KEY_A, automat_id, 1))
    assert (key.automat_id, key.locker_index) == (automat_id, 1)
    held = locker(container, automat_id, 1)
    assert (held.key_id, held.key_name, held.is_key_inside) == (KEY_A, "7C81308", True)


def test_moving_a_key_empties_its_old_locker(
    container: Container, unit_id: str, automat_id: str
) -> None:
    register(container, unit_id, KEY_A)
    run(container, lambda s: iloq_keys.place_key(s, KEY_A, automat_id, 0))
    run(container, lambda s: iloq_keys.place_key(s, KEY_A, automat_id, 2))
    assert locker(container, automat_id, 0).key_id is None
    assert not locker(container, automat_id, 0).is_key_inside
    assert locker(container, automat_id, 2).key_id == KEY_A


def test_a_key_reported_in_an_occupied_locker_displaces_the_previous_key(
    container: Container, unit_id: str, automat_id: str
) -> None:
    register(container, unit_id, KEY_A)
    register(container, unit_id, KEY_B)
    run(container, lambda s: iloq_keys.place_key(s, KEY_A, automat_id, 0))
    run(container, lambda s: iloq_keys.place_key(s, KEY_B, automat_id, 0))
    a = run(container, lambda s: s.get(IloqKey, KEY_A))
    assert a is not None
    assert not a.is_stored
    assert locker(container, automat_id, 0).key_id == KEY_B


def test_taking_a_key_out_clears_both_ends(
    container: Container, unit_id: str, automat_id: str
) -> None:
    register(container, unit_id, KEY_A)
    run(container, lambda s: iloq_keys.place_key(s, KEY_A, automat_id, 1))
    key = run(container, lambda s: iloq_keys.take_key(s, KEY_A))
    assert key is not None
    assert not key.is_stored
    emptied = locker(container, automat_id, 1)
    assert (emptied.key_id, emptied.key_name, emptied.is_key_inside) == (None, None, False)


def test_taking_a_key_clears_a_locker_a_device_reported_it_in_though_the_registry_did_not(
    container: Container, unit_id: str, automat_id: str
) -> None:
    register(container, unit_id, KEY_A)
    run(
        container,
        lambda s: lockers.report_key(s, automat_id, 2, inside=True, key_id=KEY_A, key_name="A"),
    )
    run(container, lambda s: iloq_keys.take_key(s, KEY_A))
    emptied = locker(container, automat_id, 2)
    assert (emptied.key_id, emptied.key_name, emptied.is_key_inside) == (None, None, False)


def test_taking_a_key_nobody_registered_only_clears_the_lockers_showing_it(
    container: Container, automat_id: str
) -> None:
    run(
        container,
        lambda s: lockers.report_key(s, automat_id, 1, inside=False, key_id=KEY_B, key_name="B"),
    )
    assert run(container, lambda s: iloq_keys.take_key(s, KEY_B)) is None
    assert locker(container, automat_id, 1).key_id is None


def test_moving_a_key_leaves_a_locker_another_key_took_since_alone(
    container: Container, unit_id: str, automat_id: str
) -> None:
    register(container, unit_id, KEY_A)
    run(container, lambda s: iloq_keys.place_key(s, KEY_A, automat_id, 0))
    run(
        container,
        lambda s: lockers.report_key(s, automat_id, 0, inside=True, key_id=KEY_B, key_name="B"),
    )
    run(container, lambda s: iloq_keys.place_key(s, KEY_A, automat_id, 2))
    assert locker(container, automat_id, 0).key_id == KEY_B


def test_placing_needs_a_known_key_and_locker(
    container: Container, unit_id: str, automat_id: str
) -> None:
    with pytest.raises(NotFound, match="iLOQ key"):
        run(container, lambda s: iloq_keys.place_key(s, KEY_A, automat_id, 0))
    register(container, unit_id, KEY_A)
    with pytest.raises(NotFound, match="Locker"):
        run(container, lambda s: iloq_keys.place_key(s, KEY_A, automat_id, 9))


def test_blocking_a_key_marks_it_blocked(container: Container, unit_id: str) -> None:
    register(container, unit_id, KEY_A)
    key = run(container, lambda s: iloq_keys.block_key(s, principal_of(s, unit_id), KEY_A))
    assert key.blocked
