"""Hot statements on the driver's cursor (adapters/db.py, ``PlainQuery`` and ``Statements``)
store and read what ``session.execute`` would, on both engines, inside the session's own
transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import bindparam, event, insert, select
from sqlalchemy.orm import Session

from keyautomat.adapters import orm
from keyautomat.adapters.db import PlainQuery, Statements
from keyautomat.adapters.orm_devices import device_pincodes
from keyautomat.bootstrap import Container
from keyautomat.domain.ids import new_object_id
from keyautomat.domain.model import Group, GroupType
from tests.conftest import Tenant
from tests.devices import install

p = device_pincodes
_INSERT = PlainQuery(insert(p))
_COLUMNS = (p.c.valid_from, p.c.valid_until, p.c.removed, p.c.program_first, p.c.key_id)
_READ = PlainQuery(select(*_COLUMNS).where(p.c.id == bindparam("id")))
_READ_MANY = PlainQuery(
    select(p.c.id).where(p.c.id.in_(bindparam("ids", expanding=True))).order_by(p.c.id)
)
_GROUP_TYPE = PlainQuery(select(orm.groups.c.type).where(orm.groups.c.id == bindparam("id")))
_RAW = "SELECT valid_from, valid_until, removed, program_first, key_id FROM device_pincodes"
WHEN = datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)


def pincode(automat_id: str, **values: Any) -> dict[str, Any]:
    """A row of ``device_pincodes``: every column given, ``values`` over the defaults."""
    return {
        "id": new_object_id(),
        "automat_id": automat_id,
        "code": "123456",
        "locker_index": 0,
        "valid_from": WHEN,
        "valid_until": None,
        "purpose": "fetch",
        "key_id": None,
        "reference": None,
        "version": 1,
        "removed": False,
        "program_first": True,
        **values,
    }


@pytest.fixture
def automat_id(acme: Tenant) -> str:
    return str(install(acme, name="Plain")["id"])


def raw(session: Session, pincode_id: str) -> tuple[Any, ...]:
    """The row as the driver returns it, no type processing: what the database holds."""
    marker = "%s" if session.get_bind().dialect.name == "postgresql" else "?"
    result = session.connection().exec_driver_sql(f"{_RAW} WHERE id = {marker}", (pincode_id,))
    return tuple(result.one())


def test_a_plain_insert_stores_datetimes_booleans_and_nulls_as_session_execute_does(
    container: Container, automat_id: str
) -> None:
    until = WHEN + timedelta(days=2, microseconds=7)
    by_sqlalchemy = pincode(automat_id, valid_until=until, removed=True, key_id="k")
    by_cursor = pincode(automat_id, valid_until=until, removed=True, key_id="k")
    without = pincode(automat_id, removed=False, program_first=False)

    def work(session: Session) -> tuple[tuple[Any, ...], ...]:
        session.execute(insert(p), by_sqlalchemy)
        plain = Statements.of(session)
        plain.execute(_INSERT, **by_cursor)
        plain.execute(_INSERT, **without)
        return tuple(raw(session, row["id"]) for row in (by_sqlalchemy, by_cursor, without))

    stored_by_sqlalchemy, stored_by_cursor, stored_without = container.db.transaction(work)

    assert stored_by_cursor == stored_by_sqlalchemy
    assert stored_without[1] is None
    assert stored_without[4] is None
    assert not stored_without[2]
    assert not stored_without[3]


def test_plain_rows_come_back_typed_as_sqlalchemy_rows_do(
    container: Container, automat_id: str
) -> None:
    until = WHEN + timedelta(hours=5)
    row = pincode(automat_id, valid_until=until, removed=True, program_first=False)
    bare = pincode(automat_id)

    def work(session: Session) -> tuple[Any, ...]:
        session.execute(insert(p), [row, bare])
        plain = Statements.of(session)
        by_sqlalchemy = tuple(session.execute(select(*_COLUMNS).where(p.c.id == row["id"])).one())
        return by_sqlalchemy, plain.first(_READ, id=row["id"]), plain.first(_READ, id=bare["id"])

    by_sqlalchemy, by_cursor, bare_row = container.db.transaction(work)

    assert by_cursor == by_sqlalchemy == (WHEN, until, True, False, None)
    assert by_cursor[0].tzinfo is UTC
    assert bare_row == (WHEN, None, False, True, None)


def test_a_naive_datetime_is_refused_as_the_column_type_refuses_it(
    container: Container, automat_id: str
) -> None:
    def work(session: Session) -> None:
        Statements.of(session).execute(
            _INSERT, **pincode(automat_id, valid_from=WHEN.replace(tzinfo=None))
        )

    with pytest.raises(ValueError, match="naive datetime"):
        container.db.transaction(work)


def test_an_expanding_parameter_takes_each_value_and_refuses_none(
    container: Container, automat_id: str
) -> None:
    rows = [pincode(automat_id) for _ in range(3)]

    def work(session: Session) -> list[tuple[Any, ...]]:
        plain = Statements.of(session)
        for row in rows:
            plain.execute(_INSERT, **row)
        with pytest.raises(ValueError, match="ids"):
            plain.rows(_READ_MANY, ids=[])
        return plain.rows(_READ_MANY, ids=[rows[2]["id"], rows[0]["id"], "nothing"])

    found = container.db.transaction(work)

    assert found == sorted([(rows[0]["id"],), (rows[2]["id"],)])


def test_a_plain_statement_runs_in_the_session_transaction_and_a_rollback_undoes_it(
    container: Container, automat_id: str
) -> None:
    row = pincode(automat_id)
    seen: list[Any] = []

    def work(session: Session) -> None:
        Statements.of(session).execute(_INSERT, **row)
        # session.execute sees it: the same connection, the same transaction.
        seen.append(session.scalar(select(p.c.code).where(p.c.id == row["id"])))
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        container.db.transaction(work)

    assert seen == ["123456"]
    gone = container.db.transaction(lambda s: Statements.of(s).first(_READ, id=row["id"]) is None)
    assert gone


def test_each_transaction_gets_statements_of_its_own(container: Container) -> None:
    def work(session: Session) -> Statements:
        plain = Statements.of(session)
        assert Statements.of(session) is plain
        return plain

    assert container.db.transaction(work) is not container.db.transaction(work)


def test_pending_orm_changes_are_flushed_before_a_plain_statement(
    container: Container, acme: Tenant
) -> None:
    """As ``session.execute`` autoflushes: a use case that changes an ORM object and then
    asks a hot statement sees its own change (the iLOQ lost-key path does)."""

    def work(session: Session) -> tuple[Any, Any]:
        plain = Statements.of(session)  # obtained before the change
        group = Group(
            name="G",
            customer_id=None,
            type=GroupType.DEVICE,
            organization_unit_id=acme.unit_id,
            created_at=WHEN,
        )
        session.add(group)
        added = plain.scalar(_GROUP_TYPE, id=group.id)
        group.type = int(GroupType.KEY)
        return added, plain.scalar(_GROUP_TYPE, id=group.id)

    added, changed = container.db.transaction(work)

    assert (added, changed) == (GroupType.DEVICE, GroupType.KEY)


def test_a_driver_error_is_raised_as_sqlalchemy_raises_it_without_its_parameters(
    container: Container, automat_id: str
) -> None:
    row = pincode(automat_id, code="987654")

    def work(session: Session) -> None:
        plain = Statements.of(session)
        plain.execute(_INSERT, **row)
        plain.execute(_INSERT, **row)

    with pytest.raises(sqlalchemy.exc.IntegrityError) as raised:
        container.db.transaction(work)
    assert "987654" not in str(raised.value)


def test_the_engine_listeners_hear_each_plain_statement(
    container: Container, automat_id: str
) -> None:
    heard: list[str] = []

    def listen(_conn: Any, _cursor: Any, sql: str, *_rest: Any) -> None:
        heard.append(sql.split(maxsplit=1)[0])

    rows = [pincode(automat_id) for _ in range(2)]
    event.listen(container.db.engine, "before_cursor_execute", listen)
    try:
        container.db.transaction(lambda s: Statements.of(s).execute_many(_INSERT, rows))
        container.db.transaction(lambda s: Statements.of(s).rows(_READ, id=rows[0]["id"]))
    finally:
        event.remove(container.db.engine, "before_cursor_execute", listen)

    assert [sql for sql in heard if sql in ("INSERT", "SELECT")] == ["INSERT", "SELECT"]
