"""The delivery ledger: one row per (message, device) holding the outcome of its push.

Messages and campaigns both record here, so a job that runs again sends only what the ledger does
not hold yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Dialect, Table, bindparam, column, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.sender import Target
from clarion.delivery.retry import BACKING_OFF
from clarion.providers.base import Outcome, OutcomeKind
from clarion.store.bulk import SQLITE_ROWS, bind, sqlite_values
from clarion.store.db import Database
from clarion.store.models import Delivery

_deliveries = cast(Table, Delivery.__table__)
# A Core executemany: the ORM's bulk update by primary key costs several times more per row.
_SAVE_OUTCOME = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("row_id"))
    .values(
        status=bindparam("status"),
        reason=bindparam("reason"),
        next_attempt_at=bindparam("next_attempt_at"),
        attempts=bindparam("attempts"),
        updated_at=bindparam("updated_at"),
    )
)


def new_row(message_id: int, target: Target, now: datetime) -> dict[str, Any]:
    """A pending row for one device; ``outcome_values`` fills in what the send gave."""
    return {
        "message_id": message_id,
        "device_id": target.device_id,
        "platform": target.platform,
        "environment": target.environment,
        "token": target.token,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": None,
        "reason": None,
        "updated_at": now,
    }


def outcome_values(outcome: Outcome, now: datetime, *, attempts: int) -> dict[str, Any]:
    """The columns an outcome sets: sent, failed with its reason, or pending until a time."""
    if outcome.kind is OutcomeKind.DELIVERED:
        status, reason, next_at = "sent", None, None
    elif outcome.kind is OutcomeKind.RETRY:
        delay = outcome.retry_after if outcome.retry_after is not None else 1.0
        status, reason, next_at = "pending", outcome.reason, now + timedelta(seconds=delay)
        if outcome.reason == BACKING_OFF:
            attempts -= 1  # held back before reaching the provider: not an attempt
    else:
        status, reason, next_at = "failed", outcome.reason or outcome.kind.value, None
    return {
        "status": status,
        "reason": (reason or None) and reason[:255],
        "next_attempt_at": next_at,
        "attempts": attempts,
        "updated_at": now,
    }


# On PostgreSQL one array per column, unnested together: one short statement whatever the
# number of rows, about a third of the CPU of the multi-row VALUES SQLAlchemy builds.
_COLUMNS = (
    "message_id",
    "device_id",
    "platform",
    "environment",
    "token",
    "status",
    "attempts",
    "next_attempt_at",
    "reason",
    "updated_at",
)
# What a job reads back of its messages' rows: the outcome columns, not the reason or time.
_READ = ("id", *(name for name in _COLUMNS if name not in ("reason", "updated_at")))
_SQLITE_READ = select(*(_deliveries.c[name] for name in _READ)).where(
    _deliveries.c.message_id.in_(bindparam("ids", expanding=True))
)
# PostgreSQL: the same read as one index probe per message, whatever the ledger's statistics
# say. As ``message_id IN (...)``, a ledger never analyzed (autovacuum off, or the minute
# after a burst of sends) was planned as a scan of every row: 18 ms per job at 74,000 rows
# in bench/send.py, growing with the ledger (as the device lookups in core/sender.py).
_PG_READ = text(
    "SELECT "  # noqa: S608 - constant SQL; every value is a bound parameter
    + ", ".join(f"d.{name}" for name in _READ)
    + " FROM unnest(CAST(:ids AS bigint[])) AS m(id) CROSS JOIN LATERAL"
    " (SELECT * FROM deliveries AS dl WHERE dl.message_id = m.id OFFSET 0) AS d"
).columns(*(column(name) for name in _READ))
_SQLITE_CONFLICT = " ON CONFLICT (message_id, device_id) DO NOTHING"
PG_INSERT = (
    "INSERT INTO deliveries (message_id, device_id, platform, environment, token, status, "
    "attempts, next_attempt_at, reason, updated_at) "
    "SELECT * FROM unnest($1::bigint[], $2::int[], $3::varchar[], $4::varchar[], "
    "$5::varchar[], $6::varchar[], $7::int[], $8::timestamptz[], $9::varchar[], "
    "$10::timestamptz[]) "
    "ON CONFLICT (message_id, device_id) DO NOTHING"
)


def pg_arrays(rows: list[dict[str, Any]]) -> tuple[list[Any], ...]:
    """The parameters of ``PG_INSERT`` for these rows: one array per column."""
    return tuple([row[name] for row in rows] for name in _COLUMNS)


async def insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> int | None:
    """Add ledger rows (``new_row`` updated with ``outcome_values``); a row already there (a
    job or page run twice) is left alone. How many were added, when the driver says (else
    None)."""
    if not rows:
        return 0
    connection = await session.connection()
    dialect = connection.dialect
    if dialect.name == "postgresql":
        result: Any = await connection.exec_driver_sql(PG_INSERT, pg_arrays(rows))
        count = getattr(result, "rowcount", -1)
        return count if isinstance(count, int) and count >= 0 else None
    added = 0
    for sql, args in sqlite_inserts(rows, dialect):
        result = await connection.exec_driver_sql(sql, args)
        added += max(result.rowcount, 0)
    return added


def sqlite_inserts(
    rows: list[dict[str, Any]], dialect: Dialect
) -> list[tuple[str, tuple[Any, ...]]]:
    """SQLite: the statements (SQL, arguments) that add these rows, as ``insert_rows`` runs
    them: values bound as SQLAlchemy would bind them, each timestamp converted once (a batch's
    rows share theirs), a few hundred rows per statement."""
    timestamp = bind(_deliveries.c.updated_at, dialect)
    converted: dict[datetime, Any] = {}

    def when(value: datetime | None) -> Any:
        if value is None:
            return None
        found = converted.get(value)
        if found is None:
            found = converted[value] = timestamp(value)
        return found

    statements: list[tuple[str, tuple[Any, ...]]] = []
    for start in range(0, len(rows), SQLITE_ROWS):
        chunk = rows[start : start + SQLITE_ROWS]
        args: list[Any] = []
        for row in chunk:
            args += (
                row["message_id"],
                row["device_id"],
                row["platform"],
                row["environment"],
                row["token"],
                row["status"],
                row["attempts"],
                when(row["next_attempt_at"]),
                row["reason"],
                when(row["updated_at"]),
            )
        sql = sqlite_values("deliveries", _COLUMNS, len(chunk), _SQLITE_CONFLICT)
        statements.append((sql, tuple(args)))
    return statements


async def of_messages(db: Database, message_ids: list[int]) -> Sequence[Any]:
    """The rows of these messages (committed ones; inline on SQLite, asyncpg on PostgreSQL)."""
    statement = _PG_READ if db.dialect == "postgresql" else _SQLITE_READ
    return await db.read(statement, {"ids": message_ids})


async def update_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Record outcomes on existing rows: each dict has ``row_id`` and ``outcome_values``."""
    await session.execute(_SAVE_OUTCOME, rows)
