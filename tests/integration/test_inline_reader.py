"""Database.read: SQLite files read inline (committed data, read-only), PostgreSQL through the
async pool; both answer the same."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.store.db import Database, InlineReader
from clarion.store.models import Application, utcnow


async def test_reads_see_what_was_committed_a_moment_ago(database_url: str) -> None:
    db = Database(database_url)
    await db.upgrade()
    try:
        async with db.transaction() as session:
            await session.execute(text("DELETE FROM applications"))
        query = select(Application.app_id).order_by(Application.app_id)
        assert list(await db.read(query)) == []
        async with db.transaction() as session:
            session.add(Application(app_id="first-app", created_at=utcnow()))
        assert [r.app_id for r in await db.read(query)] == ["first-app"]
        async with db.transaction() as session:
            session.add(Application(app_id="second-app", created_at=utcnow()))
            # Not yet committed: a reader does not see it.
            await session.flush()
            assert [r.app_id for r in await db.read(query)] == ["first-app"]
        assert [r.app_id for r in await db.read(query)] == ["first-app", "second-app"]
        found = await db.read(
            select(Application.app_id).where(Application.app_id == text(":wanted")),
            {"wanted": "second-app"},
        )
        assert [r[0] for r in found] == ["second-app"]
    finally:
        await db.dispose()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite file."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await db.upgrade()
    try:
        yield db
    finally:
        await db.dispose()


async def test_sqlite_reads_run_inline_and_cannot_write(sqlite_db: Database) -> None:
    inline = InlineReader.for_url(sqlite_db.engine.url)
    assert inline is not None
    with pytest.raises(OperationalError, match=r"readonly|read-only|attempt to write"):
        inline.read(text("INSERT INTO applications (app_id, created_at) VALUES ('x', '')"))
    inline.close()
    # Another thread gets a connection of its own and the same answers.
    answers: list[int] = []
    thread = threading.Thread(
        target=lambda: answers.append(len(asyncio.run(sqlite_db.read(select(Application.id)))))
    )
    thread.start()
    thread.join()
    assert answers == [0]


def test_memory_and_postgresql_urls_have_no_inline_reader() -> None:
    from sqlalchemy.engine import make_url

    assert InlineReader.for_url(make_url("sqlite+aiosqlite://")) is None
    assert InlineReader.for_url(make_url("sqlite+aiosqlite:///:memory:")) is None
    assert InlineReader.for_url(make_url("postgresql+asyncpg://u@h/db")) is None
    assert InlineReader.for_url(make_url("sqlite+aiosqlite:////tmp/x.db")) is not None


def _locked() -> OperationalError:
    import sqlite3

    return OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))


async def test_a_record_is_written_again_after_a_lock_and_committed_once(
    sqlite_db: Database,
) -> None:
    calls = 0

    async def work(session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        session.add(Application(app_id=f"app-{calls}", created_at=utcnow()))
        await session.flush()
        if calls < 3:
            raise _locked()  # rolled back with its unit of work

    await sqlite_db.record(work)
    assert calls == 3
    assert [r.app_id for r in await sqlite_db.read(select(Application.app_id))] == ["app-3"]


async def test_a_record_gives_up_on_other_errors_and_after_its_attempts(
    sqlite_db: Database,
) -> None:
    import sqlite3

    from clarion.store.db import RECORD_ATTEMPTS

    calls = 0

    async def always_locked(_session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        raise _locked()

    async def broken(_session: AsyncSession) -> None:
        raise OperationalError("x", {}, sqlite3.OperationalError("no such table: nope"))

    with pytest.raises(OperationalError, match="locked"):
        await sqlite_db.record(always_locked)
    assert calls == RECORD_ATTEMPTS
    with pytest.raises(OperationalError, match="no such table"):
        await sqlite_db.record(broken)
