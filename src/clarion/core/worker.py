"""The job worker: claim due jobs, run them, keep their leases alive, stop gracefully.

``clarion serve`` runs one beside the API; ``clarion worker`` runs one alone, and any number of
them can share one PostgreSQL. On stop the worker claims nothing more and asks the jobs in hand
to stop at their next safe point: a handler calls ``check_handback()`` between units of work it
has recorded (a campaign's chunk of sends, a wave of messages), which raises ``HandBack`` once
the worker is stopping, and the job goes back to the queue with nothing sent and unrecorded. A
job still running ``grace`` seconds later is cancelled and handed back as it is (what it had in
flight may then be sent again by the next run, as after a crash).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from clarion.store.jobs import ClaimedJob, JobQueue
from clarion.store.models import utcnow

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[datetime | None]]
MAX_JOB_FAILURES = 25


class HandBack(Exception):
    """Raised by ``check_handback`` in a job whose worker is stopping."""


_stopping_worker: ContextVar[asyncio.Event | None] = ContextVar("stopping_worker", default=None)


def check_handback() -> None:
    """Call between units of work whose results are recorded: raises HandBack once the worker
    running this job is stopping, so the job is handed back there rather than cut short."""
    stopping = _stopping_worker.get()
    if stopping is not None and stopping.is_set():
        raise HandBack


def worker_identity() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Runs jobs of known kinds; a handler returns when to run the job again, or None if done."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: dict[str, Handler],
        *,
        concurrency: int = 4,
        poll_interval: float = 0.5,
        wake: asyncio.Event | None = None,
    ) -> None:
        self._queue = queue
        self._handlers = handlers
        self._concurrency = concurrency
        self._poll = poll_interval
        self._wake = wake or asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: dict[int, asyncio.Task[None]] = {}
        self.completed = 0

    @property
    def in_flight(self) -> list[int]:
        return list(self._running)

    def stop(self) -> None:
        """Stop claiming; ``run`` returns once the jobs in hand finished or were handed back."""
        self._stopping.set()
        self._wake.set()

    async def run(self, *, grace: float = 10.0) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping.is_set():
                self._wake.clear()  # before claiming, so no wake-up after it is lost
                free = self._concurrency - len(self._running)
                claimed = await self._claim(free) if free > 0 else []
                for job in claimed:
                    self._running[job.id] = asyncio.create_task(self._run(job))
                if len(claimed) < free or len(self._running) >= self._concurrency:
                    await self._idle()
        finally:
            await self._drain(grace)
            heartbeat.cancel()

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        try:
            return await self._queue.claim(limit, exclude=list(self._running))
        except Exception:  # the database went away for a moment: try again next round
            log.exception("claiming jobs failed")
            return []

    async def _idle(self) -> None:
        """Wait for a wake-up (new jobs, a finished job) or the poll interval."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
        except TimeoutError:
            pass

    async def _run(self, job: ClaimedJob) -> None:
        _stopping_worker.set(self._stopping)  # this task's own context
        try:
            handler = self._handlers.get(job.kind)
            if handler is None:
                log.error("no handler for job kind %s", job.kind, extra={"job": job.id})
                await self._queue.reschedule(job.id, utcnow() + timedelta(minutes=5))
                return
            try:
                again = await handler(job.payload)
            except asyncio.CancelledError:
                raise
            except HandBack:
                await self._hand_back([job.id])
                return
            except Exception:
                log.exception("job failed", extra={"job": job.id, "kind": job.kind})
                await self._after_failure(job)
                return
            if again is None:
                await self._queue.finish(job.id)
                self.completed += 1
            else:
                await self._queue.reschedule(job.id, again)
        finally:
            self._running.pop(job.id, None)
            self._wake.set()

    async def _after_failure(self, job: ClaimedJob) -> None:
        if job.attempts >= MAX_JOB_FAILURES:
            log.error("job gave up after %d failures", job.attempts, extra={"job": job.id})
            await self._queue.finish(job.id)
            return
        delay = min(300.0, 2.0 ** min(job.attempts, 8))
        await self._queue.reschedule(job.id, utcnow() + timedelta(seconds=delay))

    async def _heartbeat(self) -> None:
        interval = self._queue.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._queue.heartbeat(self.in_flight)
            except Exception:
                log.exception("lease heartbeat failed")

    async def _drain(self, grace: float) -> None:
        if not self._running:
            return
        tasks = list(self._running.values())
        _, pending = await asyncio.wait(tasks, timeout=grace)
        unfinished = [job_id for job_id, task in self._running.items() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if unfinished:
            log.warning(
                "cancelled %d jobs still running after %.0f s; their sends in flight may be"
                " repeated by the next run",
                len(unfinished),
                grace,
            )
            await self._hand_back(unfinished)

    async def _hand_back(self, job_ids: list[int]) -> None:
        try:
            await self._queue.release(job_ids)
        except Exception:
            log.exception("handing back jobs failed; their leases will end instead")
            return
        log.info("handed %d unfinished jobs back to the queue", len(job_ids))
