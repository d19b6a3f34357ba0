"""Migrations: an empty database goes up to head and back down, and head matches the models."""

from __future__ import annotations

import os
import secrets

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from clarion.store.db import Database, SchemaOutOfDate, head_revision
from clarion.store.models import Base
from tests.conftest import _pg_admin, _pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
        yield db
        await db.dispose()
        return
    request.getfixturevalue("postgres_url")  # skips or fails as the PostgreSQL policy says
    name = f"clarion_mig_{os.getpid()}_{secrets.token_hex(4)}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    db = Database(_pg_url(name))
    try:
        yield db
    finally:
        await db.dispose()
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


async def test_empty_database_upgrades_to_head_and_back_down(empty_database: Database) -> None:
    db = empty_database
    assert await db.current_revision() is None
    with pytest.raises(SchemaOutOfDate, match="clarion migrate"):
        await db.check_schema()
    await db.upgrade()
    assert await db.current_revision() == head_revision()
    await db.check_schema()
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(_tables)
    assert {"applications", "credentials", "devices", "activations"} <= tables
    await db.downgrade("base")
    assert await db.current_revision() is None
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_tables) == {"alembic_version"}


async def test_head_schema_matches_the_models(empty_database: Database) -> None:
    db = empty_database
    await db.upgrade()

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
