"""Durable jobs in the database: enqueue in the caller's unit of work, claim under a lease.

PostgreSQL: any number of workers on any number of machines claim with
``SELECT ... FOR UPDATE SKIP LOCKED``. SQLite: the workers of the processes sharing the file (one
per ``clarion serve`` process); the lock clause is a no-op there, and a claim is one
``UPDATE ... RETURNING`` under SQLite's single writer lock, so two workers never claim the same
job. A job whose lease ends without a heartbeat (its worker crashed or hung) is claimable again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.store.db import Database
from clarion.store.models import Job, utcnow


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int


def enqueue(
    session: AsyncSession,
    kind: str,
    payloads: Sequence[dict[str, Any]],
    *,
    run_after: datetime | None = None,
) -> None:
    """Add jobs to the caller's transaction: they exist exactly when it commits."""
    now = utcnow()
    session.add_all(
        Job(
            kind=kind,
            payload=payload,
            state="queued",
            run_after=run_after or now,
            attempts=0,
            created_at=now,
        )
        for payload in payloads
    )


_jobs = cast(Table, Job.__table__)
_FINISH = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id"), _jobs.c.lease_owner == bindparam("owner"))
    .values(state="done", finished_at=bindparam("now"), lease_owner=None, lease_until=None)
)


class JobQueue:
    """Claims, heartbeats and finishes jobs for one worker identity."""

    def __init__(self, db: Database, owner: str, *, lease_seconds: float = 30.0) -> None:
        self._db = db
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)

    async def claim(self, limit: int, *, exclude: Sequence[int] = ()) -> list[ClaimedJob]:
        """Take up to ``limit`` due jobs (queued and due, or running with an ended lease).

        ``exclude``: jobs this worker is running, never taken twice even if their lease lapsed.
        """
        now = utcnow()
        async with self._db.transaction() as session:
            due = (
                select(Job.id)
                .where(
                    or_(
                        (Job.state == "queued") & (Job.run_after <= now),
                        (Job.state == "running") & (Job.lease_until < now),
                    )
                )
                .where(Job.id.not_in(exclude))
                .order_by(Job.run_after, Job.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            # One statement: atomic on SQLite even with several processes on one file, and
            # FOR UPDATE SKIP LOCKED lets PostgreSQL workers pass each other's claims by.
            rows = await session.execute(
                update(Job)
                .where(Job.id.in_(due))
                .values(
                    state="running",
                    lease_owner=self.owner,
                    lease_until=now + self.lease,
                    attempts=Job.attempts + 1,
                )
                .returning(Job.id, Job.kind, Job.payload, Job.attempts)
            )
            return [ClaimedJob(r.id, r.kind, dict(r.payload), r.attempts) for r in rows]

    async def heartbeat(self, ids: Sequence[int]) -> set[int]:
        """Extend the lease of jobs this worker still holds; the ids it still holds (a job
        missing from them was taken by another worker once its lease had ended)."""
        if not ids:
            return set()
        async with self._db.transaction() as session:
            held = await session.scalars(
                update(Job)
                .where(Job.id.in_(ids), Job.lease_owner == self.owner, Job.state == "running")
                .values(lease_until=utcnow() + self.lease)
                .returning(Job.id)
            )
            return set(held)

    async def finish(self, job_id: int) -> None:
        # A no-op when run again (the lease is no longer this worker's): one statement on the
        # driver on PostgreSQL, inline on a SQLite file.
        await self._db.execute_idempotent(
            _FINISH, {"job_id": job_id, "owner": self.owner, "now": utcnow()}
        )

    async def reschedule(self, job_id: int, run_after: datetime) -> None:
        """Put a job back in the queue for later (back-pressure, retries)."""
        async with self._db.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == self.owner)
                .values(state="queued", run_after=run_after, lease_owner=None, lease_until=None)
            )

    async def release(self, ids: Sequence[int]) -> None:
        """Hand unfinished jobs back at once (graceful shutdown)."""
        if not ids:
            return
        async with self._db.transaction() as session:
            await session.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.lease_owner == self.owner, Job.state == "running")
                .values(state="queued", lease_owner=None, lease_until=None, run_after=utcnow())
            )


async def queue_depth(db: Database) -> dict[str, int]:
    """Jobs by state, for metrics and tests."""
    async with db.reader() as session:
        rows = await session.execute(select(Job.state, func.count()).group_by(Job.state))
        return {state: int(count) for state, count in rows}


@dataclass(frozen=True, slots=True)
class Backlog:
    queued: int
    running: int  # with a lease still running: a worker has them
    lease_expired: int  # running, but their lease ended: their worker died, or is cut off
    waited: float  # seconds the oldest due job (queued, or lease ended) has waited


async def backlog(db: Database) -> Backlog:
    """The queue for /metrics: read through the (state, run_after) index, never counting the
    finished jobs. A job whose lease ended waits for a worker as a queued one does, since the
    moment its lease ended (after a ``kill -9`` of every worker it showed as running)."""
    now = utcnow()
    async with db.reader() as session:
        counts: dict[str, int] = {}
        for state, ended, count in await session.execute(
            select(Job.state, Job.lease_until < now, func.count())
            .where(Job.state.in_(("queued", "running")))
            # By position: the comparison's parameter, written twice, is two expressions to
            # PostgreSQL.
            .group_by(literal_column("1"), literal_column("2"))
        ):
            key = "lease_expired" if state == "running" and ended else str(state)
            counts[key] = counts.get(key, 0) + int(count)
        oldest_queued = await session.scalar(
            select(func.min(Job.run_after)).where(Job.state == "queued", Job.run_after <= now)
        )
        oldest_expired = await session.scalar(
            select(func.min(Job.lease_until)).where(Job.state == "running", Job.lease_until < now)
        )
    waited = 0.0
    for oldest in (oldest_queued, oldest_expired):
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=now.tzinfo)
            waited = max(waited, (now - oldest).total_seconds())
    return Backlog(
        counts.get("queued", 0), counts.get("running", 0), counts.get("lease_expired", 0), waited
    )
