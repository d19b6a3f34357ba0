"""A stopping worker hands its jobs back at their next safe point, never mid-unit."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from clarion.app import create_app
from clarion.core.services import Services
from clarion.core.worker import Worker, check_handback
from clarion.store import jobs
from clarion.store.db import Database
from clarion.store.jobs import JobQueue
from clarion.store.models import Job
from tests.conftest import make_settings


async def enqueue(services: Services, kind: str) -> None:
    async with services.db.transaction() as session:
        jobs.enqueue(session, kind, [{}])


async def job_state(services: Services) -> str:
    async with services.db.reader() as session:
        state = await session.scalar(select(Job.state))
    assert state is not None
    return str(state)


async def running_a_stuck_job(
    services: Services, name: str, *, grace: float
) -> tuple[Worker, asyncio.Task[None]]:
    """A worker running a job that never reaches a safe point (it waits a minute)."""
    running = asyncio.Event()

    async def stuck(_payload: dict[str, Any]) -> None:
        running.set()
        await asyncio.sleep(60)

    await enqueue(services, "stuck")
    worker = Worker(JobQueue(services.db, name), {"stuck": stuck}, poll_interval=0.05)
    task = asyncio.create_task(worker.run(grace=grace))
    await running.wait()
    return worker, task


async def test_a_job_stops_at_its_next_safe_point_and_goes_back_to_the_queue(
    services: Services,
) -> None:
    """Each unit is sent, then recorded, then comes a safe point: a unit is never cut between
    its send and its record (what made a graceful stop send a campaign chunk twice)."""
    started: list[int] = []
    recorded: list[int] = []
    running = asyncio.Event()

    async def chunks(_payload: dict[str, Any]) -> None:
        for unit in range(20):
            check_handback()
            started.append(unit)
            running.set()
            await asyncio.sleep(0.1)  # the unit's sends, then its record
            recorded.append(unit)

    await enqueue(services, "chunks")
    worker = Worker(JobQueue(services.db, "w1"), {"chunks": chunks}, poll_interval=0.05)
    task = asyncio.create_task(worker.run(grace=10))
    await running.wait()
    stopped_at = time.monotonic()
    worker.stop()
    await task
    assert time.monotonic() - stopped_at < 2  # one unit's time, not the 10 s grace
    assert recorded == started and 1 <= len(started) < 20
    assert await job_state(services) == "queued"  # handed back, for the next run
    assert worker.completed == 0


async def test_a_job_without_a_safe_point_is_cancelled_after_the_grace(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    worker, task = await running_a_stuck_job(services, "w2", grace=0.3)
    caplog.set_level(logging.WARNING, logger="clarion.core.worker")
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert await job_state(services) == "queued"
    assert any("cancelled 1 jobs" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_serves_worker_stops_with_the_configured_grace(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLARION_WORKER_GRACE reaches the worker a serve process runs (it had a fixed 10 s)."""
    graces: list[float] = []

    async def run(self: Worker, *, grace: float = 10.0) -> None:
        graces.append(grace)

    monkeypatch.setattr(Worker, "run", run)
    app = create_app(make_settings(database_url, worker_grace=2.5))
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0)
    assert graces == [2.5]


async def test_a_paused_worker_whose_lease_ended_stops_and_the_job_is_not_done_twice(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """A process paused past its jobs' lease (SIGSTOP, a frozen VM) while another worker, in
    another process, takes the job over: resumed, the paused one stops at its next safe point.
    It carried on through the units it had planned, which the other had sent meanwhile: a
    campaign page sent twice."""
    caplog.set_level(logging.INFO, logger="clarion.core.worker")
    lease = 0.6  # a heartbeat every 0.2 s
    sent: list[tuple[str, int]] = []
    recorded: set[int] = set()
    paused = threading.Event()

    def units_for(name: str) -> Any:
        async def units(_payload: dict[str, Any]) -> None:
            todo = [u for u in range(30) if u not in recorded]  # planned at the start
            for unit in todo:
                check_handback()
                sent.append((name, unit))
                await asyncio.sleep(0.02)
                recorded.add(unit)
                if name == "a" and unit == 2:
                    paused.set()
                    time.sleep(2.0)  # noqa: ASYNC251 (the process stops: no heartbeat, no loop)

        return units

    def other_process() -> None:
        async def run() -> None:
            db = Database(services.settings.database_url)
            b = Worker(
                JobQueue(db, "wb", lease_seconds=lease),
                {"units": units_for("b")},
                poll_interval=0.05,
            )
            task = asyncio.create_task(b.run(grace=5))
            for _ in range(100):
                await asyncio.sleep(0.05)
                if b.completed:
                    break
            b.stop()
            await task
            await db.dispose()

        paused.wait(10)
        asyncio.run(run())

    await enqueue(services, "units")
    other = threading.Thread(target=other_process)
    other.start()
    a = Worker(JobQueue(services.db, "wa", lease_seconds=lease), {"units": units_for("a")})
    task_a = asyncio.create_task(a.run(grace=5))
    try:
        await asyncio.to_thread(other.join, 15)
        for _ in range(100):
            if await job_state(services) == "done":
                break
            await asyncio.sleep(0.05)
    finally:
        a.stop()
        await task_a
    units = [unit for _, unit in sent]
    assert sorted(units) == list(range(30)), sent  # each unit once: none twice, none lost
    assert [u for name, u in sent if name == "a"] == [0, 1, 2]
    assert await job_state(services) == "done"
    [stopped] = [r for r in caplog.records if "lease ended" in r.getMessage()]
    assert stopped.levelno == logging.WARNING
    assert a.completed == 0


async def test_stopping_now_cuts_the_grace_short(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """A second Ctrl-C: the jobs in hand are cancelled and handed back at once, not after the
    grace (it was ignored: the worker still waited its 10 s)."""
    worker, task = await running_a_stuck_job(services, "w-now", grace=30)
    caplog.set_level(logging.WARNING, logger="clarion.core.worker")
    worker.stop()
    await asyncio.sleep(0.3)
    assert not task.done()  # waiting out the grace for a safe point
    started = time.monotonic()
    worker.stop(now=True)
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 2
    assert await job_state(services) == "queued"
    assert any("when told to stop now" in r.getMessage() for r in caplog.records)
