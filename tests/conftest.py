"""Shared fixtures: a real database per test, on SQLite and on PostgreSQL.

PostgreSQL: one fresh database per test run (created here, dropped at the end), emptied between
tests. It is skipped only when no server answers; with CLARION_TEST_REQUIRE_POSTGRES=1 (CI sets
it when PostgreSQL is reachable) an unreachable server fails the run instead.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text

from clarion.app import create_app
from clarion.config import Settings
from clarion.core.services import Services, open_services
from clarion.store.models import Base

ADMIN_DSN = os.environ.get(
    "CLARION_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("CLARION_TEST_REQUIRE_POSTGRES") == "1"
T = TypeVar("T")
TEST_SECRET_KEY = "test-secret-key-0123456789abcdef"


async def _pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is running."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _pg_url(name: str) -> str:
    rest = ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{rest}/{name}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated to head; dropped afterwards."""
    name = f"clarion_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        run_blocking(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError) as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required but unreachable at {ADMIN_DSN}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {ADMIN_DSN}: {exc}")
    url = _pg_url(name)

    async def migrate() -> None:
        from clarion.store.db import Database

        db = Database(url)
        await db.upgrade()
        await db.dispose()

    run_blocking(migrate())
    try:
        yield url
    finally:
        run_blocking(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'clarion.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": TEST_SECRET_KEY,
        "auto_migrate": True,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change settings for the services and the client."""
    return {}


@pytest.fixture
async def services(
    database_url: str, settings_overrides: dict[str, Any]
) -> AsyncIterator[Services]:
    svc = await open_services(make_settings(database_url, **settings_overrides))
    if svc.db.dialect == "postgresql":
        async with svc.db.transaction() as session:
            tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
            await session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    try:
        yield svc
    finally:
        await svc.close()


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as c:
        yield c
