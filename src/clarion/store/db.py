"""The engine, the unit of work, and the migration state of one database."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Dialect, Executable, Row, event, make_url
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, InvalidatePoolError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.compiler import ExpandedState, SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from clarion.store.availability import database_unavailable, first_line
from clarion.store.urls import asyncpg_connect_args

if TYPE_CHECKING:
    from clarion.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
# A pooled PostgreSQL connection is pinged on checkout only once it has been idle this long.
PING_AFTER_IDLE_SECONDS = 1.0
# PostgreSQL connections per process: kept open, and a few more for bursts.
POOL_SIZE = 32
POOL_OVERFLOW = 16
RECORD_ATTEMPTS = 5

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# asyncpg connections per process for reads on PostgreSQL (``PgReader``), opened as needed.
# Eight, not sixteen: with PostgreSQL on the same two cores, more backends competing for them
# made some lookups wait hundreds of milliseconds (bench/README.md, session 25).
READ_POOL_SIZE = 8


def insert_for(dialect: str) -> Any:
    """The dialect's INSERT construct, which has the ON CONFLICT clauses (PostgreSQL, SQLite)."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


class SchemaOutOfDate(Exception):
    """The database is not at the migration head clarion expects."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; the busy timeout queues writers instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _mark_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect: Dialect) -> Any:
    """A checkout listener: SQLAlchemy's pre-ping, but only for a connection that sat idle in
    the pool for PING_AFTER_IDLE_SECONDS.

    ``pool_pre_ping`` pings on every checkout, which on asyncpg is three round trips (BEGIN,
    ``;``, ROLLBACK) and about 240 µs of CPU: more than a whole inbox query. A connection given
    back a moment ago is as alive as one just pinged, so under load nothing is pinged; a
    connection that sat idle (where a database restart or a dropped idle connection shows up)
    is pinged as before, and a dead one is replaced, with every older pooled connection,
    before anyone uses it. If the database goes away under load, the statements in flight fail
    as they always did, SQLAlchemy's disconnect handling invalidates the pool on the first such
    error, and later checkouts reconnect.
    """

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return  # fresh, or back in the pool a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            if isinstance(exc, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
                exc, dbapi_connection, None
            ):
                raise InvalidatePoolError(str(exc)) from exc  # the pool reconnects and retries
            raise

    return checkout


def create_engine(
    url: str | URL,
    *,
    echo: bool = False,
    connect_args: Mapping[str, Any] | None = None,
    pool_size: int = POOL_SIZE,
    pool_overflow: int = POOL_OVERFLOW,
) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and enforced foreign keys; PostgreSQL
    a pool whose connections are pinged after they sat idle (``_ping_if_idle``).
    ``connect_args``: keyword arguments of the driver's connect() (``asyncpg_connect_args``)."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # Connections beyond pool_size are closed when given back: at 32 requests in flight a pool
    # of 10 opened and closed a (TLS-negotiating) connection for every other request.
    engine = create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_overflow,
        connect_args=dict(connect_args or {}),
    )
    event.listen(engine.sync_engine, "checkin", _mark_idle)
    event.listen(engine.sync_engine, "checkout", _ping_if_idle(engine.sync_engine.dialect))
    return engine


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _unknown(revision: str) -> str:
    return (
        f"the database schema is at revision {revision}, which this clarion does not know "
        f"(it needs {head_revision()}): was it migrated by a newer clarion? Downgrades are "
        "not supported"
    )


def known_revision(revision: str) -> bool:
    """True if ``revision`` is one of this clarion's migrations."""
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for an unknown or ambiguous id
        return False


def revisions_up_to(revision: str) -> set[str]:
    """``revision`` and every migration before it."""
    script = ScriptDirectory.from_config(alembic_config())
    return {r.revision for r in script.iterate_revisions(revision, "base")}


