"""The per-automat stock counts in ``automat_stock`` (migrations 0011, 0012, 0028) follow
every change of ``lockers`` and ``contract_reservations``, and its copy of
``last_seen_at`` every change of the automat's, on both engines: group ranking relies
on them. A reservation no longer writes the automat's own row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, delete, insert, select, text, update

from keyautomat.adapters import orm
from keyautomat.adapters.db import make_engine
from keyautomat.adapters.migrate import alembic_config, upgrade
from keyautomat.adapters.orm_contracts import contract_reservations, contracts

a, lk, st, r = orm.automats, orm.lockers, orm.automat_stock, contract_reservations
NOW = datetime.now(UTC)
UNIT = "u" * 24


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=1)
    yield engine
    engine.dispose()


def add_automat(conn: Connection, automat_id: str, last_seen_at: datetime | None = None) -> None:
    if conn.scalar(select(orm.organization_units.c.id)) is None:
        conn.execute(
            insert(orm.organization_units).values(
                id=UNIT, name="U", type=1, path="/", created_at=NOW
            )
        )
    conn.execute(
        insert(a).values(
            id=automat_id,
            organization_unit_id=UNIT,
            name="A",
            timezone="UTC",
            product="key20",
            lifecycle_state="active",
            created_at=NOW,
            last_seen_at=last_seen_at,
        )
    )


def add_lockers(conn: Connection, automat_id: str, *lockers: tuple[bool, str | None]) -> None:
    """Lockers 0, 1, ... of the automat, each (key inside?, key id)."""
    conn.execute(
        insert(lk),
        [
            {"automat_id": automat_id, "locker_index": i, "is_key_inside": inside, "key_id": key}
            for i, (inside, key) in enumerate(lockers)
        ],
    )


def add_contract(conn: Connection) -> str:
    contract_id = "c" * 24
    conn.execute(
        insert(contracts).values(
            id=contract_id,
            kind="iloq",
            organization_unit_id=UNIT,
            contract_type=1,
            start=NOW,
            end=NOW + timedelta(days=1),
            request="{}",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    return contract_id


def reserve(
    conn: Connection, contract_id: str, position: int, automat_id: str, locker: int, key: str | None
) -> None:
    conn.execute(
        insert(r).values(
            contract_id=contract_id,
            position=position,
            automat_id=automat_id,
            locker_index=locker,
            key_id=key,
            start=NOW,
            until=NOW + timedelta(days=1),
        )
    )


def stock(engine: Engine, automat_id: str = "000001") -> tuple[int, int, int, int]:
    """(keys inside, empty lockers, keys booked, lockers booked) of the automat."""
    with engine.connect() as conn:
        row = conn.execute(
            select(
                st.c.keys_inside, st.c.empty_lockers, st.c.keys_booked, st.c.lockers_booked
            ).where(st.c.automat_id == automat_id)
        ).one()
    return row.keys_inside, row.empty_lockers, row.keys_booked, row.lockers_booked


def test_a_new_automat_gets_its_row_of_counts_at_zero(engine: Engine) -> None:
    with engine.begin() as conn:
        add_automat(conn, "000001")
    assert stock(engine) == (0, 0, 0, 0)


def seen(engine: Engine) -> tuple[datetime | None, datetime | None]:
    """The automat's last_seen_at, and the copy the rank order reads."""
    with engine.connect() as conn:
        row = conn.execute(
            select(a.c.last_seen_at, st.c.last_seen_at.label("copy")).join(
                st, st.c.automat_id == a.c.id
            )
        ).one()
    return row.last_seen_at, row.copy


def test_the_copy_of_last_seen_at_follows_the_automats(engine: Engine) -> None:
    with engine.begin() as conn:
        add_automat(conn, "000001", last_seen_at=NOW)
    assert seen(engine) == (NOW, NOW)
    later = NOW + timedelta(seconds=30)
    with engine.begin() as conn:  # a heartbeat (devices.touch)
        conn.execute(update(a).values(last_seen_at=later))
    assert seen(engine) == (later, later)
    with engine.begin() as conn:
        conn.execute(update(a).values(last_seen_at=None))
    assert seen(engine) == (None, None)


