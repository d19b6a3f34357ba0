"""The job worker: claim due jobs, run them, keep their leases alive, stop gracefully.

``clarion serve`` runs one beside the API; ``clarion worker`` runs one alone, and any number of
them can share one PostgreSQL. On stop the worker claims nothing more and asks the jobs in hand
to stop at their next safe point: a handler calls ``check_handback()`` between units of work it
has recorded (a campaign's chunk of sends, a wave of messages), which raises ``HandBack`` once
the worker is stopping, and the job goes back to the queue with nothing sent and unrecorded. A
job still running ``grace`` seconds later is cancelled and handed back as it is (what it had in
flight may then be sent again by the next run, as after a crash).

A job also stops at its next safe point (``LeaseLost``, nothing recorded) once its lease may
be another worker's: the lease ended on this process's monotonic clock before a heartbeat
renewed it (the process was paused, or could not reach the database), or a heartbeat found the
job taken. The worker that took it over sends the rest.

While the database is unreachable the worker logs one line per failed claim or heartbeat and
tries again after a growing, jittered delay (up to ``max_backoff``); it resumes by itself when
the database answers again. A job whose outcome cannot be recorded stays claimed until its lease
ends, and then runs again (the delivery ledger keeps it from sending twice what it recorded).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from clarion.store.availability import database_unavailable, first_line
from clarion.store.jobs import ClaimedJob, JobQueue
from clarion.store.models import utcnow

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[datetime | None]]
MAX_JOB_FAILURES = 25


class HandBack(Exception):
    """Raised by ``check_handback`` in a job whose worker is stopping."""


class LeaseLost(Exception):
    """Raised by ``check_handback`` in a job whose lease may have passed to another worker:
    it ended before a heartbeat could renew it (the process was paused, or cut off from the
    database), or a heartbeat found the job taken. The job stops there and records nothing:
    whoever holds it now sends the rest."""


_stopping_worker: ContextVar[asyncio.Event | None] = ContextVar("stopping_worker", default=None)
_lease_held: ContextVar[Callable[[], bool] | None] = ContextVar("lease_held", default=None)


def check_lease() -> None:
    """Call before recording what a job sent: raises LeaseLost once the job may be another
    worker's. The worker that took it over sends those devices itself; a record here would
    stand in its way (its own outcome refused as a duplicate row, a retry left pending that it
    then sends a third time)."""
    held = _lease_held.get()
    if held is not None and not held():
        raise LeaseLost


def check_handback() -> None:
    """Call between units of work whose results are recorded: raises HandBack once the worker
    running this job is stopping, so the job is handed back there rather than cut short, and
    LeaseLost once the job may be another worker's."""
    check_lease()
    stopping = _stopping_worker.get()
    if stopping is not None and stopping.is_set():
        raise HandBack


