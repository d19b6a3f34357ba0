"""Two `clarion migrate` at once on an empty database (PostgreSQL, and a SQLite file): one
migrates, the other waits for it and then finds the schema at head."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from clarion.store.db import Database, head_revision
from tests.conftest import _pg_admin, _pg_url

ROUNDS = 3


def _start_migrate(cwd: Path, database_url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env["CLARION_DATABASE_URL"] = database_url
    return subprocess.Popen(
        [sys.executable, "-m", "clarion", "migrate"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.postgres
async def test_two_migrations_at_once_both_succeed_and_leave_the_schema_at_head(
    postgres_url: str, tmp_path: Path
) -> None:
    for _ in range(ROUNDS):
        name = f"clarion_race_{os.getpid()}_{secrets.token_hex(4)}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        try:
            url = _pg_url(name)
            runs = [_start_migrate(tmp_path, url) for _ in range(2)]
            outputs = [run.communicate(timeout=120) for run in runs]
            for run, (stdout, stderr) in zip(runs, outputs, strict=True):
                assert run.returncode == 0, stderr
                assert f"-> {head_revision()}" in stdout
            await _check_race(url, outputs)
        finally:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_two_migrations_at_once_on_a_new_sqlite_file(tmp_path: Path) -> None:
    # Before the migration took SQLite's write lock first, one round in three failed here with
    # "table applications already exists".
    for round in range(ROUNDS * 2):
        url = f"sqlite+aiosqlite:///{tmp_path / f'race{round}.db'}"
        runs = [_start_migrate(tmp_path, url) for _ in range(2)]
        outputs = [run.communicate(timeout=120) for run in runs]
        for run, (_, stderr) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, stderr
        await _check_race(url, outputs)


def _give_up_after_100_ms(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=100")  # a stand-in for the usual 10 s
    cursor.close()


async def test_a_sqlite_migration_waits_for_the_lock_past_the_usual_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    event.listen(db.engine.sync_engine, "connect", _give_up_after_100_ms)
    # Another process's migration, as SQLite sees it: the write lock, held for a second.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(1.0, holder.execute, "ROLLBACK")
    started = time.monotonic()
    try:
        found = await db.upgrade()
        waited = time.monotonic() - started
        assert found is None  # it found the database empty, once the lock was its own
        assert waited >= 0.9
        assert await db.current_revision() == head_revision()
        # Only the wait for the lock was long: the connections give up after 100 ms again.
        async with db.engine.connect() as one, db.engine.connect() as two:
            for conn in (one, two):
                assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 100
    finally:
        holder.close()
        await db.dispose()


async def _check_race(url: str, outputs: list[tuple[str, str]]) -> None:
    # One migrated the empty database; the other, once it had the lock, found it done.
    head = head_revision()
    said = sorted(stdout.split(":", 1)[1].split("(")[0].strip() for stdout, _ in outputs)
    assert said == sorted([f"empty -> {head}", f"{head} -> {head}"]), said
    db = Database(url)
    try:
        assert await db.current_revision() == head
        await db.check_schema()
    finally:
        await db.dispose()