def test_keys_inside_and_empty_lockers_follow_inserts_updates_and_deletes_of_lockers(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        add_automat(conn, "000001")
        # Locker 3 is assigned but out: neither a key inside nor an empty locker.
        add_lockers(conn, "000001", (True, "k0"), (True, "k1"), (False, None), (False, "k3"))
    assert stock(engine)[:2] == (2, 1)
    with engine.begin() as conn:
        conn.execute(
            update(lk).where(lk.c.locker_index == 0).values(is_key_inside=False, key_id=None)
        )
    assert stock(engine)[:2] == (1, 2)
    with engine.begin() as conn:
        conn.execute(update(lk).where(lk.c.locker_index == 3).values(is_key_inside=True))
    assert stock(engine)[:2] == (2, 2)
    with engine.begin() as conn:
        conn.execute(delete(lk).where(lk.c.locker_index.in_([1, 2])))
    assert stock(engine)[:2] == (1, 1)


def test_booked_counts_follow_reservations_and_the_state_of_their_lockers(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        add_automat(conn, "000001")
        add_automat(conn, "000002")
        add_lockers(conn, "000001", (True, "k0"), (True, "k1"), (False, None))
        add_lockers(conn, "000002", (True, "k9"))
        contract = add_contract(conn)
        reserve(conn, contract, 0, "000001", 0, "k0")
        reserve(conn, contract, 1, "000001", 2, None)  # an empty locker for a return
    assert stock(engine) == (2, 1, 1, 1)
    with engine.begin() as conn:  # the key is fetched: out of keys inside and of booked
        conn.execute(update(lk).where(lk.c.key_id == "k0").values(is_key_inside=False))
    assert stock(engine) == (1, 1, 0, 1)
    with engine.begin() as conn:  # and back
        conn.execute(update(lk).where(lk.c.key_id == "k0").values(is_key_inside=True))
    assert stock(engine) == (2, 1, 1, 1)
    with engine.begin() as conn:  # a change of period leaves the counts alone
        conn.execute(update(r).values(until=NOW + timedelta(days=2)))
    assert stock(engine) == (2, 1, 1, 1)
    with engine.begin() as conn:  # released
        conn.execute(update(r).where(r.c.position == 0).values(counted=False))
    assert stock(engine) == (2, 1, 0, 1)
    with engine.begin() as conn:  # the returned key fills the empty locker
        conn.execute(
            update(lk)
            .where(lk.c.automat_id == "000001", lk.c.locker_index == 2)
            .values(is_key_inside=True, key_id="k2")
        )
    assert stock(engine) == (3, 0, 0, 0)
    with engine.begin() as conn:  # reopened, then moved to a key of another automat
        conn.execute(update(r).where(r.c.position == 0).values(counted=True))
        conn.execute(update(r).where(r.c.position == 0).values(automat_id="000002", key_id="k9"))
    assert stock(engine) == (3, 0, 0, 0)
    assert stock(engine, "000002") == (1, 0, 1, 0)
    with engine.begin() as conn:
        conn.execute(delete(r))
    assert stock(engine, "000002") == (1, 0, 0, 0)


# PostgreSQL only: SQLite has no row versions (it updates in place), so nothing to count.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_reservations_and_lockers_leave_the_automats_row_alone(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        add_automat(conn, "000001")
        add_lockers(conn, "000001", *[(True, f"k{i}") for i in range(10)])
        contract = add_contract(conn)
    with engine.begin() as conn:
        for i in range(10):
            reserve(conn, contract, i, "000001", i, f"k{i}")
        conn.execute(update(lk).where(lk.c.locker_index < 5).values(is_key_inside=False))
        # This transaction's own counts, known before the statistics collector's.
        updates: dict[str, int] = dict(
            conn.execute(
                text(
                    "SELECT relname, n_tup_upd FROM pg_stat_xact_user_tables"
                    " WHERE relname IN ('automats', 'automat_stock')"
                )
            ).all()
        )
    assert stock(engine) == (5, 0, 5, 0)
    assert updates["automat_stock"] >= 15  # ten reservations, five lockers (two triggers)
    assert updates.get("automats", 0) == 0


def _downgrade(engine: Engine, url: str, revision: str) -> None:
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


_OLD_COUNTS = text(
    "SELECT keys_inside, empty_lockers, keys_booked, lockers_booked FROM automats ORDER BY id"
)


def _old_counts(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(_OLD_COUNTS)]


def test_migration_0028_carries_the_counts_over_and_back(engine: Engine, database_url: str) -> None:
    _downgrade(engine, database_url, "0027")
    try:
        with engine.begin() as conn:  # counted by the triggers of 0011 and 0012, on automats
            add_automat(conn, "000001", last_seen_at=NOW)
            add_automat(conn, "000002")
            add_lockers(conn, "000001", (True, "k0"), (True, "k1"), (False, None), (False, "k"))
            add_lockers(conn, "000002", (True, "k9"), (False, None))
            contract = add_contract(conn)
            reserve(conn, contract, 0, "000001", 0, "k0")
            reserve(conn, contract, 1, "000002", 1, None)
        before = _old_counts(engine)
        assert before == [(2, 1, 1, 0), (1, 1, 0, 1)]
    finally:
        upgrade(database_url)
    assert [stock(engine), stock(engine, "000002")] == before
    with engine.connect() as conn:
        copies = conn.execute(select(st.c.last_seen_at).order_by(st.c.automat_id)).scalars()
        assert list(copies) == [NOW, None]
    with engine.begin() as conn:  # and the triggers count on the new table
        conn.execute(update(lk).where(lk.c.key_id == "k0").values(is_key_inside=False))
    assert stock(engine) == (1, 1, 0, 0)
    _downgrade(engine, database_url, "0027")
    try:
        assert _old_counts(engine) == [(1, 1, 0, 0), (1, 1, 0, 1)]
    finally:
        upgrade(database_url)
