"""On PostgreSQL the hot lookups of devices are index lookups even in a devices table that was
never analyzed (autovacuum off, or the minute after a bulk import): the planner has no
statistics to mislead it into scanning every device of an application."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Executable
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from clarion.core import fanout, ledger, messages, sender, wcclaims
from clarion.core.services import open_services
from clarion.core.walletconnect import PushType, Registration
from clarion.store.models import utcnow
from tests.conftest import _pg_admin, _pg_url, make_settings

DEVICES = 5_000


TABLES = (
    "applications",
    "credentials",
    "devices",
    "wc_messages",
    "deliveries",
    "push_messages",
)


@pytest.fixture
async def unanalyzed(postgres_url: str) -> AsyncIterator[tuple[asyncpg.Connection, int]]:
    """A connection whose open transaction sees fresh copies of the tables (a schema of its
    own, first on its search path; same columns and indexes, so never analyzed, whatever
    autovacuum did to the shared ones), holding one application with DEVICES devices, each
    with a user and a WalletConnect client id. Rolled back afterwards, schema and all."""
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    writes = conn.transaction()
    await writes.start()
    schema = f"plans_{uuid.uuid4().hex[:12]}"
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        for table in TABLES:
            await conn.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
        await conn.execute(f"SET LOCAL search_path = {schema}")
        app_pk = await conn.fetchval(
            "INSERT INTO applications (app_id, created_at) VALUES ('plans', now()) RETURNING id"
        )
        await conn.execute(
            "INSERT INTO devices (application_id, platform, token, active, registered_at,"
            " user_id, client_id, always_raw) SELECT $1, 'apns',"
            " md5(i::text) || md5((i + 1)::text), true, now(), 'user-' || i, 'client-' || i,"
            " false FROM generate_series(1, $2::int) AS i",
            app_pk,
            DEVICES,
        )
        yield conn, app_pk
    finally:
        await writes.rollback()
        await conn.close()


async def explain(conn: asyncpg.Connection, statement: Executable, params: dict[str, Any]) -> str:
    compiled = statement.compile(
        dialect=asyncpg_dialect(), compile_kwargs={"render_postcompile": True}
    )
    args = [params[name] for name in compiled.positiontup or []]
    lines = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + str(compiled), *args)
    return "\n".join(line[0] for line in lines)


def devices_scan(plan: str) -> tuple[str, str]:
    """The plan's one step that reads devices, and its index condition."""
    steps = plan.splitlines()
    [at] = [n for n, step in enumerate(steps) if "on devices" in step]
    return steps[at], steps[at + 1]


async def test_a_claim_looks_each_client_up_by_its_index(
    unanalyzed: tuple[asyncpg.Connection, int],
) -> None:
    conn, _ = unanalyzed
    plan = await explain(
        conn,
        wcclaims._PG_BATCH,
        {
            "ords": [0, 1],
            "tenants": ["plans", "plans"],
            "clients": ["client-17", "client-4000"],
            "messages": ["m-1", "m-2"],
            "oks": [True, True],
            "now": utcnow(),
        },
    )
    scan, condition = devices_scan(plan)
    assert "Index Cond" in condition and "client_id" in condition, plan
    assert "Rows Removed" not in plan, plan
    assert "actual rows=1 loops=2" in scan, plan


USERS = [f"user-{n * 37 % DEVICES + 1}" for n in range(300)] + ["nobody"]


@pytest.mark.parametrize("lookup", ["lookup", "devices_of", "count_devices_of"])
async def test_sends_and_campaigns_look_each_user_up_by_its_index(
    unanalyzed: tuple[asyncpg.Connection, int], lookup: str
) -> None:
    """A send to many users, a job, and a campaign page (its devices and their count)."""
    conn, app_pk = unanalyzed
    if lookup == "lookup":
        plan = await explain(conn, sender._PG_LOOKUP, {"app_id": "plans", "users": USERS})
    else:
        statement = sender.PG_DEVICES_OF if lookup == "devices_of" else sender.PG_COUNT_DEVICES_OF
        plan = await explain(conn, statement, {"app_pk": app_pk, "users": USERS})
    scan, condition = devices_scan(plan)
    assert "user_id_application_id" in scan, plan  # the (user_id, application_id) index
    assert "user_id" in condition and "application_id" in condition, plan
    assert f"loops={len(USERS)}" in scan, plan  # one index probe per user
    assert "Rows Removed" not in plan, plan


