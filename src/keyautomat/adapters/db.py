"""Engines, and the one place where database work is scheduled.

SQLite allows one writer at a time; connections in many threads only queue on
its lock and the latency tail explodes (DESIGN.md, "Measured on this machine").
So on SQLite every unit of work runs on one dedicated thread owning one
connection, and the event loop never waits on a lock. PostgreSQL gets a small
thread pool with a connection pool of the same size.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool, StaticPool

from keyautomat.adapters.orm import start_mappers
from keyautomat.config import sqlite_database_path

T = TypeVar("T")
log = logging.getLogger(__name__)


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def make_engine(url: str, *, pool_size: int = 8, autocheckpoint: bool = True) -> Engine:
    """An engine configured for our access pattern on either backend; on SQLite,
    ``autocheckpoint=False`` leaves checkpoints to a :class:`Checkpointer`.

    Its errors never show the statement's parameters (``hide_parameters``): they hold
    pincodes, tokens and contact details, and an unexpected error is logged whole.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_database_path(url)
        if path is not None:
            _make_private(path)
        engine = create_engine(
            url,
            hide_parameters=True,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Python's sqlite3 opens transactions lazily and commits behind our
            # back; autocommit off at the driver and BEGIN IMMEDIATE on our side
            # gives real transactions that take the write lock up front.
            dbapi_conn.isolation_level = None
            # SQLite's own lower() folds ASCII only; "Äänekoski" must match "ääne".
            dbapi_conn.create_function("lower", 1, _lower, deterministic=True)
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            if not autocheckpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(
        url,
        hide_parameters=True,
        poolclass=QueuePool,
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=True,
    )


class Checkpointer:
    """Copies SQLite's write-ahead log back into the database file off the request path.

    By default SQLite checkpoints inside the commit that grows the log past 1,000
    pages, and a checkpoint ends with an fsync of the database file. On a busy
    disk that fsync took seconds under bench/contracts.py, and every request
    queued behind the one database thread waited for it. Here a thread of its
    own, with a connection of its own, runs a PASSIVE checkpoint every
    ``interval`` seconds: it never waits for the writer and the writer never
    waits for it, and with ``synchronous=NORMAL`` commits themselves do not
    fsync. Checkpointing later changes nothing about durability: what a commit
    wrote stays in the log until it has been copied.
    """

    def __init__(self, path: str, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._loop, name="keyautomat-checkpoint", daemon=True
        )
        self._thread.start()

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint now: (busy, frames in the log, frames copied)."""
        with self._lock:
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except sqlite3.Error:
                log.exception("SQLite checkpoint failed; trying again in %s s", self.interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._conn.close()


class LoopReader:
    """A connection of its own to the SQLite file, for tiny reads made right on the event loop.

    Database work goes to the one database thread (:class:`Database`); a hop there
    and back costs tens of microseconds and queues behind whatever that thread is
    doing. A read of one row by its primary key costs a few microseconds on a
    connection of its own, and in WAL mode a reader never waits for the writer, so
    such a read may be made without leaving the loop: the API reads the counter of
    service account changes this way on every signed request (entrypoints/api/
    account_cache.py), and its hot reads go this way (:meth:`Database.read`). Each
    read is its own transaction, so it sees every commit made before it, by any
    process. Only ever use it from one thread at a time.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def scalar(self, sql: str, parameters: tuple[Any, ...] = ()) -> Any:
        """The first column of the first row of ``sql``, or None."""
        row = self._connection().execute(sql, parameters).fetchone()
        return None if row is None else row[0]

    def read(self, work: Callable[[Reads], T], dialect: Any) -> T:
        """``work`` in one read transaction: every statement sees the same snapshot."""
        connection = self._connection()
        connection.execute("BEGIN")
        try:
            return work(Reads(connection, dialect))
        finally:
            connection.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # Opened at the first read, on the loop that reads (check_same_thread off: a
            # test may run its app on one thread after another, never at once).
            # A busy database (a WAL recovery, another process's exclusive lock) must
            # not hold the loop: 20 ms, then the caller takes the database thread.
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0.02
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused for a lock another connection holds (SQLITE_BUSY/LOCKED)."""
    return exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _Compiled:
    """One statement compiled for one dialect (and, for INSERT/UPDATE, one set of columns)."""

    __slots__ = ("defaults", "expanding", "order", "processors", "results", "sql")

    def __init__(
        self, statement: Any, dialect: Any, keys: tuple[str, ...] | None, typed: bool
    ) -> None:
        done = statement.compile(dialect=dialect, column_keys=keys)
        self.sql: str = str(done)
        self.order: tuple[str, ...] | None = tuple(done.positiontup) if done.positional else None
        # Values the statement carries itself (a LIMIT, a literal compared with), and the
        # scalar Python-side defaults (``default=False``) of columns an INSERT leaves out,
        # which SQLAlchemy would otherwise fill in at execution.
        required = {done.bind_names[b] for b in done.bind_names if b.required}
        self.defaults: dict[str, Any] = {
            name: value for name, value in done.params.items() if name not in required
        }
        for column, default in [(c, c.default) for c in done.insert_prefetch] + [
            (c, c.onupdate) for c in done.update_prefetch
        ]:
            if default is None or not default.is_scalar:
                raise TypeError(f"{column}: only scalar Python-side defaults are supported here")
            self.defaults[column.key] = default.arg
        self.expanding = frozenset(
            name for name in done.bind_names.values() if f"__[POSTCOMPILE_{name}]" in self.sql
        )
        # The dialect's conversions of parameters (a datetime to text on SQLite, JSON,
        # booleans) and of result columns (text back to a datetime on SQLite): what
        # SQLAlchemy's execution context would apply, known once per compilation.
        self.processors: dict[str, Callable[[Any], Any]] = {
            name: fn for name, fn in done._bind_processors.items() if fn is not None
        }
        results = tuple(
            column.type._cached_result_processor(dialect, None) if typed else None
            for column in done._result_columns
        )
        self.results: tuple[Callable[[Any], Any] | None, ...] | None = (
            results if any(fn is not None for fn in results) else None
        )

    def render(self, params: dict[str, Any]) -> tuple[str, Any]:
        """The SQL text and the DBAPI parameters of one execution."""
        sql = self.sql
        values = {**self.defaults, **params}
        for name, fn in self.processors.items():
            if name in values:
                value = values[name]
                values[name] = [fn(v) for v in value] if name in self.expanding else fn(value)
        for name in self.expanding:
            value = values[name]
            if not value:
                raise ValueError(f"{name}: an expanding parameter needs at least one value")
            token = f"__[POSTCOMPILE_{name}]"
            if self.order is None:
                names = [f"{name}_{i}" for i in range(len(value))]
                sql = sql.replace(token, ", ".join(f"%({n})s" for n in names))
                values.update(zip(names, value, strict=True))
            else:
                sql = sql.replace(token, ", ".join("?" * len(value)))
        if self.order is None:
            return sql, values
        positional: list[Any] = []
        for name in self.order:
            if name in self.expanding:
                positional.extend(values[name])
            else:
                positional.append(values[name])
        return sql, positional

    def row(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.results is None:
            return row
        return tuple(v if fn is None else fn(v) for fn, v in zip(self.results, row, strict=True))


class PlainQuery:
    """A Core statement built once, compiled once per dialect, run straight on a DBAPI cursor.

    ``session.execute`` costs 60-80 µs a statement before the database sees it (cache
    key, execution context, result processing, a ``Row`` per row); the driver's cursor
    takes a few. A hot statement skips all of it: its SQL is compiled by SQLAlchemy's
    compiler once per dialect, its parameters go through the same bind processors
    SQLAlchemy would apply (datetimes and booleans on SQLite, JSON), and its rows come
    back as plain tuples, each column through its result processor (a datetime read
    back from SQLite's text). Parameters are by name, as the statement's ``bindparam``
    names them (or, for ``insert(table)``, the columns); an expanding one
    (``bindparam("ids", expanding=True)``) takes a non-empty list. An INSERT or UPDATE
    without fixed values is compiled once per set of columns given.

    ``typed=False`` leaves every column as the driver answers it (SQLite: booleans as 0
    and 1, datetimes as text): for reads of many rows whose columns need no conversion
    to be used, where converting each row would cost more than the rest of the read.
    """

    def __init__(self, statement: Any, *, typed: bool = True) -> None:
        self.statement = statement
        self._typed = typed
        self._by_columns = bool(getattr(statement, "is_dml", False))
        self._compiled: dict[tuple[str, tuple[str, ...] | None], _Compiled] = {}

    def compiled(self, dialect: Any, params: dict[str, Any]) -> _Compiled:
        keys = tuple(sorted(params)) if self._by_columns else None
        found = self._compiled.get((dialect.name, keys))
        if found is None:
            found = _Compiled(self.statement, dialect, keys, self._typed)
            self._compiled[dialect.name, keys] = found
        return found

    def render(self, dialect: Any, params: dict[str, Any]) -> tuple[str, Any]:
        """The SQL text and the DBAPI parameters of one execution."""
        return self.compiled(dialect, params).render(params)


class Reads:
    """Plain rows of :class:`PlainQuery` statements, in one transaction."""

    def __init__(self, dbapi_connection: Any, dialect: Any) -> None:
        self._connection = dbapi_connection
        self._dialect = dialect
        self.dialect_name: str = dialect.name

    def _run(self, query: PlainQuery, params: dict[str, Any]) -> tuple[_Compiled, Any]:
        """The statement executed; (its compilation, the open cursor)."""
        compiled = query.compiled(self._dialect, params)
        sql, values = compiled.render(params)
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, values)
        except BaseException:
            cursor.close()
            raise
        return compiled, cursor

    def rows(self, query: PlainQuery, **params: Any) -> list[tuple[Any, ...]]:
        compiled, cursor = self._run(query, params)
        try:
            rows: list[tuple[Any, ...]] = cursor.fetchall()
        finally:
            cursor.close()
        return rows if compiled.results is None else [compiled.row(r) for r in rows]

    def first(self, query: PlainQuery, **params: Any) -> tuple[Any, ...] | None:
        """The first row, or None (the rest are not read: give the statement a LIMIT)."""
        compiled, cursor = self._run(query, params)
        try:
            row: tuple[Any, ...] | None = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else compiled.row(row)

    def scalar(self, query: PlainQuery, **params: Any) -> Any:
        """The first column of the first row, or None."""
        row = self.first(query, **params)
        return None if row is None else row[0]


class Statements(Reads):
    """:class:`PlainQuery` statements, reads and writes, in a session's transaction.

    They run on the session's own connection, so they see what it wrote and a rollback
    undoes them. Pending ORM changes are flushed before each statement, as
    ``session.execute`` does for ORM statements (a use case that changed an ORM object
    then asks a hot statement must see the change: the iLOQ lost-key path blocks a key,
    then allocates a replacement). A driver error is raised as SQLAlchemy raises it
    (``sqlalchemy.exc.IntegrityError`` and so on, parameters hidden), and the engine's
    ``before_cursor_execute`` listeners hear each statement (benches count them).
    """

    def __init__(self, session: Session) -> None:
        connection = session.connection()
        super().__init__(connection.connection.dbapi_connection, connection.dialect)
        self._session = session
        self._sa_connection = connection
        self._transaction = session.get_transaction()
        self._error = connection.dialect.loaded_dbapi.Error
        self._listened = connection.engine.dispatch.before_cursor_execute

    @classmethod
    def of(cls, session: Session) -> Statements:
        """The statements of the session's current transaction (made once per transaction)."""
        kept = session.info.get(_STATEMENTS)
        if kept is None or kept._transaction is not session.get_transaction():
            session.flush()
            kept = cls(session)
            session.info[_STATEMENTS] = kept
        return kept

    def _run(self, query: PlainQuery, params: dict[str, Any]) -> tuple[_Compiled, Any]:
        self._session.flush()  # returns at once when nothing is pending
        compiled = query.compiled(self._dialect, params)
        sql, values = compiled.render(params)
        cursor = self._connection.cursor()
        if self._listened:
            context = PlainContext(self._session, query.statement)
            self._listened(self._sa_connection, cursor, sql, values, context, False)
        try:
            cursor.execute(sql, values)
        except self._error as exc:
            cursor.close()
            raise _wrapped(exc, sql, self._dialect) from exc
        except BaseException:
            cursor.close()
            raise
        return compiled, cursor

    def execute(self, query: PlainQuery, **params: Any) -> int:
        """A statement that returns no rows; how many rows it changed."""
        _compiled, cursor = self._run(query, params)
        try:
            count: int = cursor.rowcount
        finally:
            cursor.close()
        return count

    def execute_many(self, query: PlainQuery, rows: Sequence[dict[str, Any]]) -> None:
        """One statement (no RETURNING) for each of ``rows``, all with the same names."""
        if len(rows) == 1:
            self.execute(query, **rows[0])
            return
        self._session.flush()
        compiled = query.compiled(self._dialect, rows[0])
        rendered = [compiled.render(row) for row in rows]
        sql = rendered[0][0]
        cursor = self._connection.cursor()
        if self._listened:
            context = PlainContext(self._session, query.statement)
            self._listened(self._sa_connection, cursor, sql, rendered, context, True)
        try:
            cursor.executemany(sql, [values for _sql, values in rendered])
        except self._error as exc:
            raise _wrapped(exc, sql, self._dialect) from exc
        finally:
            cursor.close()


@dataclass(frozen=True, slots=True)
class PlainContext:
    """What ``before_cursor_execute`` listeners get as the execution context of a
    :class:`Statements` statement (SQLAlchemy's own is never made): the session whose
    transaction runs it, and the Core statement (tests/persistence_guard.py checks
    which tables each transaction writes, and how)."""

    session: Session
    statement: Any


# session.info key: the session's Statements of its current transaction.
_STATEMENTS = "plain_statements"


def _wrapped(exc: Exception, sql: str, dialect: Any) -> Exception:
    """The driver's error as SQLAlchemy raises it (IntegrityError etc.), parameters hidden."""
    return DBAPIError.instance(
        sql, None, exc, dialect.loaded_dbapi.Error, hide_parameters=True, dialect=dialect
    )


def _make_private(path: Path) -> None:
    """Create the SQLite file readable by this user only, and tighten one that is not.

    It holds pincodes, signature links and encrypted secrets. SQLite creates the
    ``-wal`` and ``-shm`` files with the database file's mode, so creating the
    file ourselves (mode 600, before SQLite does) covers them too; files of an
    older install lose their group and other bits.
    """
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError:
        return  # SQLite will report what is wrong with the path
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot make %s private (mode 600): %s", file, exc)


# session.info key: the automats whose pincodes this transaction changed.
CHANGED_AUTOMATS = "changed_automats"
# The PostgreSQL channel that announces them to the other processes (one NOTIFY each).
SYNC_CHANNEL = "keyautomat_sync"
# Sent with every transaction that changed an automat's pincodes (every contract's
# creation): on the driver's cursor (PlainQuery).
_NOTIFY = PlainQuery(
    text(
        "SELECT pg_notify(CAST(:channel AS text), id) FROM unnest(CAST(:ids AS text[])) AS id"
    ).bindparams(channel=SYNC_CHANNEL)
)


_NOTIFY_ONE = text("SELECT pg_notify(CAST(:channel AS text), CAST(:payload AS text))")


def notify(session: Session, channel: str, payload: str) -> None:
    """PostgreSQL ``NOTIFY`` on ``channel``, delivered when the transaction commits; nothing
    on SQLite, where no other process listens."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_NOTIFY_ONE, {"channel": channel, "payload": payload})


def mark_changed(session: Session, automat_id: str) -> None:
    """The transaction changes what ``automat_id`` must honour: sync it after the commit."""
    session.info.setdefault(CHANGED_AUTOMATS, set()).add(automat_id)


class Database:
    """Owns the engine, the session factory and the threads that run database work."""

    def __init__(self, url: str, *, threads: int = 8, info: dict[str, Any] | None = None) -> None:
        start_mappers()
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        workers = 1 if self.is_sqlite else threads
        path = sqlite_database_path(url)
        self.engine = make_engine(url, pool_size=workers, autocheckpoint=path is None)
        self.checkpointer = Checkpointer(str(path)) if path is not None else None
        self.loop_reader = LoopReader(str(path)) if path is not None else None
        # ``info`` reaches every session: the container's registries (service_layer/wiring.py).
        self.info: dict[str, Any] = info if info is not None else {}
        self.session_factory = sessionmaker(self.engine, expire_on_commit=False, info=self.info)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keyautomat-db")
        # SQLite has one connection (StaticPool). ``run`` only ever uses it from the
        # one database thread, but ``transaction`` may be called from any thread (the
        # CLI, tests, a background job), so on SQLite every unit of work also holds
        # this lock; uncontended, it costs well under a microsecond.
        self._sqlite_lock = threading.Lock() if self.is_sqlite else None
        # Called with the automats whose pincodes a transaction changed, after its commit,
        # on the thread that ran it; they must not block (the gateway hands them to its loop).
        self.after_commit: list[Callable[[frozenset[str]], None]] = []

    def session(self) -> Session:
        return self.session_factory()

    def transaction(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction on the calling thread: commit, or roll back on error.

        Automats whose pincodes the transaction changed (:func:`mark_changed`) are
        announced once it has committed: to this process's ``after_commit`` listeners
        (the device gateway, on SQLite), and on PostgreSQL to every process listening on
        :data:`SYNC_CHANNEL` (``NOTIFY`` is delivered at the commit, never before).
        """
        lock = self._sqlite_lock or contextlib.nullcontext()
        with lock, self.session_factory() as session, session.begin():
            result = work(session)
            changed = session.info.get(CHANGED_AUTOMATS)
            if changed and not self.is_sqlite:
                Statements.of(session).rows(_NOTIFY, ids=sorted(changed))
        if changed:
            for listener in self.after_commit:
                listener(frozenset(changed))
        return result

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction on a database thread and await its result."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, self.transaction, work)
        return await loop.run_in_executor(self._executor, call)

    async def read(self, work: Callable[[Reads], T], *, small: bool = True) -> T:
        """Run ``work``, plain reads only, in one read transaction: on SQLite right here on
        the event loop, on a connection of its own (:class:`LoopReader`: no hop to the
        database thread, no write lock, no waiting behind writes), else as :meth:`run`.

        Only ``small`` work, whose cost is bounded whatever the data (a few rows by key),
        runs on the loop, which nothing else can use meanwhile; other work, and work the
        loop's connection finds the database busy for, goes to the database thread."""
        if self.loop_reader is not None and small:
            try:
                return self.loop_reader.read(work, self.engine.dialect)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
        return await self.run(lambda session: work(Statements.of(session)))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self.checkpointer is not None:
            self.checkpointer.close()
        if self.loop_reader is not None:
            self.loop_reader.close()
        self.engine.dispose()


async def watch(
    check: Callable[[], Awaitable[T | None]],
    woken: asyncio.Future[None],
    timeout: float,
    every: float,
) -> T | None:
    """What ``check`` finds, asked at once, whenever ``woken`` completes (a notification of
    a change), and every ``every`` seconds in any case (a notification can be missed while
    a connection is re-made); None when it found nothing within ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await check()
        if found is not None:
            return found
        left = deadline - loop.time()
        if left <= 0:
            return None
        if woken.done():
            await asyncio.sleep(min(left, every))
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(woken), min(left, every))


async def listen(
    url: str, *channels: str, listening: Callable[[], None] | None = None
) -> AsyncIterator[tuple[str, str]]:
    """(channel, payload) of each ``NOTIFY`` on ``channels`` of the PostgreSQL database at
    ``url``, as they arrive, on one connection of its own (no pool connection is held
    waiting). ``listening`` is called once every ``LISTEN`` holds: nothing notified after
    it is missed while the connection lasts (a caller catches up on what came before)."""
    import psycopg
    from psycopg import sql

    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    # TCP keepalives: a connection a firewall dropped in silence is noticed in about a
    # minute, not hours (libpq's default), and the caller re-makes it.
    async with await psycopg.AsyncConnection.connect(
        conninfo,
        autocommit=True,
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    ) as conn:
        for channel in channels:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        if listening is not None:
            listening()
        async for notification in conn.notifies():
            yield notification.channel, notification.payload