class _ThreadSqlite:
    """A SQLite file's connections of the driver, one per thread that uses them (the event
    loop's), opened with ``pragmas``, and SQLAlchemy statements compiled once for them."""

    def __init__(self, url: URL, pragmas: Callable[[Any, Any], None], *, echo: bool) -> None:
        self._engine = create_sync_engine(
            url.set(drivername="sqlite+pysqlite"),
            echo=echo,
            poolclass=NullPool,
            connect_args={"check_same_thread": False},
        )
        event.listen(self._engine, "connect", pragmas)
        self._local = threading.local()
        self._open: list[Any] = []
        self._lock = threading.Lock()
        self._plans: weakref.WeakKeyDictionary[Executable, _Plan] = weakref.WeakKeyDictionary()

    @staticmethod
    def is_file(url: URL) -> bool:
        """A SQLite file (not in-memory SQLite, not another database)."""
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return False
        return "mode=memory" not in str(url)

    def _driver(self) -> sqlite3.Connection:
        """This thread's driver connection, opened on first use."""
        driver: sqlite3.Connection | None = getattr(self._local, "driver", None)
        if driver is None:
            raw = self._track(self._engine.raw_connection())
            driver = cast(sqlite3.Connection, raw.driver_connection)
            self._opened(driver)
            self._local.driver = driver
        return driver

    def _opened(self, driver: sqlite3.Connection) -> None:
        """Set up a driver connection just opened (nothing by default)."""

    def _track(self, conn: Any) -> Any:
        with self._lock:
            self._open.append(conn)
        return conn

    def _plan(self, statement: Executable) -> _Plan:
        plan = self._plans.get(statement)
        if plan is None:
            plan = self._plans[statement] = _Plan(statement, self._engine.dialect, bind_all=True)
        return plan

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
        self._engine.dispose()


class InlineReader(_ThreadSqlite):
    """Read-only statements on a SQLite file, run synchronously in the calling thread.

    Safe to run on the event loop: in WAL mode a reader never waits for the writer (it reads
    the last committed snapshot), each statement is its own transaction (autocommit), and the
    connection refuses writes (``query_only``). One connection per thread that reads.
    """

    def __init__(self, url: URL, *, echo: bool = False) -> None:
        super().__init__(url, _reader_pragmas, echo=echo)

    @classmethod
    def for_url(cls, url: URL, *, echo: bool = False) -> InlineReader | None:
        """A reader for a SQLite file; None for anything else (in-memory SQLite included)."""
        return cls(url, echo=echo) if cls.is_file(url) else None

    def read(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        """The rows, as named tuples (as ``PgReader`` gives them).

        A select runs on the driver's connection with the statement compiled once
        (``_Plan``): SQLAlchemy's execution path (cache lookup, IN-list expansion, result
        wrapping) cost several times the indexed read itself. Anything else goes through a
        SQLAlchemy connection.
        """
        if getattr(statement, "selected_columns", None) is None:
            return self._read_with_sqlalchemy(statement, params)
        driver = self._driver()
        plan = self._plan(statement)
        sql, args = plan.arguments(params or {})
        try:
            records = driver.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, args, exc, sqlite3.Error) from exc
        return plan.rows(records)

    def _read_with_sqlalchemy(
        self, statement: Executable, params: Mapping[str, Any] | None
    ) -> Sequence[Row[Any]]:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.conn = conn
            self._track(conn)
        try:
            return conn.execute(statement, params).all()
        finally:
            conn.rollback()  # ends SQLAlchemy's bookkeeping; nothing is open in SQLite


def _reader_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    # A WAL reader waits only in rare moments (another connection recovering the WAL index);
    # never long, since this wait holds up the event loop.
    cursor.execute("PRAGMA busy_timeout=1000")
    cursor.close()


