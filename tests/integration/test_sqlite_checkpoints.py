"""SQLite checkpoints run on a thread of their own, never inside a request's commit."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from keyautomat.adapters.db import Database
from keyautomat.adapters.migrate import upgrade


def _commit_rows(db: Database, count: int) -> None:
    """``count`` transactions of one page-sized row each."""
    db.transaction(
        lambda s: s.execute(text("CREATE TABLE filler (id INTEGER PRIMARY KEY, v TEXT)"))
    )

    def work(session: Session) -> None:
        session.execute(text("INSERT INTO filler (v) VALUES (:v)"), {"v": "x" * 3000})

    for _ in range(count):
        db.transaction(work)


def _log_frames(path: Path) -> int:
    """The size of the write-ahead log, in frames (header 32 bytes, frame 24 + page)."""
    size = path.with_name(path.name + "-wal").stat().st_size
    return max(0, (size - 32) // (4096 + 24))


def test_commits_leave_the_log_to_the_checkpointer_which_copies_it_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "k.db"
    upgrade(f"sqlite:///{path}")
    db = Database(f"sqlite:///{path}")
    assert db.checkpointer is not None
    db.checkpointer.interval = 3600.0  # only the explicit checkpoint below runs
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        # A commit that takes the log past 1,000 pages would checkpoint it, and the
        # next one would start the log over: it would never hold 1,500 frames.
        _commit_rows(db, 1500)
        assert _log_frames(path) >= 1500
        busy, frames, copied = db.checkpointer.checkpoint()
        assert (busy, copied) == (0, frames)
        assert frames >= 1500
        # Copied back: the next commit starts the log over instead of growing it.
        size = path.with_name("k.db-wal").stat().st_size
        db.transaction(lambda s: s.execute(text("INSERT INTO filler (v) VALUES ('y')")))
        assert path.with_name("k.db-wal").stat().st_size == size
        assert db.checkpointer.checkpoint()[1] <= 2
    finally:
        db.close()
    assert not db.checkpointer._thread.is_alive()


def test_a_database_in_memory_has_no_checkpointer() -> None:
    db = Database("sqlite://")
    try:
        assert db.checkpointer is None
    finally:
        db.close()
