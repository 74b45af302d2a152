"""The per-automat counts of keys inside and empty lockers (migration 0011) follow every
change of ``lockers``, on both engines: group ranking relies on them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update

from keyautomat.adapters import orm
from keyautomat.adapters.db import make_engine


def test_counts_follow_inserts_updates_and_deletes(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    now = datetime.now(UTC)
    a, lk = orm.automats, orm.lockers

    def counts() -> tuple[int, int]:
        with engine.connect() as conn:
            row = conn.execute(select(a.c.keys_inside, a.c.empty_lockers)).one()
        return row.keys_inside, row.empty_lockers

    try:
        with engine.begin() as conn:
            conn.execute(
                insert(orm.organization_units).values(
                    id="u" * 24, name="U", type=1, path="/", created_at=now
                )
            )
            conn.execute(
                insert(a).values(
                    id="000001",
                    organization_unit_id="u" * 24,
                    name="A",
                    timezone="UTC",
                    product="key20",
                    lifecycle_state="active",
                    created_at=now,
                )
            )
            conn.execute(
                insert(lk),
                [
                    {
                        "automat_id": "000001",
                        "locker_index": 0,
                        "is_key_inside": True,
                        "key_id": "k0",
                    },
                    {
                        "automat_id": "000001",
                        "locker_index": 1,
                        "is_key_inside": True,
                        "key_id": "k1",
                    },
                    {
                        "automat_id": "000001",
                        "locker_index": 2,
                        "is_key_inside": False,
                        "key_id": None,
                    },
                    # Assigned but out: neither a key inside nor an empty locker.
                    {
                        "automat_id": "000001",
                        "locker_index": 3,
                        "is_key_inside": False,
                        "key_id": "k3",
                    },
                ],
            )
        assert counts() == (2, 1)
        with engine.begin() as conn:
            conn.execute(
                update(lk).where(lk.c.locker_index == 0).values(is_key_inside=False, key_id=None)
            )
        assert counts() == (1, 2)
        with engine.begin() as conn:
            conn.execute(update(lk).where(lk.c.locker_index == 3).values(is_key_inside=True))
        assert counts() == (2, 2)
        with engine.begin() as conn:
            conn.execute(delete(lk).where(lk.c.locker_index.in_([1, 2])))
        assert counts() == (1, 1)
    finally:
        engine.dispose()