class InlineWriter(_ThreadSqlite):
    """Short write transactions on a SQLite file, run in the calling thread (the event loop)
    between two awaits: a job's ledger records, the completion of its messages, a finished job,
    the inbox's mark-read.

    Through aiosqlite, a write transaction is three hand-offs to its thread and back (BEGIN,
    the statement, COMMIT), and SQLite's write lock stays held across the event loop's turns
    in between. With two processes on one file, the other's writers waited for it in SQLite's
    busy handler, which sleeps 1, 2, 5, 10 ms and more between tries: in bench/send.py 10-35%
    of the two cores sat idle. Here the lock is taken with ``BEGIN IMMEDIATE`` without waiting
    (while another connection holds it, the coroutine sleeps a fraction of a millisecond and
    tries again, so the loop goes on), and it is held only while SQLite writes: the
    statements and the commit run back to back, with no await between them.

    This connection never checkpoints the WAL as part of a commit (``wal_autocheckpoint=0``):
    a checkpoint copies pages and syncs the file, which must not stall the event loop. Every
    ``CHECKPOINT_EVERY`` commits it has a passive checkpoint run on a thread of the loop's
    executor instead (on a connection of its own; it waits for nobody), so the WAL stays
    bounded even when these are the only writes.
    """

    CHECKPOINT_EVERY = 100

    def __init__(self, url: URL, *, echo: bool = False, busy_seconds: float = 10.0) -> None:
        super().__init__(url, _writer_pragmas, echo=echo)
        self._busy_seconds = busy_seconds
        self._path = str(url.database)
        self._commits = 0
        self._checkpointing: asyncio.Future[None] | None = None
        self.checkpoints = 0  # passive checkpoints run (for tests and curiosity)

    @classmethod
    def for_url(cls, url: URL, *, echo: bool = False) -> InlineWriter | None:
        """A writer for a SQLite file; None for anything else (in-memory SQLite included)."""
        return cls(url, echo=echo) if cls.is_file(url) else None

    def _opened(self, driver: sqlite3.Connection) -> None:
        driver.isolation_level = None  # BEGIN and COMMIT are this class's own

    async def write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run the statements (the driver's SQL and arguments) in one transaction, committed
        when this returns. Raises SQLAlchemy's ``OperationalError`` ("database is locked") if
        the write lock stayed taken for ``busy_seconds``, as the pool's busy timeout does."""

        def run(driver: sqlite3.Connection) -> None:
            for sql, args in statements:
                _execute(driver, sql, args)

        await self._transaction(run)

    async def execute(
        self, statement: Executable, params: Mapping[str, Any] | None, *, rows: bool
    ) -> Any:
        """One SQLAlchemy statement in its own transaction: its rows (``rows``), else how many
        rows it changed."""
        plan = self._plan(statement)
        sql, args = plan.arguments(params or {})

        def run(driver: sqlite3.Connection) -> Any:
            cursor = _execute(driver, sql, args)
            return plan.rows(cursor.fetchall()) if rows else max(cursor.rowcount, 0)

        return await self._transaction(run)

    async def _transaction(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        driver = self._driver()
        deadline = time.monotonic() + self._busy_seconds
        delay = 0.0005
        while True:
            try:
                driver.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not _sqlite_busy(exc) or time.monotonic() >= deadline:
                    raise DBAPIError.instance("BEGIN IMMEDIATE", (), exc, sqlite3.Error) from exc
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 0.008)
        # From here to the commit, nothing awaits: the lock is held only while SQLite writes.
        try:
            result = run(driver)
            _execute(driver, "COMMIT", ())
        except BaseException:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            raise
        self._commits += 1
        if self._commits >= self.CHECKPOINT_EVERY and self._checkpointing is None:
            self._commits = 0
            loop = asyncio.get_running_loop()
            self._checkpointing = loop.run_in_executor(None, self._checkpoint)
            self._checkpointing.add_done_callback(self._checkpointed)
        return result

    def _checkpoint(self) -> None:
        """A passive checkpoint (copies what it can without waiting for readers or writers),
        on a connection of its own, in an executor's thread."""
        conn = sqlite3.connect(self._path, timeout=0)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpointing = None
        if done.cancelled():
            return
        exc = done.exception()
        if exc is None:
            self.checkpoints += 1
        else:  # another checkpoint was running, say: the next one catches up
            log.debug("passive checkpoint skipped: %s", exc)


def _execute(driver: sqlite3.Connection, sql: str, args: Sequence[Any]) -> sqlite3.Cursor:
    """The driver's execute, its errors raised as SQLAlchemy's (as the pool raises them)."""
    try:
        return driver.execute(sql, args)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, args, exc, sqlite3.Error) from exc


