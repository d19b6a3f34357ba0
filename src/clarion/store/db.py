"""The engine, the unit of work, and the migration state of one database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Dialect, Executable, Row, event
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

MIGRATIONS = Path(__file__).parent / "migrations"
# A pooled PostgreSQL connection is pinged on checkout only once it has been idle this long.
PING_AFTER_IDLE_SECONDS = 1.0
# PostgreSQL connections per process: kept open, and a few more for bursts.
POOL_SIZE = 32
POOL_OVERFLOW = 16
RECORD_ATTEMPTS = 5


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


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and enforced foreign keys; PostgreSQL
    a pool whose connections are pinged after they sat idle (``_ping_if_idle``)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # Connections beyond pool_size are closed when given back: at 32 requests in flight a pool
    # of 10 opened and closed a (TLS-negotiating) connection for every other request.
    engine = create_async_engine(url, echo=echo, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    event.listen(engine.sync_engine, "checkin", _mark_idle)
    event.listen(engine.sync_engine, "checkout", _ping_if_idle(engine.sync_engine.dialect))
    return engine


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class InlineReader:
    """Read-only statements on a SQLite file, run synchronously in the calling thread.

    Safe to run on the event loop: in WAL mode a reader never waits for the writer (it reads
    the last committed snapshot), each statement is its own transaction (autocommit), and the
    connection refuses writes (``query_only``). One connection per thread that reads.
    """

    def __init__(self, url: URL, *, echo: bool = False) -> None:
        self._engine = create_sync_engine(
            url.set(drivername="sqlite+pysqlite"),
            echo=echo,
            poolclass=NullPool,
            connect_args={"check_same_thread": False},
        )
        event.listen(self._engine, "connect", _reader_pragmas)
        self._local = threading.local()
        self._open: list[Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def for_url(cls, url: URL, *, echo: bool = False) -> InlineReader | None:
        """A reader for a SQLite file; None for anything else (in-memory SQLite included)."""
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        if "mode=memory" in str(url):
            return None
        return cls(url, echo=echo)

    def read(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        try:
            return conn.execute(statement, params).all()
        finally:
            conn.rollback()  # ends SQLAlchemy's bookkeeping; nothing is open in SQLite

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
        self._engine.dispose()


def _reader_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    # A WAL reader waits only in rare moments (another connection recovering the WAL index);
    # never long, since this wait holds up the event loop.
    cursor.execute("PRAGMA busy_timeout=1000")
    cursor.close()


class Database:
    """One database: its engine and a session factory for units of work."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = create_engine(url, echo=echo)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._inline = InlineReader.for_url(self.engine.url, echo=echo)

    async def read(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """The rows of one read-only statement, committed data only.

        On a SQLite file it runs inline, on a read-only connection of the calling thread: an
        indexed read takes tens of microseconds there, while aiosqlite's hand-off to its own
        thread and back cost about 1 ms of CPU per query on the 2-core development machine.
        On PostgreSQL (and in-memory SQLite) it goes through the async pool, and runs once
        more on a fresh connection if the first turned out dead (the pool pings only idle
        connections, see ``_ping_if_idle``): a read is safe to repeat.
        """
        if self._inline is not None:
            return self._inline.read(statement, params)
        try:
            return await self._read_pooled(statement, params)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        return await self._read_pooled(statement, params)

    async def _read_pooled(
        self, statement: Executable, params: Mapping[str, Any] | None
    ) -> Sequence[Row[Any]]:
        async with self.engine.connect() as conn:
            # One statement, its own transaction: no BEGIN and ROLLBACK round trips around it.
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return (await conn.execute(statement, params)).all()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        async with self.sessions() as session, session.begin():
            yield session

    async def record(self, work: Callable[[AsyncSession], Awaitable[None]]) -> None:
        """Run ``work`` in a unit of work; if SQLite answers "database is locked", run it again
        (up to ``RECORD_ATTEMPTS`` times).

        For records of what a provider already accepted (the delivery ledger): failing such a
        record fails the job, which runs again and sends those pushes a second time. In WAL
        mode a deferred transaction can get SQLITE_BUSY at once, without the busy timeout,
        when another connection commits between its first read and its first write. ``work``
        must be safe to run twice (the ledger's writes are).
        """
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                async with self.transaction() as session:
                    await work(session)
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or attempt == RECORD_ATTEMPTS:
                    raise
            await asyncio.sleep(0.02 * attempt)

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

    async def upgrade(self, revision: str = "head") -> None:
        await self._run(lambda cfg: command.upgrade(cfg, revision))

    async def downgrade(self, revision: str) -> None:
        await self._run(lambda cfg: command.downgrade(cfg, revision))

    async def check_schema(self) -> None:
        """Raise SchemaOutOfDate unless the database is at the head revision."""
        current, head = await self.current_revision(), head_revision()
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
        await self.engine.dispose()
