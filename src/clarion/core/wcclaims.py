"""The hot path of a WalletConnect push: read the client and claim the message id at once.

A claim inserts (tenant, client, message id) into ``wc_messages``; the primary key makes a
second claim of the same triple, from any process, insert nothing. The claim is made only when
the push may be sent: the client exists, its tenant's credentials for the platform stand, and
its blob is usable (opaque for ``always_raw`` clients, else as the caller checked it).

Claims are batched: concurrent pushes queue, and a writer task claims everything queued in one
transaction (PostgreSQL: one statement; SQLite: one read and one multi-row insert), so a commit
(and its fsync) is shared by the whole batch instead of paid per push. SQLite has one writer
per process, since it has a single writer lock anyway and queueing in the event loop is much
cheaper than its busy-wait; PostgreSQL has a few, so batches overlap their round trips.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store.bulk import bind, sqlite_values
from clarion.store.db import Database
from clarion.store.models import Application, UTCDateTime, WcMessage, utcnow

MAX_BATCH = 256
PG_WRITERS = 8


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """What the push needs of the client, and whether this call claimed the message id."""

    device_id: int
    token: str
    platform: str
    environment: str | None
    always_raw: bool
    rejected_reason: str | None
    credentials: tuple[int, str | None] | None  # (version, APNs environment) when configured
    claimed: bool


@dataclass(slots=True)
class _Request:
    tenant_id: str
    client_id: str
    message_id: str
    blob_ok: bool
    done: asyncio.Future[ClaimRow | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.client_id, self.message_id)


_CLIENT_COLUMNS = """
    d.application_id, d.client_id, d.id AS device_id, d.token, d.platform, d.environment,
    d.always_raw, c.rejected_reason, c.version AS credentials_version,
    c.environment AS credentials_environment
"""
_CREDENTIALS_JOIN = """
    LEFT JOIN credentials AS c ON c.application_id = d.application_id AND c.platform = d.platform
