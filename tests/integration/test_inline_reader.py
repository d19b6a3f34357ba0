"""Database.read: SQLite files read inline (committed data, read-only), PostgreSQL on asyncpg
directly (PgReader); both answer what SQLAlchemy's own session answers."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.store.db import Database, InlineReader, PgReader
from clarion.store.models import (
    Application,
    InboxMessage,
    InboxMessageApplication,
    PushMessage,
    utcnow,
)


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


async def test_a_record_on_the_driver_is_for_postgresql_only(sqlite_db: Database) -> None:
    """On SQLite it does nothing and says so: the caller records with a unit of work."""
    sql = "INSERT INTO applications (app_id, created_at) VALUES ($1, $2)"
    assert await sqlite_db.record_on_driver(sql, ["app-x", utcnow()]) is False
    assert list(await sqlite_db.read(select(Application.app_id))) == []


# --- the same rows, whichever reader ------------------------------------------------------------


async def _seed_inbox(db: Database) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(3)]
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM inbox_messages"))
        await session.execute(text("DELETE FROM applications"))
        apps = [Application(app_id=f"app-{n}", created_at=utcnow()) for n in range(2)]
        session.add_all(apps)
        await session.flush()
        for n, message_id in enumerate(ids):
            session.add(
                InboxMessage(
                    id=message_id,
                    user_id="reader-user",
                    type="text",
                    subject=f"s{n}",
                    summary="",
                    body="b",
                    read=n == 0,
                    created_at=datetime(2026, 11, 30, 12, n, tzinfo=UTC),
                    read_at=datetime(2026, 11, 30, 13, 0, tzinfo=UTC) if n == 0 else None,
                )
            )
        await session.flush()
        session.add_all(
            InboxMessageApplication(message_id=m, application_id=apps[n % 2].id)
            for n, m in enumerate(ids)
        )
    return ids


_ROWS = (
    select(
        InboxMessage.id,
        InboxMessage.read,
        InboxMessage.created_at,
        InboxMessage.read_at,
        Application.app_id.label("app"),
        Application.id,
    )
    .join(InboxMessageApplication, InboxMessageApplication.message_id == InboxMessage.id)
    .join(Application, Application.id == InboxMessageApplication.application_id)
    .where(
        InboxMessage.user_id == bindparam("user"),
        Application.app_id.in_(bindparam("apps", expanding=True)),
    )
    .order_by(InboxMessage.created_at)
)


async def test_reads_answer_what_a_session_answers(database_url: str) -> None:
    """Types (UUID, bool, timezone-aware UTC datetimes, NULL), labels, keys and positions, and
    IN lists of different lengths through one statement."""
    db = Database(database_url)
    await db.upgrade()
    try:
        ids = await _seed_inbox(db)
        for apps in (["app-0"], ["app-0", "app-1"], ["app-1", "missing", "app-0"]):
            params = {"user": "reader-user", "apps": apps}
            rows = await db.read(_ROWS, params)
            async with db.reader() as session:
                expected = (await session.execute(_ROWS, params)).all()
            assert [tuple(r) for r in rows] == [tuple(r) for r in expected]
            # Same keys (a repeated name, ``id``, too) and values by key.
            assert [r._asdict() for r in rows] == [r._asdict() for r in expected]
        rows = await db.read(_ROWS, {"user": "reader-user", "apps": ["app-0", "app-1"]})
        assert [r.app for r in rows] == ["app-0", "app-1", "app-0"]
        first = rows[0]
        assert isinstance(first[0], uuid.UUID) and first[0] == ids[0]
        assert first.read is True and rows[1].read is False
        assert first.created_at == datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        assert first.created_at.utcoffset() is not None
        assert first.read_at == datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
        assert rows[1].read_at is None
        assert await db.read(_ROWS, {"user": "nobody", "apps": ["app-0"]}) == []
        # Parameters of those types go in as SQLAlchemy would bind them (SQLite's driver
        # refuses a UUID, and compares datetimes as the text SQLAlchemy writes).
        by_typed_params = select(InboxMessage.subject).where(
            InboxMessage.id == bindparam("id"),
            InboxMessage.created_at <= bindparam("at"),
            InboxMessage.read == bindparam("read"),
        )
        typed = {"id": ids[0], "at": datetime(2026, 11, 30, 12, 0, tzinfo=UTC), "read": True}
        async with db.reader() as session:
            expected = (await session.execute(by_typed_params, typed)).all()
        assert len(expected) == 1
        assert [tuple(r) for r in await db.read(by_typed_params, typed)] == [
            tuple(r) for r in expected
        ]
        earlier = {**typed, "at": datetime(2026, 11, 30, 11, 59, tzinfo=UTC)}
        assert await db.read(by_typed_params, earlier) == []
        [count] = await db.read(select(func.count()).select_from(InboxMessage))
        assert count[0] == 3
        # A JSON column comes back decoded; a JSON-typed parameter goes in serialised.
        payload = {"title": "Ünïcode ✓", "n": [1, 2.5, None], "nested": {"ok": True}}
        async with db.transaction() as session:
            [app] = await session.execute(
                select(Application.id).where(Application.app_id == "app-0")
            )
            session.add(
                PushMessage(
                    application_id=app.id, user_id="u", notification=payload, created_at=utcnow()
                )
            )
        found = await db.read(
            select(PushMessage.notification, PushMessage.expires_at).where(
                PushMessage.notification.is_not(None), PushMessage.user_id == bindparam("u")
            ),
            {"u": "u"},
        )
        assert [tuple(r) for r in found] == [(payload, None)]
    finally:
        await db.dispose()


_TWO_LISTS = (
    select(InboxMessage.subject, Application.app_id)
    .join(InboxMessageApplication, InboxMessageApplication.message_id == InboxMessage.id)
    .join(Application, Application.id == InboxMessageApplication.application_id)
    .where(
        Application.app_id.in_(bindparam("apps", expanding=True)),
        InboxMessage.subject.in_(bindparam("subjects", expanding=True)),
        InboxMessage.user_id.in_(["nobody", "reader-user"]),  # a list given in the statement
    )
    .order_by(InboxMessage.subject, Application.app_id)
)


async def test_in_lists_of_any_lengths_reuse_their_sql_and_keep_their_order(
    database_url: str,
) -> None:
    """The PostgreSQL reader keeps a statement's SQL per tuple of list lengths: the same
    lengths with other values, lists in another order, an empty list, and lengths seen before
    must all answer what a session answers."""
    db = Database(database_url)
    await db.upgrade()
    try:
        await _seed_inbox(db)
        cases = [
            (["app-0", "app-1"], ["s0", "s1", "s2"]),
            (["app-1", "app-0"], ["s2", "s0", "s1"]),  # same lengths, other order
            (["app-1", "zzz"], ["s1", "s2", "nope"]),  # same lengths, other values
            (["app-0"], ["s0", "s1", "s2"]),
            ([], ["s0"]),  # an empty list
            (["app-0", "app-1", "app-0"], ["s2"]),  # a repeated value
            (["app-0", "app-1"], ["s0", "s1", "s2"]),  # lengths seen before
        ]
        for apps, subjects in cases:
            params = {"apps": apps, "subjects": subjects}
            rows = await db.read(_TWO_LISTS, params)
            async with db.reader() as session:
                expected = (await session.execute(_TWO_LISTS, params)).all()
            assert [tuple(r) for r in rows] == [tuple(r) for r in expected], (apps, subjects)
        rows = await db.read(_TWO_LISTS, {"apps": ["app-1", "app-0"], "subjects": ["s2", "s0"]})
        assert [tuple(r) for r in rows] == [("s0", "app-0"), ("s2", "app-0")]
        reader = db._pg or db._inline
        if reader is not None:  # the SQL was expanded once per tuple of lengths
            plan = reader._plans[_TWO_LISTS]
            assert plan.lists is not None
            seen = [dict(zip(plan.lists, lengths, strict=True)) for lengths in plan.expanded]
            assert sorted((d["apps"], d["subjects"]) for d in seen) == [
                (0, 1),
                (1, 3),
                (2, 2),
                (2, 3),
                (3, 1),
            ]
            assert all(e is not None for e in plan.expanded.values())
    finally:
        await db.dispose()


async def test_execute_idempotent_commits_and_counts_changed_rows(database_url: str) -> None:
    db = Database(database_url)
    await db.upgrade()
    try:
        ids = await _seed_inbox(db)
        mark = (
            update(InboxMessage)
            .where(InboxMessage.user_id == bindparam("owner"), InboxMessage.read.is_(False))
            .values(read=True, read_at=bindparam("when", type_=InboxMessage.read_at.type))
        )
        when = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
        assert await db.execute_idempotent(mark, {"owner": "reader-user", "when": when}) == 2
        assert await db.execute_idempotent(mark, {"owner": "reader-user", "when": when}) == 0
        async with db.reader() as session:  # committed: another connection sees it
            found = await session.execute(
                select(InboxMessage.id, InboxMessage.read_at).order_by(InboxMessage.created_at)
            )
            assert [r.read_at for r in found] == [
                datetime(2026, 11, 30, 13, 0, tzinfo=UTC),
                when,
                when,
            ]
        assert len(ids) == 3
    finally:
        await db.dispose()


def test_only_postgresql_on_asyncpg_gets_a_pg_reader() -> None:
    for url, expected in (
        ("postgresql+asyncpg://u@h/db", True),
        ("sqlite+aiosqlite:///x.db", False),
    ):
        db = Database(url)
        assert (PgReader.for_engine(db.engine) is not None) is expected


async def test_a_postgresql_read_survives_its_connections_being_killed(
    postgres_url: str,
) -> None:
    """Connections killed while idle in the reader's pool: used before the event loop could
    notice (the statement fails and runs again on a fresh connection), and after a moment
    (asyncpg replaces them on checkout). Each read still answers."""
    db = Database(postgres_url)
    dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    pid_query = select(func.pg_backend_pid().label("pid"), func.pg_sleep(0.05))

    async def terminate(pids: list[int]) -> None:
        killer = await asyncpg.connect(dsn)
        try:
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids
            )
        finally:
            await killer.close()

    try:
        for pause in (0.0, 0.1):
            held = await asyncio.gather(*(db.read(pid_query) for _ in range(4)))
            pids = sorted({rows[0].pid for rows in held})
            assert len(pids) >= 2
            # Killed from another thread while this event loop waits: when it resumes, the
            # pooled connections look alive until a statement is sent on them.
            thread = threading.Thread(target=asyncio.run, args=(terminate(pids),))
            thread.start()
            thread.join()
            if pause:
                await asyncio.sleep(pause)
            # One read at once (no other task lets the loop run first), then several.
            first = await db.read(pid_query)
            after = await asyncio.gather(*(db.read(pid_query) for _ in range(4)))
            assert not {rows[0].pid for rows in [first, *after]} & set(pids)
    finally:
        await db.dispose()


async def test_a_postgresql_read_is_one_statement_on_the_wire(postgres_url: str) -> None:
    """The reader's pool takes a connection back without asyncpg's default reset (a second
    round trip per read: ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``)."""
    db = Database(postgres_url)
    statement = select(func.pg_backend_pid().label("pid"))
    try:
        [first] = await db.read(statement)
        pool = db._pg._pool  # type: ignore[union-attr]
        assert pool is not None
        sent: list[str] = []
        async with pool.acquire() as conn:  # the pool's only connection
            conn.add_query_logger(lambda record: sent.append(record.query))
        for _ in range(3):
            [row] = await db.read(statement)
            assert row.pid == first.pid
        assert len(sent) == 3, sent
        assert all("pg_backend_pid" in query for query in sent), sent
    finally:
        await db.dispose()
