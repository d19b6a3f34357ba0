"""Workers of several processes share one queue: claims racing on their own connections (as
`clarion serve --processes N` does, on SQLite as on PostgreSQL) never take the same job twice
and leave none behind."""

from __future__ import annotations

import asyncio

from clarion.core.services import Services
from clarion.store import jobs
from clarion.store.db import Database

JOBS = 300


async def test_racing_workers_claim_every_job_once(services: Services) -> None:
    async with services.db.transaction() as session:
        jobs.enqueue(session, "test", [{"n": n} for n in range(JOBS)])
    other = Database(services.settings.database_url)  # another process's connections
    try:
        queues = [
            jobs.JobQueue(services.db, "worker-a"),
            jobs.JobQueue(other, "worker-b"),
            jobs.JobQueue(other, "worker-c"),
        ]
        claimed: dict[str, list[int]] = {q.owner: [] for q in queues}

        async def work(queue: jobs.JobQueue) -> None:
            while batch := await queue.claim(7):
                claimed[queue.owner].extend(job.payload["n"] for job in batch)
                await asyncio.sleep(0)  # let the others claim in between

        await asyncio.gather(*(work(q) for q in queues))
    finally:
        await other.dispose()
    every = [n for taken in claimed.values() for n in taken]
    assert sorted(every) == list(range(JOBS))  # each job once, none left
    assert sum(1 for taken in claimed.values() if taken) >= 2  # they did race