async def test_a_one_user_send_looks_the_user_up_by_its_index(
    unanalyzed: tuple[asyncpg.Connection, int],
) -> None:
    """One user goes through the IN-list statement (``lookup`` keeps it for that case): an
    equality, which the planner takes to the index without statistics too."""
    conn, _ = unanalyzed
    statement = sender._LOOKUP.params(app_id="plans", users=["user-77"])
    plan = await explain(conn, statement, {"app_id": "plans", "users_1": "user-77"})
    scan, condition = devices_scan(plan)
    assert "user_id_application_id" in scan, plan  # the (user_id, application_id) index
    assert "user_id" in condition and "application_id" in condition, plan
    assert "actual rows=1 loops=1" in scan, plan


async def test_a_campaign_page_finds_shared_tokens_by_the_token_index(
    unanalyzed: tuple[asyncpg.Connection, int],
) -> None:
    conn, app_pk = unanalyzed
    tokens = [
        row[0]
        for row in await conn.fetch(
            "SELECT token FROM devices WHERE application_id = $1 ORDER BY id LIMIT 200", app_pk
        )
    ]
    # One token registered a second time (another user of the app): the only shared one.
    await conn.execute(
        "INSERT INTO devices (application_id, platform, token, active, registered_at, user_id,"
        " always_raw) VALUES ($1, 'fcm', $2, true, now(), 'second-user', false)",
        app_pk,
        tokens[5],
    )
    params = {"app_pk": app_pk, "tokens": tokens}
    plan = await explain(conn, fanout._PG_SHARED_TOKENS, params)
    scan, condition = devices_scan(plan)
    assert "application_id_token" in scan, plan  # the (application_id, token) index
    assert "application_id" in condition and "token" in condition, plan
    assert f"loops={len(tokens)}" in scan, plan
    compiled = fanout._PG_SHARED_TOKENS.compile(dialect=asyncpg_dialect())
    shared = await conn.fetch(str(compiled), *(params[n] for n in compiled.positiontup or []))
    assert [row["token"] for row in shared] == [tokens[5]]


async def test_a_burst_of_registrations_leaves_devices_analyzed_and_claims_on_their_index(
    postgres_url: str,  # skips the test where PostgreSQL is not reachable
) -> None:
    # Without statistics the claim's lookup was costed the same through the tenant's token
    # index (reading ~220 clients a push at 3,000) as through its (tenant, client) index:
    # the first registrations of a process analyze a never-analyzed devices table.
    name = f"clarion_plans_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    try:
        services = await open_services(make_settings(url))
        try:
            wc = services.walletconnect
            tenant = services.tenants.default_tenant
            await asyncio.gather(
                *(
                    wc.register(Registration(tenant, f"client-{n}", PushType.NOOP, f"{n:064x}"))
                    for n in range(300)
                )
            )
            await asyncio.gather(
                *(
                    wc.register(Registration(tenant, f"later-{n}", PushType.NOOP, f"{n:063x}f"))
                    for n in range(2_000)
                )
            )
        finally:
            await services.close()
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            analyzed = await conn.fetchval(
                "SELECT reltuples >= 0 FROM pg_class WHERE oid = 'devices'::regclass"
            )
            plan = await explain(
                conn,
                wcclaims._PG_BATCH,
                {
                    "ords": [0, 1],
                    "tenants": [tenant, tenant],
                    "clients": ["later-1500", "client-17"],
                    "messages": ["m-1", "m-2"],
                    "oks": [True, True],
                    "now": utcnow(),
                },
            )
        finally:
            await conn.close()
        assert analyzed
        _, condition = devices_scan(plan)
        assert "client_id" in condition and "Rows Removed" not in plan, plan
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_jobs_ledger_read_probes_each_message_by_its_index(
    unanalyzed: tuple[asyncpg.Connection, int],
) -> None:
    # As message_id IN (...), 500 messages were planned as a scan of the whole ledger.
    conn, _ = unanalyzed
    await conn.execute(
        "INSERT INTO deliveries (message_id, device_id, platform, token, status, attempts,"
        " updated_at) SELECT m, d, 'apns', md5(m::text), 'sent', 1, now()"
        " FROM generate_series(1, 8000) AS m, generate_series(1, 10) AS d"
    )
    plan = await explain(conn, ledger._PG_READ, {"ids": [*range(4000, 4500), 99_999]})
    assert "Seq Scan on deliveries" not in plan, plan
    assert "Index" in plan and "rows=10 loops=501" in plan, plan


