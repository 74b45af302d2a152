"""Each table has one persistence style, and the guard of tests/integration/conftest.py
holds every test to it (docs/persistence.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.domain.model import Group, GroupType
from tests.persistence_guard import WriteGuard, declared_styles


def test_the_doc_gives_every_table_exactly_one_style() -> None:
    assert set(declared_styles()) == {t.name for t in orm.load_all_tables().sorted_tables}


def test_exactly_the_orm_tables_are_mapped_to_classes() -> None:
    orm.start_mappers()
    mapped = {str(m.local_table.name) for m in orm.mapper_registry.mappers}  # type: ignore[attr-defined]
    assert mapped == {table for table, style in declared_styles().items() if style == "ORM"}


@pytest.fixture
def session() -> Iterator[Session]:
    """A throwaway in-memory database: the guard watches sessions, not engines."""
    orm.start_mappers()
    engine = create_engine("sqlite://")
    orm.metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


def a_group() -> Group:
    return Group(
        name="Center",
        customer_id=None,
        type=GroupType.DEVICE,
        organization_unit_id="u" * 24,
        created_at=datetime.now(UTC),
    )


def test_the_guard_notes_a_table_written_both_ways_in_one_transaction(
    session: Session, one_style_per_table: WriteGuard
) -> None:
    with session.begin():
        group = a_group()
        session.add(group)
        session.flush()
        session.execute(update(orm.groups).where(orm.groups.c.id == group.id).values(name="x"))
    # Even a test's own seeding may not mix: the objects of the transaction go stale.
    assert one_style_per_table.violations == [
        "groups written through the ORM and with Core at once"
    ]
    one_style_per_table.violations.clear()  # the deliberate breach must not fail this test


def test_the_guard_notes_application_code_writing_a_table_in_the_other_style(
    session: Session,
) -> None:
    guard = WriteGuard({"groups": "ORM"}, exempt=None)  # as if this test were the application
    with guard.watching(), session.begin():
        session.execute(update(orm.groups).values(name="x"))
    assert guard.violations == ["groups written with Core; its style is ORM"]


def test_tests_may_seed_a_table_in_the_other_style(session: Session) -> None:
    guard = WriteGuard({"groups": "ORM"})
    with guard.watching(), session.begin():
        session.execute(update(orm.groups).values(name="x"))
    assert guard.violations == []


def test_each_transaction_is_judged_on_its_own(session: Session) -> None:
    guard = WriteGuard({"groups": "ORM"})
    with guard.watching():
        with session.begin():
            session.execute(update(orm.groups).values(name="x"))
        with session.begin():
            session.add(a_group())
    assert guard.violations == []
