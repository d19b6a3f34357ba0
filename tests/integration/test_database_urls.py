"""PostgreSQL URLs with the parameters a provider's console gives (sslmode, connect_timeout,
application_name, asyncpg's ssl), on the real server: the engine and the reader's own asyncpg
pool both connect with them, and every command takes them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import Boolean, Integer, String, text

from clarion.store.db import Database
from tests.conftest import ADMIN_DSN, run_blocking

pytestmark = pytest.mark.postgres

# Which backend a statement ran on, its application_name, and whether it is encrypted.
WHO = text(
    "SELECT pg_backend_pid() AS pid, current_setting('application_name') AS name, "
    "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls"
).columns(pid=Integer, name=String, tls=Boolean)


async def _ssl_setting() -> str:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        return str(await conn.fetchval("SHOW ssl"))
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def server_has_tls(postgres_url: str) -> bool:
    """The local server may have TLS off: then prefer falls back and require fails."""
    return run_blocking(_ssl_setting()) == "on"


@pytest.mark.parametrize(
    "query",
    ["sslmode=disable", "sslmode=allow", "sslmode=prefer", "ssl=prefer", "connect_timeout=5"],
)
async def test_engine_and_reader_pool_connect_with_the_parameters(
    postgres_url: str, server_has_tls: bool, query: str
) -> None:
    db = Database(f"{postgres_url}?{query}")
    try:
        await db.check_schema()  # on the engine
        async with db.engine.connect() as conn:
            on_engine = (await conn.execute(WHO)).one()
        on_reader = (await db.read(WHO))[0]  # on the reader's asyncpg pool
    finally:
        await db.dispose()
    # prefer (asyncpg's default too) and allow fall back to plain on a server without TLS.
    encrypted = server_has_tls and "disable" not in query
    assert on_engine.tls is encrypted and on_reader.tls is encrypted
    assert on_engine.pid != on_reader.pid


async def test_application_name_names_the_engines_and_the_readers_connections(
    postgres_url: str,
) -> None:
    name = f"clarion-{secrets.token_hex(4)}"
    db = Database(f"{postgres_url}?application_name={name}&connect_timeout=5&sslmode=prefer")
    try:
        async with db.engine.connect() as conn:
            on_engine = (await conn.execute(WHO)).one()
        on_reader = (await db.read(WHO))[0]
        assert on_engine.name == on_reader.name == name
        admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            seen = await admin.fetch(
                "SELECT pid, application_name FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                [on_engine.pid, on_reader.pid],
            )
        finally:
            await admin.close()
    finally:
        await db.dispose()
    assert sorted((row["pid"], row["application_name"]) for row in seen) == sorted(
        [(on_engine.pid, name), (on_reader.pid, name)]
    )


async def test_require_on_a_server_without_tls_is_a_connection_error_not_plain_text(
    postgres_url: str, server_has_tls: bool
) -> None:
    db = Database(f"{postgres_url}?sslmode=require")
    try:
        if server_has_tls:
            on_reader = (await db.read(WHO))[0]
            assert on_reader.tls is True
            return
        with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
            await db.check_schema()
        with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
            await db.read(WHO)
    finally:
        await db.dispose()


def start_clarion(tmp_path: Path, database_url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        CLARION_DATABASE_URL=database_url,
        CLARION_SECRET_KEY="database-url-test-secret-key",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "clarion", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_commands_take_the_parameters_and_name_what_they_cannot_use(
    postgres_url: str, server_has_tls: bool, tmp_path: Path
) -> None:
    plain = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    url = f"{plain}?sslmode=prefer&connect_timeout=5&application_name=clarion-cli"
    runs = {  # at once: each command takes seconds to start
        "migrate": start_clarion(tmp_path, url, "migrate"),
        "list": start_clarion(tmp_path, url, "app", "list"),
        "unknown": start_clarion(tmp_path, f"{plain}?sslmod=require", "app", "list"),
        "require": start_clarion(tmp_path, f"{plain}?sslmode=require", "migrate"),
    }
    outputs = {name: run.communicate(timeout=120) for name, run in runs.items()}
    status = {name: run.returncode for name, run in runs.items()}
    stderr = {name: err for name, (_out, err) in outputs.items()}
    for name in runs:
        assert "Traceback" not in stderr[name] and "╭" not in stderr[name], stderr[name]

    assert status["migrate"] == 0 and status["list"] == 0, stderr
    assert status["unknown"] == 2
    assert "unknown database URL parameter 'sslmod'" in stderr["unknown"]
    if server_has_tls:
        assert status["require"] == 0, stderr["require"]
    else:
        assert status["require"] == 1
        assert "rejected SSL upgrade" in stderr["require"]
        assert len(stderr["require"].splitlines()) == 1