def _sqlite_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _writer_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=0")  # never wait inside SQLite: on the event loop
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


class _Plan:
    """A statement compiled once for a driver (asyncpg, or SQLite's inline reader): its SQL per
    parameter set, the bind processors of its parameters, and a row type with the statement's
    column keys and result processors.

    ``bind_all``: apply every parameter's bind processor (SQLite's driver takes only strings,
    numbers and bytes: a UUID or a datetime must be converted as SQLAlchemy would). Without
    it only the IN lists' elements are processed, which asyncpg needs (its codecs take UUIDs,
    datetimes and JSON values as they are).
    """

    __slots__ = ("binds", "columns", "compiled", "expanded", "lists", "row")

    def __init__(self, statement: Executable, dialect: Dialect, *, bind_all: bool = False) -> None:
        self.compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=dialect))
        self.binds: Mapping[str, Any] = self.compiled._bind_processors if bind_all else {}
        # The SQL text changes only with the lengths of the IN lists ("expanding" parameters;
        # none: it never changes), so it is kept per tuple of lengths. Unless a value is
        # rendered into the text (a literal_execute parameter): None, expanded on every call.
        self.lists: list[str] | None = None
        if not self.compiled.literal_execute_params:
            self.lists = [
                self.compiled.bind_names[b]
                for b in self.compiled.post_compile_params
                if b.expanding
            ]
        self.expanded: dict[tuple[int, ...], _Expanded | None] = {}
        # A write's RETURNING columns are its exported ones; without RETURNING it has none
        # (and gives no rows).
        selected = getattr(statement, "selected_columns", None)
        if selected is None:
            selected = getattr(statement, "exported_columns", None)
        columns = list(selected) if selected is not None else []
        keys = list(selected.keys()) if selected is not None else []
        self.row: Any = namedtuple("Row", keys, rename=True)  # type: ignore[misc]
        self.columns = [
            (i, p)
            for i, p in enumerate(
                column.type.dialect_impl(dialect).result_processor(dialect, None)
                for column in columns
            )
            if p is not None
        ]

    def arguments(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL text and its positional arguments for one set of parameters."""
        if self.lists is not None:
            given = self.compiled.construct_params(params)
            lengths = tuple(len(given[name]) for name in self.lists)
            if lengths not in self.expanded:
                state = self.compiled.construct_expanded_state(params)
                self.expanded[lengths] = _Expanded.of(state, given, self.lists, self.binds)
            expanded = self.expanded[lengths]
            if expanded is not None:
                return expanded.sql, expanded.arguments(given)
        state = self.compiled.construct_expanded_state(params)
        order = state.positiontup or []
        args = [state.parameters[name] for name in order]
        for n, name in enumerate(order):
            process = state.processors.get(name) or self.binds.get(name)
            if process is not None:
                args[n] = process(args[n])
        return state.statement, args

    def rows(self, records: list[Any]) -> list[Any]:
        make = self.row._make
        if not self.columns:
            return [make(record) for record in records]
        out = []
        for record in records:
            values = list(record)
            for i, process in self.columns:
                values[i] = process(values[i])
            out.append(make(values))
        return out


@dataclass(frozen=True, slots=True)
class _Expanded:
    """A statement's SQL for one tuple of IN-list lengths, and where each positional argument
    comes from: a parameter, or an element of a list (SQLAlchemy names the n-th ``name_n``)."""

    sql: str
    sources: tuple[tuple[str, int | None], ...]
    processors: tuple[Any, ...]

    @classmethod
    def of(
        cls,
        state: ExpandedState,
        values: Mapping[str, Any],
        lists: Sequence[str],
        binds: Mapping[str, Any],
    ) -> _Expanded | None:
        """None when an argument's source cannot be told (a tuple IN list, say): such a
        statement is expanded on every call, as SQLAlchemy does."""
        sources: list[tuple[str, int | None]] = []
        for name in state.positiontup or []:
            if name in values:
                sources.append((name, None))
                continue
            base, _, number = name.rpartition("_")
            if base not in lists or not number.isdigit():
                return None
            index = int(number) - 1
            if (
                not 0 <= index < len(values[base])
                or state.parameters[name] is not values[base][index]
            ):
                return None
            sources.append((base, index))
        processors = tuple(
            state.processors.get(name) or binds.get(name) for name in state.positiontup or []
        )
        return cls(state.statement, tuple(sources), processors)

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        args = [
            values[name] if index is None else values[name][index] for name, index in self.sources
        ]
        for n, process in enumerate(self.processors):
            if process is not None:
                args[n] = process(args[n])
        return args


# What a dead or dropped connection looks like to asyncpg: the read runs once more. A
# connection whose backend was terminated while it sat idle in the pool can also report an
# InternalClientError (the server's goodbye arrived between two statements).
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.AdminShutdownError,
    ConnectionError,
)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the reader's pool does to a connection it takes back: nothing beyond asyncpg's
    own rollback of a transaction left open (there never is one). asyncpg's default reset
    sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` after every
    statement: a second round trip per read, for session state the reader never changes (it
    runs single statements, never takes advisory locks, never listens or sets anything)."""


async def _json_codecs(conn: asyncpg.Connection) -> None:
    """JSON columns as SQLAlchemy's asyncpg dialect has them: decoded here, into Python
    objects; a bound value arrives already serialised by the column's bind processor."""

    def decode(data: bytes) -> Any:
        return json.loads(data.decode())

    def decode_jsonb(data: bytes) -> Any:
        return json.loads(data[1:].decode())  # after PostgreSQL's format byte

    def encode_jsonb(text: str) -> bytes:
        return b"\x01" + text.encode()

    await conn.set_type_codec(
        "json", encoder=str.encode, decoder=decode, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "jsonb", encoder=encode_jsonb, decoder=decode_jsonb, schema="pg_catalog", format="binary"
    )


class PgReader:
    """Read-only statements on PostgreSQL, run on asyncpg directly (its own small pool).

    The same SQLAlchemy statements, compiled once for the asyncpg dialect; asyncpg prepares
    each SQL text once per connection. Per inbox list this costs about 110 µs of CPU where
    SQLAlchemy's pool checkout, execute and result layers cost about 255 µs (2026-11-30, the
    2-core development machine): more than the query itself. Rows come back as named tuples
    with the statement's column keys, after the columns' result processors (``UTCDateTime``).
    Only committed data is read: each statement is its own transaction.
    """

    def __init__(
        self,
        url: URL,
        dialect: Dialect,
        *,
        connect_args: Mapping[str, Any] | None = None,
        max_size: int = READ_POOL_SIZE,
    ) -> None:
        # asyncpg reads a DSN's unknown query parameters as server settings: the URL's own
        # parameters come translated in ``connect_args`` (``asyncpg_connect_args``).
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_args = dict(connect_args or {})
        self._dialect = dialect
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None
        self._plans: weakref.WeakKeyDictionary[Executable, _Plan] = weakref.WeakKeyDictionary()

    @classmethod
    def for_engine(
        cls,
        engine: AsyncEngine,
        connect_args: Mapping[str, Any] | None = None,
        max_size: int = READ_POOL_SIZE,
    ) -> PgReader | None:
        """A reader beside an asyncpg engine, connecting as it does; None for anything else."""
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "asyncpg":
            return None
        return cls(engine.url, engine.dialect, connect_args=connect_args, max_size=max_size)

    def _plan(self, statement: Executable) -> _Plan:
        plan = self._plans.get(statement)
        if plan is None:
            plan = self._plans[statement] = _Plan(statement, self._dialect)
        return plan

    async def _get_pool(self) -> asyncpg.Pool:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._opening is None or self._loop is not loop:
            if self._pool is not None:  # opened on another (finished) event loop
                self._pool.terminate()
                self._pool = None
            self._opening, self._loop = asyncio.Lock(), loop
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._max_size,
                    init=_json_codecs,
                    reset=_keep_session,
                    **self._connect_args,
                )
        return self._pool

    async def read(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Any]:
        plan = self._plan(statement)
        records = await self._run("fetch", plan, params)
        return plan.rows(records)

    async def execute(self, statement: Executable, params: Mapping[str, Any] | None = None) -> int:
        """Run one statement in its own transaction; the number of rows it changed. Run once
        more if the connection was lost, so only for statements that are no-ops the second
        time."""
        status = await self._run("execute", self._plan(statement), params)
        last = status.rpartition(" ")[2]  # "UPDATE 3"
        return int(last) if last.isdigit() else 0

    async def execute_sql(self, sql: str, args: Sequence[Any]) -> str:
        """Run one statement of the driver's SQL (positional parameters) in its own
        transaction; its status. Run once more if the connection was lost, as ``execute``."""
        pool = await self._get_pool()
        try:
            return str(await pool.execute(sql, *args))
        except _CONNECTION_LOST:
            await pool.expire_connections()
            return str(await pool.execute(sql, *args))

    async def _run(self, method: str, plan: _Plan, params: Mapping[str, Any] | None) -> Any:
        """``pool.fetch`` or ``pool.execute`` of the plan's SQL, run once more if the
        connection was lost."""
        sql, args = plan.arguments(params or {})
        pool = await self._get_pool()
        try:
            return await getattr(pool, method)(sql, *args)
        except _CONNECTION_LOST:
            # A connection killed while idle in the pool (a restart, an idle timeout): the
            # others may be dead too, so every pooled connection is replaced (as SQLAlchemy
            # invalidates its pool on a disconnect), and the statement runs again.
            await pool.expire_connections()
            return await getattr(pool, method)(sql, *args)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._loop is asyncio.get_running_loop():
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
                return
            except TimeoutError:
                pass
        pool.terminate()