"""
_CLIENT_JOINS = (
    "JOIN devices AS d ON d.application_id = a.id AND d.client_id = r.client" + _CREDENTIALS_JOIN
)
# PostgreSQL: the client by a lookup of both keys of its unique index, whatever the table's
# statistics say. Joined plainly, a devices table never analyzed (autovacuum off, or in the
# minute after a bulk registration) was planned as a scan of every client of the tenant,
# filtered: 5.7 ms against 0.19 ms for two pushes at 10,000 clients, and a relay run at half
# its rate. A LATERAL subquery with a LIMIT is planned on its own, as that index lookup.
_PG_CLIENT_JOINS = (
    "JOIN LATERAL (SELECT * FROM devices AS d"  # noqa: S608 - constant SQL
    " WHERE d.application_id = a.id AND d.client_id = r.client LIMIT 1) AS d ON true"
    + _CREDENTIALS_JOIN
)

_PG_BATCH = text(
    "WITH r AS ("  # noqa: S608 - constant SQL; every value is a bound parameter
    " SELECT * FROM unnest(CAST(:ords AS integer[]), CAST(:tenants AS text[]),"
    " CAST(:clients AS text[]), CAST(:messages AS text[]), CAST(:oks AS boolean[]))"
    " AS r(ord, tenant, client, message, blob_ok)"
    "), found AS (SELECT r.ord, r.message, r.blob_ok, "
    + _CLIENT_COLUMNS
    + " FROM r JOIN applications AS a ON a.app_id = r.tenant "
    + _PG_CLIENT_JOINS
    + """),
    claimed AS (
        INSERT INTO wc_messages (application_id, client_id, message_id, created_at)
        SELECT application_id, client_id, message, :now FROM found
        WHERE rejected_reason IS NULL AND (always_raw OR blob_ok)
        ON CONFLICT DO NOTHING
        RETURNING application_id, client_id, message_id
    )
    SELECT f.ord, f.device_id, f.token, f.platform, f.environment, f.always_raw,
           f.rejected_reason, f.credentials_version, f.credentials_environment,
           EXISTS (SELECT 1 FROM claimed AS k WHERE k.application_id = f.application_id
                   AND k.client_id = f.client_id AND k.message_id = f.message) AS claimed
    FROM found AS f
    """
).bindparams(bindparam("now", type_=UTCDateTime()))


# The two SQLite statements are built for a batch size from constants and indices only:
# every value is a bound parameter. They run on the driver (``exec_driver_sql``, positional
# parameters): through SQLAlchemy's execution of ``text()``, building the parameters of a batch
# and processing its rows had taken about a tenth of the event loop's time in a relay run
# (py-spy --gil, bench/relay.py, 2026-12-02).


@functools.lru_cache(maxsize=MAX_BATCH)
def _sqlite_select(count: int) -> str:
    """Read ``count`` (tenant, client) pairs at once."""
    pairs = ", ".join(f"(?, ?, {i})" for i in range(count))
    source = "SELECT column1 AS tenant, column2 AS client, column3 AS ord FROM (VALUES "
    sql = f"SELECT r.ord, {_CLIENT_COLUMNS} FROM ({source}{pairs})) AS r"  # noqa: S608
    return f"{sql} JOIN applications AS a ON a.app_id = r.tenant {_CLIENT_JOINS}"


@functools.lru_cache(maxsize=MAX_BATCH)
def _sqlite_insert(count: int) -> str:
    """Claim ``count`` triples at once; the answer names those this statement inserted."""
    return sqlite_values(
        "wc_messages",
        ("application_id", "client_id", "message_id", "created_at"),
        count,
        " ON CONFLICT DO NOTHING RETURNING application_id, client_id, message_id",
    )


_created_at = cast(Table, WcMessage.__table__).c.created_at


class Claims:
    """Claims message ids in one database, in batches."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._sqlite = db.dialect == "sqlite"
        self._writers_allowed = 1 if self._sqlite else PG_WRITERS
        self._sqlite_lock = asyncio.Lock()
        self._writers = 0
        self._queue: list[_Request] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def sqlite_writer(self) -> AbstractAsyncContextManager[Any]:
        """On SQLite, the turn to write for this process (shared with registrations): waiting
        in the event loop costs far less than SQLite's busy-wait on its locked database."""
        return self._sqlite_lock if self._sqlite else nullcontext()

    async def claim(
        self, tenant_id: str, client_id: str, message_id: str, *, blob_ok: bool
    ) -> ClaimRow | None:
        """The client with the claim's result, or None if the tenant has no such client."""
        request = _Request(tenant_id, client_id, message_id, blob_ok)
        self._queue.append(request)
        if self._writers < self._writers_allowed:
            self._writers += 1
            task = asyncio.get_running_loop().create_task(self._write())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await request.done

    async def accepted(self, tenant_id: str, client_id: str, message_id: str) -> bool:
        """True if the message id was already claimed for the client (a push not claimed now
        because its blob is unusable may be the relay's resend of one that was sent)."""
        rows = await self._db.read(
            _ACCEPTED, {"tenant": tenant_id, "client": client_id, "message": message_id}
        )
        return bool(rows)

    async def _write(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    rows = await self._run(batch)
                except Exception as exc:  # the callers decide: each retries or fails
                    for request in batch:
                        if not request.done.done():
                            request.done.set_exception(exc)
                    continue
                for request, row in zip(batch, rows, strict=True):
                    if not request.done.done():
                        request.done.set_result(row)
        finally:
            self._writers -= 1

    async def _run(self, batch: list[_Request]) -> list[ClaimRow | None]:
        # The same triple twice in one batch: claimed at most once, by its first request.
        first: dict[tuple[str, str, str], int] = {}
        unique: list[_Request] = []
        for request in batch:
            if request.key not in first:
                first[request.key] = len(unique)
                unique.append(request)
        now = utcnow()
        if self._sqlite:
            async with self.sqlite_writer(), self._db.engine.begin() as conn:
                rows = await self._sqlite_batch(conn, unique, now)
        else:
            # One statement is its own transaction: no BEGIN / COMMIT round trips.
            async with self._db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                rows = await self._pg_batch(conn, unique, now)
        results: list[ClaimRow | None] = []
        seen: set[tuple[str, str, str]] = set()
        for request in batch:
            row = rows[first[request.key]]
            if row is not None and request.key in seen:
                row = replace(row, claimed=False)
            seen.add(request.key)
            results.append(row)
        return results

    @staticmethod
    async def _pg_batch(
        conn: AsyncConnection, batch: Sequence[_Request], now: datetime
    ) -> list[ClaimRow | None]:
        params = {
            "ords": list(range(len(batch))),
            "tenants": [r.tenant_id for r in batch],
            "clients": [r.client_id for r in batch],
            "messages": [r.message_id for r in batch],
            "oks": [r.blob_ok for r in batch],
            "now": now,
        }
        rows: list[ClaimRow | None] = [None] * len(batch)
        for ord_, *values in (await conn.execute(_PG_BATCH, params)).all():
            *client, claimed = values
            rows[ord_] = _row(client, bool(claimed))
        return rows

    @staticmethod
    async def _sqlite_batch(
        conn: AsyncConnection, batch: Sequence[_Request], now: datetime
    ) -> list[ClaimRow | None]:
        params: list[Any] = []
        for request in batch:
            params += (request.tenant_id, request.client_id)
        selected = await conn.exec_driver_sql(_sqlite_select(len(batch)), tuple(params))
        found: dict[int, Any] = {row[0]: row[1:] for row in selected}
        wanted: list[tuple[int, int, str]] = []  # (batch index, tenant pk, stored client id)
        for i, request in enumerate(batch):
            if i in found:
                app_pk, stored_id, *_, always_raw, rejected, _version, _env = found[i]
                if rejected is None and (always_raw or request.blob_ok):
                    wanted.append((i, app_pk, stored_id))
        claimed: set[tuple[int, str, str]] = set()
        if wanted:
            stamp = bind(_created_at, conn.dialect)(now)
            values: list[Any] = []
            for i, app_pk, stored_id in wanted:
                values += (app_pk, stored_id, batch[i].message_id, stamp)
            result: Any = await conn.exec_driver_sql(_sqlite_insert(len(wanted)), tuple(values))
            claimed = {(a, c, m) for a, c, m in result}
        rows: list[ClaimRow | None] = []
        for i, request in enumerate(batch):
            if i not in found:
                rows.append(None)
                continue
            app_pk, stored_id, *client = found[i]
            rows.append(_row(client, (app_pk, stored_id, request.message_id) in claimed))
        return rows


_ACCEPTED = (
    select(WcMessage.message_id)
    .join(Application, Application.id == WcMessage.application_id)
    .where(
        Application.app_id == bindparam("tenant"),
        WcMessage.client_id == bindparam("client"),
        WcMessage.message_id == bindparam("message"),
    )
    .limit(1)
)


def _row(client: Sequence[Any], claimed: bool) -> ClaimRow:
    """A ClaimRow from (device id, token, platform, environment, always_raw, rejected reason,
    credentials version, credentials environment)."""
    device_id, token, platform, environment, always_raw, rejected, version, cred_env = client
    credentials = None if version is None else (int(version), cred_env)
    return ClaimRow(
        device_id, token, platform, environment, bool(always_raw), rejected, credentials, claimed
    )
