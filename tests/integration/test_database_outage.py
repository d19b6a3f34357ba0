"""A database outage: a worker rides it out (short log lines spaced by a backoff, no task
exception left unobserved, claiming resumes by itself when the database is back), and the API
answers 503 in each dialect's format, then serves again.

The outage is real on PostgreSQL: the worker's engine reaches the database through a TCP proxy
that the test cuts (every connection reset, new ones refused) and restores.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from clarion.app import create_app
from clarion.core.services import Services, open_services
from clarion.core.worker import Worker
from clarion.store import jobs
from clarion.store.availability import database_unavailable
from clarion.store.db import Database
from clarion.store.jobs import JobQueue
from clarion.store.models import Job
from tests.conftest import make_settings

# Each xdist worker its own ports: a proxy cut in one was taken over by the other's proxy.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 8
PORTS = range(18540 + 20 * _WORKER, 18560 + 20 * _WORKER)
WORKER_LOG = "clarion.core.worker"

on_postgres = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


class Proxy:
    """A TCP proxy on 127.0.0.1 that can be cut (connections reset, new ones refused) and
    restored on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._hold: socket.socket | None = None
        self.port = 0

    async def start(self) -> None:
        for port in PORTS:
            try:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
            except OSError:
                continue
            self.port = port
            return
        raise RuntimeError("no free port for the proxy")

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None
        # The port stays bound, not listening: a connection is refused, and no other proxy
        # of this test process takes the port meanwhile.
        self._hold = socket.socket()
        self._hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAITs
        self._hold.bind(("127.0.0.1", self.port))

    async def restore(self) -> None:
        if self._hold is not None:
            self._hold.close()
            self._hold = None
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()
        if self._hold is not None:
            self._hold.close()
            self._hold = None
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink, (writer, up_writer)))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        ends: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, RuntimeError):
            pass
        finally:
            for end in ends:  # one side gone: the other goes too
                end.transport.abort()
                self._writers.discard(end)


@pytest.fixture
async def proxy(services: Services) -> AsyncIterator[Proxy]:
    url = make_url(services.db.url)
    p = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def proxied_db(services: Services, proxy: Proxy) -> AsyncIterator[Database]:
    """The test database, reached through the proxy."""
    url = make_url(services.db.url).set(host="127.0.0.1", port=proxy.port)
    db = Database(url.render_as_string(hide_password=False))
    try:
        yield db
    finally:
        await db.dispose()


async def enqueue(services: Services, kind: str, count: int = 1) -> None:
    async with services.db.transaction() as session:
        jobs.enqueue(session, kind, [{"n": n} for n in range(count)])


async def states(services: Services) -> list[str]:
    async with services.db.reader() as session:
        return [str(s) for s in await session.scalars(select(Job.state).order_by(Job.id))]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    task = asyncio.create_task(worker.run(grace=1))
    try:
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


def worker_records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == WORKER_LOG and text in r.getMessage()]


def assert_one_short_line(record: logging.LogRecord) -> None:
    message = record.getMessage()
    assert record.exc_info is None, message
    assert "\n" not in message and len(message) < 400, message


def assert_short_warnings(records: list[logging.LogRecord]) -> None:
    for record in records:
        assert record.levelno == logging.WARNING
        assert_one_short_line(record)