def worker_identity() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Backoff:
    """Delays after consecutive failures: doubling from ``base`` up to ``cap``, each with
    jitter (between half and all of it), so workers that lost one database do not retry in
    step."""

    def __init__(self, base: float, cap: float) -> None:
        self._base = base
        self._cap = max(cap, base)
        self.failures = 0
        self.since = 0.0

    def failed(self) -> float:
        """Count a failure; the delay before the next try."""
        if self.failures == 0:
            self.since = time.monotonic()
        self.failures += 1
        delay = min(self._cap, self._base * 2.0 ** min(self.failures - 1, 32))
        return random.uniform(delay / 2, delay)

    def succeeded(self) -> bool:
        """Count a success; True if it ends a run of failures."""
        ended, self.failures = self.failures > 0, 0
        return ended


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
        max_backoff: float = 30.0,
        chores: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        self._queue = queue
        self._handlers = handlers
        self._concurrency = concurrency
        self._poll = poll_interval
        self._wake = wake or asyncio.Event()
        self._stopping = asyncio.Event()
        self._now = asyncio.Event()
        self._running: dict[int, asyncio.Task[None]] = {}
        # Per job in hand: until when (monotonic) its lease is surely this worker's, from the
        # claim or the last heartbeat that renewed it (taken when that heartbeat started).
        self._leased_until: dict[int, float] = {}
        self._lost: set[int] = set()
        self._claims = Backoff(poll_interval, max_backoff)
        self._unreachable = False  # the last failed claim could not reach the database
        self._beats = Backoff(poll_interval, max_backoff)
        self.completed = 0
        # Background duties that run as long as the worker does (pruning old rows).
        self._chores = chores

    @property
    def in_flight(self) -> list[int]:
        return list(self._running)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; ``run`` returns once the jobs in hand finished or were handed back.
        ``now``: do not wait out the grace; cancel the jobs in hand at once and hand them back
        (what they had in flight may be sent again, as after a crash)."""
        self._stopping.set()
        if now:
            self._now.set()
        self._wake.set()

    async def run(self, *, grace: float = 10.0) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        chores = [asyncio.create_task(chore()) for chore in self._chores]
        for chore in chores:
            chore.add_done_callback(_observe)
        try:
            while not self._stopping.is_set():
                self._wake.clear()  # before claiming, so no wake-up after it is lost
                free = self._concurrency - len(self._running)
                # Taken before the claim: the leases it sets end no sooner than this plus one.
                leased_until = time.monotonic() + self._queue.lease.total_seconds()
                claimed = await self._claim(free) if free > 0 else []
                if claimed is None:
                    continue
                for job in claimed:
                    self._leased_until[job.id] = leased_until
                    task = asyncio.create_task(self._run(job))
                    task.add_done_callback(_observe)
                    self._running[job.id] = task
                if len(claimed) < free or len(self._running) >= self._concurrency:
                    await self._idle()
        finally:
            await self._drain(grace)
            for task in (heartbeat, *chores):
                task.cancel()
            await asyncio.gather(heartbeat, *chores, return_exceptions=True)

    async def _claim(self, limit: int) -> list[ClaimedJob] | None:
        """Due jobs; None after a failure, once the backoff's delay (or a stop) has passed."""
        try:
            claimed = await self._queue.claim(limit, exclude=list(self._running))
        except Exception as exc:
            delay = self._claims.failed()
            self._unreachable = database_unavailable(exc)
            if self._unreachable:
                log.warning("claiming jobs failed: %s; next try in %.1f s", first_line(exc), delay)
            else:
                log.exception("claiming jobs failed; next try in %.1f s", delay)
            await self._pause(delay)
            return None
        down_since = self._claims.since
        if self._claims.succeeded():
            log.info(
                "database reachable again" if self._unreachable else "claiming jobs works again",
                extra={"failing_seconds": round(time.monotonic() - down_since, 1)},
            )
        return claimed

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the worker is asked to stop."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _idle(self) -> None:
        """Wait for a wake-up (new jobs, a finished job) or the poll interval."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
        except TimeoutError:
            pass

    def _holds(self, job_id: int) -> bool:
        return job_id not in self._lost and time.monotonic() < self._leased_until.get(job_id, 0)

    async def _run(self, job: ClaimedJob) -> None:
        _stopping_worker.set(self._stopping)  # this task's own context
        _lease_held.set(lambda: self._holds(job.id))
        try:
            handler = self._handlers.get(job.kind)
            if handler is None:
                log.error("no handler for job kind %s", job.kind, extra={"job": job.id})
                later = utcnow() + timedelta(minutes=5)
                await self._record(job, lambda: self._queue.reschedule(job.id, later))
                return
            try:
                again = await handler(job.payload)
            except asyncio.CancelledError:
                raise
            except HandBack:
                await self._hand_back([job.id])
                return
            except LeaseLost:
                log.warning(
                    "job %d stopped: its lease ended before a heartbeat renewed it (this "
                    "process was paused or cut off from the database) or another worker took "
                    "it; that worker sends the rest",
                    job.id,
                    extra={"job": job.id, "kind": job.kind},
                )
                return
            except Exception as exc:
                extra = {"job": job.id, "kind": job.kind}
                if database_unavailable(exc):
                    log.warning("job failed: %s", first_line(exc), extra=extra)
                else:
                    log.exception("job failed", extra=extra)
                await self._record(job, lambda: self._after_failure(job))
                return
            if again is None:
                if await self._record(job, lambda: self._queue.finish(job.id)):
                    self.completed += 1
            else:
                await self._record(job, lambda: self._queue.reschedule(job.id, again))
        finally:
            self._running.pop(job.id, None)
            self._leased_until.pop(job.id, None)
            self._lost.discard(job.id)
            self._wake.set()

    async def _record(self, job: ClaimedJob, write: Callable[[], Awaitable[None]]) -> bool:
        """Record what became of a job; False if the database did not take it. The job then
        stays claimed until its lease ends (no heartbeat extends it now) and runs again."""
        try:
            await write()
        except Exception as exc:
            extra = {"job": job.id, "kind": job.kind}
            if database_unavailable(exc):
                log.warning(
                    "recording the job's outcome failed: %s; the job is left to its lease",
                    first_line(exc),
                    extra=extra,
                )
            else:
                log.exception(
                    "recording the job's outcome failed; the job is left to its lease",
                    extra=extra,
                )
            return False
        return True

    async def _after_failure(self, job: ClaimedJob) -> None:
        if job.attempts >= MAX_JOB_FAILURES:
            log.error("job gave up after %d failures", job.attempts, extra={"job": job.id})
            await self._queue.finish(job.id)
            return
        delay = min(300.0, 2.0 ** min(job.attempts, 8))
        await self._queue.reschedule(job.id, utcnow() + timedelta(seconds=delay))

    async def _heartbeat(self) -> None:
        """Extend the leases of the jobs in hand every third of a lease. After a failure it
        tries again sooner, backing off up to that interval but never beyond it, so the leases
        are extended as soon as the database answers again."""
        interval = self._queue.lease.total_seconds() / 3
        delay = interval
        while True:
            await asyncio.sleep(delay)
            ids = self.in_flight
            started = time.monotonic()
            try:
                held = await self._queue.heartbeat(ids)
            except Exception as exc:
                delay = min(interval, self._beats.failed())
                if database_unavailable(exc):
                    log.warning(
                        "lease heartbeat failed: %s; next try in %.1f s", first_line(exc), delay
                    )
                else:
                    log.exception("lease heartbeat failed; next try in %.1f s", delay)
                continue
            delay = interval
            until = started + self._queue.lease.total_seconds()
            for job_id in ids:
                if job_id in held:
                    if job_id in self._leased_until:
                        self._leased_until[job_id] = until
                elif job_id in self._running and job_id not in self._lost:
                    self._lost.add(job_id)  # it stops at its next safe point
            if self._beats.succeeded():
                log.info("lease heartbeat works again")

    async def _drain(self, grace: float) -> None:
        if not self._running:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        pending = set(self._running.values())
        now = asyncio.create_task(self._now.wait())
        try:
            while pending and not self._now.is_set() and loop.time() < deadline:
                done, _ = await asyncio.wait(
                    [*pending, now],
                    timeout=deadline - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                pending -= done
        finally:
            now.cancel()
        unfinished = [job_id for job_id, task in self._running.items() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if unfinished:
            log.warning(
                "cancelled %d jobs still running %s; their sends in flight may be repeated by"
                " the next run",
                len(unfinished),
                "when told to stop now" if self._now.is_set() else f"after {grace:.0f} s",
            )
            await self._hand_back(unfinished)

    async def _hand_back(self, job_ids: list[int]) -> None:
        try:
            await self._queue.release(job_ids)
        except Exception as exc:
            if database_unavailable(exc):
                log.warning(
                    "handing back jobs failed: %s; their leases will end instead", first_line(exc)
                )
            else:
                log.exception("handing back jobs failed; their leases will end instead")
            return
        log.info("handed %d unfinished jobs back to the queue", len(job_ids))


def _observe(task: asyncio.Task[None]) -> None:
    """Consume what a job's task ended with: ``_run`` handles its errors, so one escaping is a
    bug, logged here in one line rather than as asyncio's "exception was never retrieved"."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("job task ended with an unhandled error: %s", first_line(exc), exc_info=exc)
