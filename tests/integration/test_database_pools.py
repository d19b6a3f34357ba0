"""The PostgreSQL connection budget of one process comes from the settings: units of work never
use more than ``database_pool_size + database_pool_overflow`` connections at once, single reads
never more than ``database_read_pool_size``."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Boolean, Integer, text

from clarion.config import Settings
from clarion.store import db
from clarion.store.db import Database

pytestmark = pytest.mark.postgres

# The backend a statement ran on, after holding it long enough for the others to queue.
SLOW_WHO = text("SELECT pg_backend_pid() AS pid, pg_sleep(0.1) IS NULL AS slept").columns(
    pid=Integer, slept=Boolean
)


def test_pool_sizes_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("CLARION_DATABASE_POOL_OVERFLOW", "0")
    monkeypatch.setenv("CLARION_DATABASE_READ_POOL_SIZE", "2")
    settings = Settings()
    assert (
        settings.database_pool_size,
        settings.database_pool_overflow,
        settings.database_read_pool_size,
    ) == (3, 0, 2)
    with pytest.raises(ValueError, match="database_pool_size"):
        Settings(database_pool_size=0)


def test_the_settings_defaults_are_the_databases() -> None:
    """A Database made without settings (tests, tools) gets the pools a default process has."""
    defaults = Settings.model_fields
    assert defaults["database_pool_size"].default == db.POOL_SIZE
    assert defaults["database_pool_overflow"].default == db.POOL_OVERFLOW
    assert defaults["database_read_pool_size"].default == db.READ_POOL_SIZE


async def test_a_process_stays_within_its_pools(postgres_url: str) -> None:
    settings = Settings(
        database_url=postgres_url,
        database_pool_size=2,
        database_pool_overflow=0,
        database_read_pool_size=1,
    )
    database = Database.for_settings(settings)
    try:

        async def unit_of_work() -> int:
            async with database.sessions() as session:
                return int((await session.execute(SLOW_WHO)).one().pid)

        async def single_read() -> int:
            return int((await database.read(SLOW_WHO))[0].pid)

        in_units = await asyncio.gather(*(unit_of_work() for _ in range(6)))
        in_reads = await asyncio.gather(*(single_read() for _ in range(4)))
    finally:
        await database.dispose()
    # Six at once on two connections, four reads at once on one.
    assert len(set(in_units)) == 2
    assert len(set(in_reads)) == 1
    assert not set(in_reads) & set(in_units)  # the reader has its own connections