async def test_a_jobs_read_of_its_messages_probes_each_message_by_its_index(
    unanalyzed: tuple[asyncpg.Connection, int],
) -> None:
    # As id IN (...) joined to the applications, every job read the whole table of messages
    # (bench/send.py: 187 scans of up to 100,000 rows for 100,000 messages).
    conn, app_pk = unanalyzed
    await conn.execute(
        "INSERT INTO push_messages (application_id, user_id, personal, notification,"
        " created_at) SELECT $1, 'user-' || m, false, '{\"title\": \"t\"}', now()"
        " FROM generate_series(1, 20000) AS m",
        app_pk,
    )
    first = await conn.fetchval("SELECT min(id) FROM push_messages")
    ids = [*range(first + 4000, first + 4500), first + 99_999]
    await conn.execute("UPDATE push_messages SET completed_at = now() WHERE id = $1", first + 4001)
    plan = await explain(conn, messages._PG_PLAN_MESSAGES, {"ids": ids})
    assert "Seq Scan on push_messages" not in plan, plan
    assert "Index" in plan and "loops=501" in plan, plan
    compiled = messages._PG_PLAN_MESSAGES.compile(dialect=asyncpg_dialect())
    found = await conn.fetch(str(compiled), ids)
    # Each stored message once, with its application's id; the completed one and the one
    # that does not exist are left out.
    assert sorted(row["id"] for row in found) == sorted(set(ids[:500]) - {first + 4001})
    assert {row["app_id"] for row in found} == {"plans"}
    assert {row["notification"] for row in found} == {'{"title": "t"}'}


async def test_a_campaign_page_finds_its_ledger_rows_by_one_probe_per_device(
    unanalyzed: tuple[asyncpg.Connection, int],
) -> None:
    # The statement is planned once while the ledger is empty and its plan kept (as asyncpg's
    # cached statements are, after a few runs), then run on a ledger of 20,000 rows. With
    # (message_id, status) indexed too, that plan read every row of the message, each tested
    # against the page's devices: 4.4 s a page at 200,000 rows (bench/campaign.py).
    conn, _ = unanalyzed
    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    statements = {"recorded": fanout._PG_RECORDED, "due": fanout._PG_PENDING_DUE}
    compiled = {name: s.compile(dialect=asyncpg_dialect()) for name, s in statements.items()}
    for name, sql in compiled.items():
        await conn.execute(f"PREPARE {name} AS {sql}")
    page = "'{" + ",".join(str(n) for n in range(19_000, 21_000)) + "}'"
    values = {"ids": page, "message_id": "7", "due": "now()"}

    async def plan(name: str) -> str:
        args = ", ".join(values[key] for key in compiled[name].positiontup or ())
        lines = await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE {name}({args})")
        return "\n".join(line[0] for line in lines)

    for name in statements:
        await plan(name)  # planned on the empty ledger
    await conn.execute(
        "INSERT INTO deliveries (message_id, device_id, platform, token, status, attempts,"
        " updated_at) SELECT 7, d, 'apns', md5(d::text), 'sent', 1, now()"
        " FROM generate_series(1, 20000) AS d"
    )
    for name in statements:
        found = await plan(name)
        assert "Seq Scan on deliveries" not in found and "Bitmap" not in found, found
        assert "loops=2000" in found, found
        assert "Index Cond: ((message_id = $2) AND (device_id = x.id))" in found, found
