"""Migrations: an empty database goes up to head and back down, and head matches the models."""

from __future__ import annotations

import os
import secrets

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from clarion.core.campaigns import Campaigns
from clarion.providers.base import Notification
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


async def test_campaign_counters_are_filled_from_the_ledger_on_upgrade(
    empty_database: Database,
) -> None:
    db = empty_database
    await db.upgrade("0005")
    statements = [
        "INSERT INTO applications (id, app_id, created_at) "
        "VALUES (1, 'app', '2026-11-30 12:00:00')",
        "INSERT INTO push_messages (id, application_id, user_id, personal, notification, "
        "created_at) VALUES (7, 1, 'campaign', false, '{}', '2026-11-30 12:00:00')",
        "INSERT INTO campaigns (id, application_id, notification, sent, message_id, planned, "
        "devices_total, created_at) VALUES (3, 1, '{}', true, 7, true, 5, '2026-11-30 12:00:00')",
        "INSERT INTO campaigns (id, application_id, notification, sent, planned, "
        "devices_total, created_at) VALUES (4, 1, '{}', false, false, 0, '2026-11-30 12:00:00')",
    ]
    ledger = text(
        "INSERT INTO deliveries (message_id, device_id, platform, token, status, attempts, "
        "updated_at) VALUES (7, :device, 'apns', :token, :status, 1, '2026-11-30 12:00:00')"
    )
    async with db.engine.begin() as conn:
        for statement in statements:
            await conn.exec_driver_sql(statement)
        for device, status in enumerate(["sent", "sent", "failed", "pending", "sent"]):
            await conn.execute(ledger, {"device": device, "token": f"t{device}", "status": status})
    await db.upgrade()
    async with db.engine.connect() as conn:
        rows = await conn.exec_driver_sql(
            "SELECT id, devices_sent, devices_failed FROM campaigns ORDER BY id"
        )
        assert [tuple(r) for r in rows] == [(3, 3, 1), (4, 0, 0)]


async def test_campaign_ids_continue_after_the_existing_campaigns_on_upgrade(
    empty_database: Database,
) -> None:
    """On SQLite the counter of 0007 starts past the campaigns already there; a campaign
    created after the upgrade (through the service, as the API does) gets a new id."""
    db = empty_database
    await db.upgrade("0006")
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO applications (id, app_id, created_at) "
            "VALUES (1, 'app', '2026-11-30 12:00:00')"
        )
        await conn.exec_driver_sql(
            "INSERT INTO campaigns (id, application_id, notification, sent, planned, "
            "devices_total, created_at) VALUES (41, 1, '{}', false, false, 0, "
            "'2026-11-30 12:00:00')"
        )
        if db.dialect == "postgresql":  # as if made through the sequence
            await conn.exec_driver_sql("SELECT setval('campaigns_id_seq', 41)")
    await db.upgrade()
    campaigns = Campaigns(db, messages=None)  # type: ignore[arg-type]
    assert await campaigns.create("app", Notification(title="x")) == 42
    assert await campaigns.delete(42)
    assert await campaigns.create("app", Notification(title="x")) == 43


async def test_a_messages_completion_updates_it_on_its_own_page_on_postgresql(
    empty_database: Database,
) -> None:
    """0010: half of each page of push_messages stays free, so the one update a message gets
    (completed_at) is heap-only: no new index entries. Downgraded, the table is back to full
    pages."""
    db = empty_database
    if db.dialect != "postgresql":
        pytest.skip("fillfactor is PostgreSQL's")
    await db.upgrade()

    async def options() -> object:
        async with db.engine.connect() as conn:
            return await conn.scalar(
                text("SELECT reloptions FROM pg_class WHERE oid = 'push_messages'::regclass")
            )

    assert await options() == ["fillfactor=50"]

    async def complete(first: int) -> tuple[int, int]:
        """Insert 2,000 messages, then complete them: how many updates, how many HOT."""
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO push_messages (application_id, user_id, personal, "
                    "notification, created_at) SELECT 1, 'user-' || n, false, "
                    '\'{"title": "Balance", "body": "Your balance is now $745.00"}\', '
                    "now() FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS n"
                ),
                {"first": first, "last": first + 1999},
            )
        counts = (
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
            "WHERE relname = 'push_messages'"
        )
        async with db.engine.begin() as conn:
            # Differences: the view may also hold counts of earlier transactions of this
            # connection that were not yet reported.
            before = (await conn.exec_driver_sql(counts)).one()
            await conn.exec_driver_sql(
                "UPDATE push_messages SET completed_at = now() WHERE completed_at IS NULL"
            )
            after = (await conn.exec_driver_sql(counts)).one()
        return int(after[0] - before[0]), int(after[1] - before[1])

    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO applications (id, app_id, created_at) VALUES (1, 'app', now())"
        )
    updated, hot = await complete(1)
    assert updated == 2000 and hot >= 1990, (updated, hot)
    await db.downgrade("0009")
    assert await options() is None
    updated, hot = await complete(2001)  # full pages: the new versions go elsewhere
    assert updated == 2000 and hot < 200, (updated, hot)
