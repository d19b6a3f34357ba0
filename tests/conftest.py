"""Shared fixtures: a real database per test, on SQLite and on PostgreSQL.

SQLite: a new file per test, a copy of one this worker migrated from empty at its start.
PostgreSQL: one fresh database per test run (created here, dropped at the end), emptied between
tests. It is skipped only when no server answers; with CLARION_TEST_REQUIRE_POSTGRES=1 (CI sets
it when PostgreSQL is reachable) an unreachable server fails the run instead.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from starlette.datastructures import State

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


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite database migrated from empty to head, once per worker process: copying it
    costs a test a few ms, migrating a new file 100 to 200 ms."""
    path = tmp_path_factory.mktemp("template") / "clarion.db"

    async def migrate() -> None:
        from clarion.store.db import Database

        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.upgrade()
        await db.dispose()

    run_blocking(migrate())
    assert not path.with_name("clarion.db-wal").exists()  # all of it is in the one file
    return path


def _start_from_template(database_url: str, request: pytest.FixtureRequest) -> None:
    prefix = "sqlite+aiosqlite:///"
    if database_url.startswith(prefix) and not Path(database_url[len(prefix) :]).exists():
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, database_url[len(prefix) :])


@pytest.fixture
async def services(
    database_url: str, settings_overrides: dict[str, Any], request: pytest.FixtureRequest
) -> AsyncIterator[Services]:
    _start_from_template(database_url, request)
    svc = await open_services(make_settings(database_url, **settings_overrides))
    if svc.db.dialect == "postgresql":
        async with svc.db.transaction() as session:
            tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
            await session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    try:
        yield svc
    finally:
        await svc.close()


# One application per worker process and app-shaping settings: create_app costs 150 to 250 ms
# (FastAPI analyses every route). An application keeps no state but ``app.state``, which each
# test gets new, holding its own services (the WalletConnect rate limiter lives there too).
_APPS: dict[tuple[bool, int], FastAPI] = {}


def app_for(services: Services, settings: Settings | None = None) -> FastAPI:
    """The application for these services (``settings``: other settings than theirs)."""
    settings = settings or services.settings
    key = (settings.hot_routes, settings.max_body_bytes)
    app = _APPS.get(key)
    if app is None:
        app = _APPS[key] = create_app(settings, services=services)
    app.state = State()
    app.state.services = services
    return app


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = app_for(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as c:
        yield c


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Any]:
    """A migrated SQLite file (a ``Database``)."""
    from clarion.store.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await db.upgrade()
    try:
        yield db
    finally:
        await db.dispose()