def unretrieved_task_exceptions(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()  # a dropped task reports its exception when it is collected
    return [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]


@on_postgres
async def test_an_outage_is_logged_in_short_lines_spaced_by_a_backoff_and_claiming_resumes(
    services: Services, proxy: Proxy, proxied_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    done: list[dict[str, Any]] = []

    async def note(payload: dict[str, Any]) -> None:
        done.append(payload)

    worker = Worker(
        JobQueue(proxied_db, "w-outage"), {"note": note}, poll_interval=0.05, max_backoff=1.0
    )
    async with running(worker):
        await enqueue(services, "note")
        await eventually(lambda: _equals(states(services), ["done"]), 15)

        await proxy.cut()
        await asyncio.sleep(3)
        failures = worker_records(caplog, "claiming jobs failed")
        # Polling every 0.05 s would have made about 60; a backoff doubling from the poll
        # interval up to 1 s makes about 8.
        assert 2 <= len(failures) <= 15, [r.getMessage() for r in failures]
        assert_short_warnings(failures)
        assert any(
            name in failures[0].getMessage()
            for name in ("OperationalError", "InterfaceError", "DBAPIError", "Error:")
        )
        assert not worker_records(caplog, "database reachable again")

        await enqueue(services, "note", 2)  # queued beside the outage, straight to the database
        await proxy.restore()
        await eventually(lambda: _equals(states(services), ["done"] * 3), 15)

    assert len(done) == 3
    assert len(worker_records(caplog, "database reachable again")) == 1
    assert not unretrieved_task_exceptions(caplog)


@on_postgres
async def test_a_job_cut_off_by_an_outage_is_left_to_its_lease_without_a_lost_task_exception(
    services: Services, proxy: Proxy, proxied_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The job fails on the database and its failure cannot be recorded either: one line each,
    the job stays running until its lease ends, and then runs again."""
    caplog.set_level(logging.INFO)
    started = asyncio.Event()
    outage = asyncio.Event()
    runs: list[int] = []

    async def uses_the_database(_payload: dict[str, Any]) -> None:
        runs.append(1)
        if len(runs) == 1:
            started.set()
            await outage.wait()
        async with proxied_db.transaction() as session:
            await session.execute(select(Job.id))

    queue = JobQueue(proxied_db, "w-cut", lease_seconds=1.5)
    worker = Worker(queue, {"db": uses_the_database}, poll_interval=0.05, max_backoff=0.5)
    async with running(worker):
        await enqueue(services, "db")
        await asyncio.wait_for(started.wait(), 5)
        await proxy.cut()
        outage.set()
        await eventually(lambda: _has(caplog, "left to its lease"), 5)
        assert await states(services) == ["running"]  # nothing could be recorded
        await asyncio.sleep(0.5)
        assert not unretrieved_task_exceptions(caplog)

        await proxy.restore()
        # The lease (1.5 s) ends and the job runs again, this time to the end.
        await eventually(lambda: _equals(states(services), ["done"]), 8)

    assert len(runs) == 2
    [failed] = worker_records(caplog, "job failed")
    assert failed.levelno == logging.WARNING
    assert_one_short_line(failed)
    [unrecorded] = worker_records(caplog, "left to its lease")
    assert_one_short_line(unrecorded)
    assert not unretrieved_task_exceptions(caplog)


@on_postgres
async def test_heartbeats_that_fail_in_an_outage_log_short_lines(
    services: Services, proxy: Proxy, proxied_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    started = asyncio.Event()
    finish = asyncio.Event()

    async def long_job(_payload: dict[str, Any]) -> None:
        started.set()
        await finish.wait()

    # A lease of 1.2 s: a heartbeat every 0.4 s.
    queue = JobQueue(proxied_db, "w-beat", lease_seconds=1.2)
    worker = Worker(queue, {"long": long_job}, poll_interval=0.05, max_backoff=1.0)
    async with running(worker):
        await enqueue(services, "long")
        await asyncio.wait_for(started.wait(), 5)
        await proxy.cut()
        await asyncio.sleep(2)
        beats = worker_records(caplog, "lease heartbeat failed")
        assert 1 <= len(beats) <= 10, [r.getMessage() for r in beats]
        assert_short_warnings(beats)
        await proxy.restore()
        finish.set()
        await eventually(lambda: _equals(states(services), ["done"]), 5)
    assert not unretrieved_task_exceptions(caplog)


@on_postgres
async def test_a_record_of_accepted_pushes_waits_out_a_short_outage(
    services: Services, proxy: Proxy, proxied_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A job's ledger record (what the providers accepted) keeps trying through an outage
    shorter than its wait: failing, the job ran again and sent those pushes twice."""
    caplog.set_level(logging.INFO)

    async def write(session: Any) -> None:
        jobs.enqueue(session, "recorded", [{"n": 1}])

    await proxy.cut()
    recording = asyncio.create_task(proxied_db.record(write, outage_wait=10))
    await asyncio.sleep(1.5)
    assert not recording.done()
    assert await states(services) == []
    await proxy.restore()
    await asyncio.wait_for(recording, 10)
    assert await states(services) == ["queued"]
    said = [r for r in caplog.records if r.name == "clarion.store.db"]
    assert [r.levelno for r in said] == [logging.WARNING, logging.INFO], said
    assert said[0].getMessage().startswith("recording delivered pushes failed: ")
    assert_one_short_line(said[0])

    # Without a wait (an API request's record), or past it, the failure is raised.
    await proxy.cut()
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        await proxied_db.record(write)
    assert time.monotonic() - started < 5
    with pytest.raises(Exception) as again:
        await proxied_db.record(write, outage_wait=1)
    assert time.monotonic() - started < 10
    await proxy.restore()
    assert await states(services) == ["queued"]
    assert database_unavailable(raised.value) and database_unavailable(again.value)


@on_postgres
async def test_a_record_on_the_driver_waits_out_a_short_outage_and_runs_twice_safely(
    services: Services, proxy: Proxy, proxied_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger's usual record on PostgreSQL (one statement on the driver, no unit of
    work) waits out an outage as ``record`` does, and a statement that is a no-op the
    second time may be run again."""
    caplog.set_level(logging.INFO)
    sql = (
        "INSERT INTO applications (app_id, created_at) VALUES ($1, $2) "
        "ON CONFLICT (app_id) DO NOTHING"
    )
    args = ["recorded-on-driver", datetime.now(UTC)]

    async def count() -> int:
        async with services.db.reader() as session:
            found = await session.execute(
                text("SELECT count(*) FROM applications WHERE app_id = :a"), {"a": args[0]}
            )
            return int(found.scalar_one())

    assert await proxied_db.record_on_driver(sql, args) is True  # opens the pool
    await proxy.cut()
    recording = asyncio.create_task(proxied_db.record_on_driver(sql, args, outage_wait=10))
    await asyncio.sleep(1.5)
    assert not recording.done()
    await proxy.restore()
    assert await asyncio.wait_for(recording, 10) is True
    assert await count() == 1
    said = [r for r in caplog.records if r.name == "clarion.store.db"]
    assert [r.levelno for r in said] == [logging.WARNING, logging.INFO], said
    assert said[0].getMessage().startswith("recording delivered pushes failed: ")

    await proxy.cut()
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        await proxied_db.record_on_driver(sql, args, outage_wait=1)
    assert time.monotonic() - started < 10
    await proxy.restore()
    assert database_unavailable(raised.value)


async def test_unexpected_claim_errors_keep_their_traceback_but_back_off_too(
    services: Services, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    queue = JobQueue(services.db, "w-bug")
    real_claim = queue.claim
    broken = True

    async def claim(limit: int, *, exclude: Any = ()) -> list[jobs.ClaimedJob]:
        if broken:
            raise RuntimeError("a bug in the claim")
        return await real_claim(limit, exclude=exclude)

    monkeypatch.setattr(queue, "claim", claim)
    done: list[int] = []

    async def note(_payload: dict[str, Any]) -> None:
        done.append(1)

    worker = Worker(queue, {"note": note}, poll_interval=0.05, max_backoff=0.5)
    async with running(worker):
        await enqueue(services, "note")
        await asyncio.sleep(2)
        failures = worker_records(caplog, "claiming jobs failed")
        assert 2 <= len(failures) <= 12, len(failures)
        assert all(r.exc_info is not None and r.levelno == logging.ERROR for r in failures)
        broken = False
        await eventually(lambda: _equals(states(services), ["done"]), 5)
    assert done == [1]
    assert len(worker_records(caplog, "claiming jobs works again")) == 1
    assert not worker_records(caplog, "database reachable again")


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def _has(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return bool(worker_records(caplog, text))


@on_postgres
async def test_the_api_answers_503_in_each_dialect_while_the_database_is_unreachable(
    services: Services, proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    """It answered 500 "Internal server error" and logged a traceback per request."""
    url = make_url(services.db.url).set(host="127.0.0.1", port=proxy.port)
    proxied = await open_services(
        make_settings(url.render_as_string(hide_password=False), run_worker=False)
    )
    app = create_app(proxied.settings, services=proxied)
    device = {
        "requestObject": {
            "appId": "mobile-app",
            "platform": "ios",
            "token": "ab" * 32,
            "activationId": "act-1",
        }
    }
    client_body = {"client_id": "wallet-1", "type": "noop", "token": "t"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://clarion.test"
        ) as client:
            await client.post("/admin/app/create", json={"requestObject": {"appId": "mobile-app"}})
            await proxy.cut()
            caplog.clear()
            powerauth = await client.post("/push/device/create", json=device)
            assert powerauth.status_code == 503, powerauth.text
            assert powerauth.json() == {
                "status": "ERROR",
                "responseObject": {
                    "code": "ERROR_GENERIC",
                    "message": "The database is unavailable: try again shortly.",
                },
            }
            walletconnect = await client.post("/clients", json=client_body)
            assert walletconnect.status_code == 503, walletconnect.text
            assert walletconnect.json()["errors"] == [
                {
                    "name": "database_unavailable",
                    "description": "The database is unavailable: try again shortly.",
                }
            ]
            for answer in (powerauth, walletconnect):
                assert answer.headers["retry-after"] == "5"
            # /metrics still answers, without the database's gauges (not stale, not "0 wait").
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert "clarion_database_up 0.0" in metrics.text
            assert "clarion_jobs{" not in metrics.text
            assert "clarion_oldest_due_job_seconds NaN" in metrics.text
            for record in caplog.records:
                assert record.exc_info is None, record.getMessage()  # no traceback logged
                assert "\n" not in record.getMessage()
            await proxy.restore()
            assert (await client.post("/push/device/create", json=device)).status_code == 200
            metrics = await client.get("/metrics")
            assert "clarion_database_up 1.0" in metrics.text
            assert 'clarion_jobs{state="queued"} 0.0' in metrics.text
            assert (await client.post("/clients", json=client_body)).status_code == 200
    finally:
        await proxied.close()
