"""Database.record_inline: a SQLite file's short write transactions on the event loop's thread
(InlineWriter), which take SQLite's write lock without waiting inside SQLite and hold it only
while SQLite writes."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from clarion.store.db import Database, InlineWriter
from clarion.store.models import Application

INSERT = "INSERT INTO applications (app_id, created_at) VALUES (?, '2026-12-02 12:00:00')"


@contextmanager
def write_lock_held(path: str) -> Iterator[sqlite3.Connection]:
    """Another connection (as another process's would) holding SQLite's write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


async def app_ids(db: Database) -> list[str]:
    return [row.app_id for row in await db.read(select(Application.app_id).order_by("app_id"))]


async def test_an_inline_record_commits_its_statements_together(sqlite_db: Database) -> None:
    statements = [(INSERT, ("app-1",)), (INSERT, ("app-2",))]
    assert await sqlite_db.record_inline(statements) is True
    assert await app_ids(sqlite_db) == ["app-1", "app-2"]
    # Committed for every other connection too (the unit-of-work pool).
    async with sqlite_db.transaction() as session:
        assert len((await session.execute(select(Application.id))).all()) == 2


async def test_a_failing_statement_rolls_the_whole_record_back(sqlite_db: Database) -> None:
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await sqlite_db.record_inline([(INSERT, ("app-1",)), (INSERT, ("app-1",))])
    assert await app_ids(sqlite_db) == []
    # The connection is usable afterwards: nothing was left open.
    assert await sqlite_db.record_inline([(INSERT, ("app-3",))])
    assert await app_ids(sqlite_db) == ["app-3"]


async def test_a_record_waits_for_the_write_lock_without_stopping_the_loop(
    sqlite_db: Database,
) -> None:
    path = str(sqlite_db.engine.url.database)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    counting = asyncio.create_task(ticker())
    try:
        with write_lock_held(path) as other:
            record = asyncio.create_task(sqlite_db.record_inline([(INSERT, ("app-1",))]))
            await asyncio.sleep(0.3)
            assert not record.done()  # it waits for the lock...
            assert ticks > 50  # ...while the loop goes on
            assert await app_ids(sqlite_db) == []
            other.execute(INSERT, ("app-0",))
            other.execute("COMMIT")
            released = time.monotonic()
            assert await asyncio.wait_for(record, 2) is True
            # Tries again every few milliseconds, not after SQLite's busy handler's longer
            # sleeps.
            assert time.monotonic() - released < 0.1
    finally:
        counting.cancel()
    assert await app_ids(sqlite_db) == ["app-0", "app-1"]


async def test_a_lock_held_too_long_fails_the_write_as_the_busy_timeout_does(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await db.upgrade()
    writer = InlineWriter(db.engine.url, busy_seconds=0.2)
    try:
        with write_lock_held(str(tmp_path / "w.db")):
            started = time.monotonic()
            with pytest.raises(OperationalError, match="locked"):
                await writer.write([(INSERT, ("app-1",))])
            assert 0.2 <= time.monotonic() - started < 1.0
        await writer.write([(INSERT, ("app-2",))])  # and works once the lock is free
        assert await app_ids(db) == ["app-2"]
    finally:
        writer.close()
        await db.dispose()


async def test_inline_writes_alone_have_the_wal_checkpointed_off_the_loop(
    sqlite_db: Database,
) -> None:
    """With no other writer to checkpoint, the WAL would only grow: every CHECKPOINT_EVERY
    commits the writer has a passive checkpoint run on an executor's thread."""
    path = str(sqlite_db.engine.url.database)
    await sqlite_db.dispose()  # the pool's connections (and their checkpoints) are gone
    size = os.stat(path).st_size
    writer = InlineWriter(sqlite_db.engine.url)
    rows = ", ".join(["(?, '2026-12-02 12:00:00')"] * 50)
    sql = f"INSERT INTO applications (app_id, created_at) VALUES {rows}"  # noqa: S608
    try:
        for n in range(2 * InlineWriter.CHECKPOINT_EVERY + 1):
            await writer.write([(sql, tuple(f"app-{n}-{k}-{'x' * 200}" for k in range(50)))])
            await asyncio.sleep(0)
        for _ in range(200):  # the last one may still run on its thread
            if writer.checkpoints >= 2:
                break
            await asyncio.sleep(0.01)
        assert writer.checkpoints >= 2
        # The rows reached the database file itself, not only the WAL.
        assert os.stat(path).st_size > size + 1_000_000
    finally:
        writer.close()


async def test_the_inline_writer_does_not_checkpoint_as_it_commits(sqlite_db: Database) -> None:
    """A checkpoint syncs the file: it must not run on the event loop's thread."""
    assert await sqlite_db.record_inline([(INSERT, ("app-1",))])
    writer = sqlite_db._writer
    assert writer is not None
    driver = writer._driver()
    assert driver.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    assert driver.execute("PRAGMA busy_timeout").fetchone() == (0,)
    assert driver.execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_memory_and_postgresql_databases_have_no_inline_writer() -> None:
    assert InlineWriter.for_url(make_url("sqlite+aiosqlite://")) is None
    assert InlineWriter.for_url(make_url("sqlite+aiosqlite:///:memory:")) is None
    assert InlineWriter.for_url(make_url("postgresql+asyncpg://u@h/db")) is None
    assert InlineWriter.for_url(make_url("sqlite+aiosqlite:////tmp/x.db")) is not None


async def test_an_inline_record_is_for_sqlite_files_only(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        assert await db.record_inline([(INSERT, ("app-1",))]) is False
    finally:
        await db.dispose()


async def test_idempotent_statements_run_inline_and_answer_as_the_pool_does(
    sqlite_db: Database,
) -> None:
    from sqlalchemy import update

    assert await sqlite_db.record_inline([(INSERT, ("app-1",)), (INSERT, ("app-2",))])
    rename = (
        update(Application)
        .where(Application.app_id.in_(["app-1", "app-2", "app-3"]))
        .values(app_id=Application.app_id + "-renamed")
    )
    assert await sqlite_db.execute_idempotent(rename) == 2
    back = (
        update(Application)
        .where(Application.app_id == "app-1-renamed")
        .values(app_id="app-1")
        .returning(Application.app_id, Application.created_at)
    )
    [row] = await sqlite_db.fetch_idempotent(back)
    assert row.app_id == "app-1"
    assert row.created_at.year == 2026  # the column's result processing, as the pool gives it
    assert await app_ids(sqlite_db) == ["app-1", "app-2-renamed"]
    writer = sqlite_db._writer
    assert writer is not None
    with write_lock_held(str(sqlite_db.engine.url.database)) as other:
        task = asyncio.create_task(sqlite_db.execute_idempotent(rename))
        await asyncio.sleep(0.05)
        assert not task.done()
        other.execute("ROLLBACK")
        assert await asyncio.wait_for(task, 2) == 1