class Database:
    """One database: its engine and a session factory for units of work.

    On PostgreSQL a process holds up to ``pool_size + pool_overflow`` connections for units of
    work and ``read_pool_size`` for single reads; ``docs/configuration.md`` says how to fit
    every process under the server's ``max_connections``."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int = POOL_SIZE,
        pool_overflow: int = POOL_OVERFLOW,
        read_pool_size: int = READ_POOL_SIZE,
    ) -> None:
        self.url = url
        address = make_url(url)
        connect_args: dict[str, Any] = {}
        if address.get_backend_name() == "postgresql" and address.get_driver_name() == "asyncpg":
            address, connect_args = asyncpg_connect_args(address)
        self.engine = create_engine(
            address,
            echo=echo,
            connect_args=connect_args,
            pool_size=pool_size,
            pool_overflow=pool_overflow,
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._inline = InlineReader.for_url(self.engine.url, echo=echo)
        self._writer = InlineWriter.for_url(self.engine.url, echo=echo)
        self._pg = PgReader.for_engine(self.engine, connect_args, read_pool_size)

    @classmethod
    def for_settings(cls, settings: Settings) -> Database:
        """The database of ``settings``, with its pool sizes."""
        return cls(
            settings.database_url,
            pool_size=settings.database_pool_size,
            pool_overflow=settings.database_pool_overflow,
            read_pool_size=settings.database_read_pool_size,
        )

    async def read(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """The rows of one read-only statement, committed data only.

        On a SQLite file it runs inline, on a read-only connection of the calling thread: an
        indexed read takes tens of microseconds there, while aiosqlite's hand-off to its own
        thread and back cost about 1 ms of CPU per query on the 2-core development machine.
        On PostgreSQL it runs on asyncpg directly (``PgReader``), once more if its connection
        turned out dead. In-memory SQLite goes through the async pool.
        """
        if self._inline is not None:
            return self._inline.read(statement, params)
        if self._pg is not None:
            return await self._pg.read(statement, params)
        rows: Sequence[Row[Any]] = await self._autocommit(statement, params, rows=True)
        return rows

    async def execute_idempotent(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> int:
        """Run one write statement in its own transaction (committed when this returns) and
        return how many rows it changed.

        The statement must be a no-op when run a second time: if its connection turns out dead
        (the pool pings only idle connections), it runs once more on a fresh one. On
        PostgreSQL it runs on asyncpg directly, like ``read``; on a SQLite file on the calling
        thread in a short transaction of its own (``InlineWriter``).
        """
        if self._pg is not None:
            return await self._pg.execute(statement, params)
        if self._writer is not None:
            changed: int = await self._writer.execute(statement, params, rows=False)
            return changed
        count: int = await self._autocommit(statement, params, rows=False)
        return count

    async def fetch_idempotent(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Any]:
        """Like ``execute_idempotent`` for a statement that writes and returns rows (a
        ``RETURNING`` or a writing CTE): committed when this returns, run once more on a fresh
        connection if its connection turned out dead."""
        if self._pg is not None:
            return await self._pg.read(statement, params)
        if self._writer is not None:
            written: Sequence[Any] = await self._writer.execute(statement, params, rows=True)
            return written
        rows: Sequence[Any] = await self._autocommit(statement, params, rows=True)
        return rows

    async def _autocommit(
        self, statement: Executable, params: Mapping[str, Any] | None, *, rows: bool
    ) -> Any:
        """One statement on a pooled connection in autocommit (no BEGIN / ROLLBACK around it):
        its rows, or how many rows it changed; once more on a fresh connection if the first
        turned out dead."""

        async def once() -> Any:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                result = await conn.execute(statement, params)
                return result.all() if rows else int(getattr(result, "rowcount", 0) or 0)

        try:
            return await once()
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        return await once()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        async with self.sessions() as session, session.begin():
            yield session

    async def record(
        self, work: Callable[[AsyncSession], Awaitable[None]], *, outage_wait: float = 0.0
    ) -> None:
        """Run ``work`` in a unit of work; if SQLite answers "database is locked", run it again
        (up to ``RECORD_ATTEMPTS`` times).

        For records of what a provider already accepted (the delivery ledger): failing such a
        record fails the job, which runs again and sends those pushes a second time. In WAL
        mode a deferred transaction can get SQLITE_BUSY at once, without the busy timeout,
        when another connection commits between its first read and its first write. ``work``
        must be safe to run twice (the ledger's writes are).

        ``outage_wait``: while the database cannot be reached, keep trying for that many
        seconds (a worker passes part of its job's lease: the job is still its own meanwhile),
        so that a short outage does not turn pushes already accepted into pushes sent twice.
        """

        async def unit() -> None:
            async with self.transaction() as session:
                await work(session)

        await self._recording(unit, outage_wait)

    async def record_on_driver(
        self, sql: str, args: Sequence[Any], *, outage_wait: float = 0.0
    ) -> bool:
        """PostgreSQL: ``record`` for a single statement of the driver's SQL (positional
        parameters), committed on its own on the reader's pool: no unit of work, no BEGIN and
        COMMIT round trips. The statement must be a no-op when run a second time. False, with
        nothing done, on any other database."""
        pg = self._pg
        if pg is None:
            return False

        async def unit() -> None:
            await pg.execute_sql(sql, args)

        await self._recording(unit, outage_wait)
        return True

    async def record_inline(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, outage_wait: float = 0.0
    ) -> bool:
        """A SQLite file: ``record`` for statements of the driver's SQL (``?`` parameters),
        run on the event loop's thread in one short transaction (``InlineWriter``). They must
        be no-ops when run a second time. False, with nothing done, on any other database."""
        writer = self._writer
        if writer is None:
            return False

        async def unit() -> None:
            await writer.write(statements)

        await self._recording(unit, outage_wait)
        return True

    async def _recording(self, unit: Callable[[], Awaitable[None]], outage_wait: float) -> None:
        """Run ``unit`` as ``record`` says: again on SQLite's "locked", and for up to
        ``outage_wait`` seconds while the database is unreachable."""
        deadline = time.monotonic() + outage_wait
        attempt = 0
        said = False
        while True:
            attempt += 1
            try:
                await unit()
                if said:
                    log.info("the record was written after the database came back")
                return
            except OperationalError as exc:
                if "locked" in str(exc.orig) and attempt < RECORD_ATTEMPTS:
                    await asyncio.sleep(0.02 * attempt)
                    continue
                if not self._wait_out(exc, deadline, said):
                    raise
            except Exception as exc:
                if not self._wait_out(exc, deadline, said):
                    raise
            said = True
            await asyncio.sleep(min(2.0, 0.1 * 2 ** min(attempt, 5)))

    @staticmethod
    def _wait_out(exc: Exception, deadline: float, said: bool) -> bool:
        """True if ``record`` should try again: the database is unreachable, and there is
        time left. Says so once."""
        left = deadline - time.monotonic()
        if left <= 0 or not database_unavailable(exc):
            return False
        if not said:
            log.warning(
                "recording delivered pushes failed: %s; trying again for up to %.0f s",
                first_line(exc),
                left,
            )
        return True

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (nothing is committed)."""
        async with self.sessions() as session:
            yield session

    async def current_revision(self) -> str | None:
        def read(conn: Connection) -> str | None:
            return MigrationContext.configure(conn).get_current_revision()

        async with self.engine.connect() as conn:
            return await conn.run_sync(read)

    async def upgrade(self, revision: str = "head") -> str | None:
        """Migrate up to ``revision``; the revision the run found the schema at once it held
        the migration lock (another process's migration may have run meanwhile)."""
        current = await self.current_revision()
        if current is not None and not known_revision(current):
            raise SchemaOutOfDate(_unknown(current))
        found: list[str | None] = []

        def upgrade(cfg: Config) -> None:
            command.upgrade(cfg, revision)
            found.append(cfg.attributes.get("found_revision", current))

        await self._run(upgrade)
        return found[0] if found else current

    async def downgrade(self, revision: str) -> None:
        await self._run(lambda cfg: command.downgrade(cfg, revision))

    async def check_schema(self) -> None:
        """Raise SchemaOutOfDate unless the database is at the head revision."""
        current, head = await self.current_revision(), head_revision()
        if current is not None and not known_revision(current):
            raise SchemaOutOfDate(_unknown(current))
        if current != head:
            raise SchemaOutOfDate(
                f"the database schema is at revision {current or 'none (empty database)'} "
                f"but this clarion needs {head}; run `clarion migrate` first"
            )

    async def _run(self, action: Any) -> None:
        def run(conn: Connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            action(cfg)

        async with self.engine.begin() as conn:
            await conn.run_sync(run)

    async def dispose(self) -> None:
        if self._inline is not None:
            self._inline.close()
        if self._writer is not None:
            self._writer.close()
        if self._pg is not None:
            await self._pg.close()
        await self.engine.dispose()
