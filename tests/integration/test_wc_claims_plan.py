"""PostgreSQL finds a pushed client by both keys of its unique index, even in a devices table
that was never analyzed (autovacuum off, or the minute after a bulk registration)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from clarion.core import wcclaims
from clarion.store.models import utcnow

CLIENTS = 5_000


async def test_a_claim_looks_each_client_up_by_its_index_without_statistics(
    postgres_url: str,
) -> None:
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    compiled = wcclaims._PG_BATCH.compile(dialect=asyncpg_dialect())
    names = list(compiled.positiontup or [])
    params = {
        "ords": [0, 1],
        "tenants": ["tenant-a", "tenant-a"],
        "clients": ["client-17", "client-4000"],
        "messages": ["m-1", "m-2"],
        "oks": [True, True],
        "now": utcnow(),
    }
    conn = await asyncpg.connect(dsn)
    writes = conn.transaction()  # rolled back: the database is shared with other tests
    await writes.start()
    try:
        tenant_pk = await conn.fetchval(
            "INSERT INTO applications (app_id, created_at) VALUES ('tenant-a', now()) RETURNING id"
        )
        await conn.execute(
            "INSERT INTO devices (application_id, platform, token, active, registered_at,"
            " client_id, always_raw) SELECT $1, 'apns', md5(i::text) || md5((i + 1)::text),"
            " true, now(), 'client-' || i, false FROM generate_series(1, $2::int) AS i",
            tenant_pk,
            CLIENTS,
        )
        analyzed = await conn.fetchval(
            "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL"
            " FROM pg_stat_user_tables WHERE relname = 'devices'"
        )
        assert not analyzed
        args = [params[name] for name in names]
        lines = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + str(compiled), *args)
        plan = "\n".join(line[0] for line in lines)
        steps = plan.splitlines()
        [scan] = [n for n, step in enumerate(steps) if "on devices" in step]
        assert "Index Cond" in steps[scan + 1] and "client_id" in steps[scan + 1], plan
        assert "Rows Removed" not in plan, plan
        assert "actual rows=1 loops=2" in steps[scan], plan
    finally:
        await writes.rollback()
        await conn.close()
