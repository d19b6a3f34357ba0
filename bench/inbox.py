"""Inbox latency at a million messages: list, count and read through a real `clarion serve`.

    .venv/bin/python bench/inbox.py                 # 1,000,000 messages, 10,000 users
    .venv/bin/python bench/inbox.py --messages 100000 --requests 2000   # a quick look

It creates its own PostgreSQL database (dropped at the end), migrates it, bulk-loads the messages
with binary COPY (not through the API), starts `clarion serve` as a separate process on it, and
drives the HTTP API from this process with 16 concurrent keep-alive connections (a minimal
HTTP/1.1 client on asyncio, so the load generator costs little CPU). Each operation prints one
line: p50 / p99 latency and throughput; the baseline is `GET /push/service/status` (no database)
measured the same way in the same run: the floor set by the HTTP stack on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import procs

from clarion.store.db import Database

ADMIN_DSN = os.environ.get(
    "CLARION_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
APPS = ("mobile-app", "web-app", "wallet-app")
TARGET_P99_MS = 10.0


def db_dsn(name: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


async def admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


# --- loading ---------------------------------------------------------------------------------


@dataclass
class Loaded:
    unread_sample: list[tuple[str, str]]  # (user id, message id) of unread messages, shuffled
    seconds: float


def user_of(n: int) -> str:
    return f"user-{n:05d}"


async def load(dsn: str, messages: int, users: int, seed: int) -> Loaded:
    """COPY ``messages`` messages over ``users`` users; every user's messages interleave in time,
    half are read, each is for one application and every fourth for a second one too."""
    rng = random.Random(seed)
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        app_pks = []
        for app_id in APPS:
            pk = await conn.fetchval(
                "INSERT INTO applications (app_id, created_at) VALUES ($1, now()) RETURNING id",
                app_id,
            )
            app_pks.append(pk)
        base = datetime.now(UTC) - timedelta(days=60)
        sample: list[tuple[str, str]] = []
        batch = 100_000
        for first in range(0, messages, batch):
            rows, links = [], []
            for n in range(first, min(first + batch, messages)):
                message_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                user = user_of(rng.randrange(users))
                created = base + timedelta(seconds=n * 5)
                read = n % 2 == 0
                kind = "html" if n % 10 == 0 else "text"
                rows.append(
                    (
                        message_id,
                        user,
                        kind,
                        f"Subject {n}",
                        f"Summary of message {n}",
                        f"Message {n}: your statement for this month is ready to view.",
                        read,
                        created,
                        created + timedelta(hours=1) if read else None,
                    )
                )
                links.append((message_id, app_pks[n % 3]))
                if n % 4 == 0:
                    links.append((message_id, app_pks[(n + 1) % 3]))
                if not read and n % 25 == 1:
                    sample.append((user, str(message_id)))
            await conn.copy_records_to_table(
                "inbox_messages",
                records=rows,
                columns=[
                    "id",
                    "user_id",
                    "type",
                    "subject",
                    "summary",
                    "body",
                    "read",
                    "created_at",
                    "read_at",
                ],
            )
            await conn.copy_records_to_table(
                "inbox_message_applications",
                records=links,
                columns=["message_id", "application_id"],
            )
        # Statistics for the planner and a visibility map for index-only scans, as autovacuum
        # would eventually give a real database.
        await conn.execute("VACUUM ANALYZE inbox_messages")
        await conn.execute("VACUUM ANALYZE inbox_message_applications")
    finally:
        await conn.close()
    rng.shuffle(sample)
    return Loaded(sample, time.perf_counter() - started)


# --- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    dsn: str,
    port: int,
    log: Path,
    server: str = "uvicorn",
    processes: int = 1,
    extra: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        CLARION_DATABASE_URL=dsn,
        CLARION_SECRET_KEY=secrets.token_urlsafe(32),
        CLARION_LOG_LEVEL="WARNING",  # no access log line per request
    )
    env.update(extra or {})
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "clarion", "serve", "--port", str(port)),
                *("--server", server, "--processes", str(processes)),
            ],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,  # a session of its own, as bench/send.py explains
        )


def postgres_seconds() -> float:
    """CPU seconds of every PostgreSQL process on this machine (all databases, also other
    users'): live processes, plus what exited backends left in their parent's account."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = stat.partition("(")[2].rpartition(")")
        if name != "postgres":
            continue
        fields = rest.split()
        total += sum(int(v) for v in fields[11:15]) / ticks  # utime stime cutime cstime
    return total


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by all CPUs of the machine so far (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# --- a minimal HTTP/1.1 keep-alive client ------------------------------------------------------


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, method: str, target: str) -> tuple[int, bytes]:
        self.writer.write(
            f"{method} {target} HTTP/1.1\r\nhost: bench\r\ncontent-length: 0\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"clarion serve exited with {proc.returncode}")
        try:
            conn = await Connection.open(port)
            status, _ = await conn.request("GET", "/push/service/status")
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("clarion serve did not become ready")


@dataclass
class Result:
    name: str
    latencies: list[float]
    seconds: float
    server_cpu: float
    client_cpu: float
    postgres_cpu: float
    machine_busy: float

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def line(self) -> str:
        p50, p99 = self.percentile(0.50), self.percentile(0.99)
        rate = len(self.latencies) / self.seconds
        verdict = (
            ""
            if self.name.startswith("baseline")
            else ("  ok" if p99 < TARGET_P99_MS else f"  ABOVE the {TARGET_P99_MS:.0f} ms target")
        )
        return (
            f"{self.name:<34} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rate:5.0f} req/s  "
            f"CPU: server {self.server_cpu / self.seconds * 100:3.0f}%, "
            f"PostgreSQL {self.postgres_cpu / self.seconds * 100:3.0f}%, "
            f"client {self.client_cpu / self.seconds * 100:3.0f}%, "
            f"machine {self.machine_busy / self.seconds * 100:3.0f}% of 200%{verdict}"
        )


async def drive(
    name: str,
    ports: list[int],
    server_pids: list[int],
    make_target: Callable[[int], tuple[str, str]],
    requests: int,
    concurrency: int,
    warmup: int,
) -> Result:
    """``requests`` requests from ``concurrency`` connections, each waiting for its answer."""
    conns = [await Connection.open(ports[n % len(ports)]) for n in range(concurrency)]
    latencies: list[float] = []

    async def worker(conn: Connection, numbers: Iterator[int], measure: bool) -> None:
        for n in numbers:  # shared by all workers: each takes the next request number
            method, target = make_target(n)
            started = time.perf_counter()
            status, body = await conn.request(method, target)
            elapsed = time.perf_counter() - started
            if status != 200:
                raise SystemExit(f"{name}: {method} {target} -> {status} {body[:300]!r}")
            if measure:
                latencies.append(elapsed)

    async def run(numbers: range, measure: bool) -> None:
        shared = iter(numbers)
        await asyncio.gather(*(worker(c, shared, measure) for c in conns))

    # Warm-up first (connections, prepared statements, the pool), then the measured part.
    await run(range(warmup), measure=False)
    cpu_before, started = procs.cpu_seconds(server_pids), time.perf_counter()
    busy_before, client_before = machine_busy_seconds(), time.process_time()
    postgres_before = postgres_seconds()
    await run(range(warmup, warmup + requests), measure=True)
    seconds = time.perf_counter() - started
    cpu = procs.cpu_seconds(server_pids) - cpu_before
    busy = machine_busy_seconds() - busy_before
    client = time.process_time() - client_before
    postgres = postgres_seconds() - postgres_before
    for conn in conns:
        conn.close()
    return Result(name, latencies, seconds, cpu, client, postgres, busy)


# --- CPU per request, in-process ---------------------------------------------------------------


async def asgi_request(app: Any, method: str, target: str) -> int:
    """Call the ASGI app directly (no network, no uvicorn) and return the status."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def cpu_per_request(
    dsn: str, plan: list[tuple[str, Callable[[int], tuple[str, str]]]], count: int, first: int
) -> None:
    """The app's own CPU per request, one request at a time in this process: what the server
    spends apart from uvicorn's HTTP parsing, without the noise of other work on the machine."""
    from clarion.app import create_app
    from clarion.config import Settings
    from clarion.core.services import open_services

    settings = Settings(database_url=dsn, secret_key=secrets.token_urlsafe(32), auto_migrate=False)
    services = await open_services(settings)
    app = create_app(settings, services=services)
    try:
        for label, make_target in plan:
            for n in range(first, first + 200):  # warm-up
                await asgi_request(app, *make_target(n))
            cpu, started = time.process_time(), time.perf_counter()
            for n in range(first + 200, first + 200 + count):
                status = await asgi_request(app, *make_target(n))
                if status != 200:
                    raise SystemExit(f"{label}: {make_target(n)} -> {status}")
            cpu_us = (time.process_time() - cpu) / count * 1e6
            wall_us = (time.perf_counter() - started) / count * 1e6
            print(
                f"{label:<34} in-process: {cpu_us:5.0f} us CPU, {wall_us:5.0f} us wall per request"
            )
    finally:
        await services.close()


# --- main --------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> None:
    name = f"clarion_bench_inbox_{os.getpid()}_{secrets.token_hex(3)}"
    await admin(f'CREATE DATABASE "{name}"')
    procs: list[subprocess.Popen[bytes]] = []
    try:
        dsn = db_dsn(name)
        db = Database(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
        await db.upgrade()
        await db.dispose()
        loaded = await load(dsn, args.messages, args.users, args.seed)
        print(
            f"loaded {args.messages:,} messages over {args.users:,} users in "
            f"{loaded.seconds:.1f} s (binary COPY, indexes in place, then VACUUM ANALYZE)"
        )
        ports = [free_port() for _ in range(args.servers)]
        for n, port in enumerate(ports):
            log = args.server_log.with_name(f"{args.server_log.stem}-{n}{args.server_log.suffix}")
            extra = dict(item.split("=", 1) for item in args.env)
            procs.append(start_server(dsn, port, log, args.server, args.processes, extra))
        for port, proc in zip(ports, procs, strict=True):
            await wait_ready(port, proc)
        rng = random.Random(args.seed + 1)
        users, reads = args.users, loaded.unread_sample

        def status(_n: int) -> tuple[str, str]:
            return "GET", "/push/service/status"

        def listing(_n: int) -> tuple[str, str]:
            user = user_of(rng.randrange(users))
            return "GET", f"/inbox/messages/list?userId={user}&page=0&size=20"

        def listing_filtered(_n: int) -> tuple[str, str]:
            user = user_of(rng.randrange(users))
            return (
                "GET",
                f"/inbox/messages/list?userId={user}&applications=mobile-app,web-app"
                "&onlyUnread=true&page=0&size=20",
            )

        def count(_n: int) -> tuple[str, str]:
            user, app = user_of(rng.randrange(users)), rng.choice(APPS)
            return "GET", f"/inbox/messages/count?userId={user}&appId={app}"

        def read(n: int) -> tuple[str, str]:
            user, message_id = reads[n % len(reads)]
            return "PUT", f"/inbox/messages/read?userId={user}&messageId={message_id}"

        plan: list[tuple[str, Callable[[int], tuple[str, str]]]] = [
            ("baseline GET /push/service/status", status),
            ("list (page 0, size 20)", listing),
            ("list (2 apps, onlyUnread, size 20)", listing_filtered),
            ("count (unread, one app)", count),
            ("read (PUT, marks unread read)", read),
        ]
        print(
            f"clarion serve: {args.servers} server(s) ({args.server}, "
            f"--processes {args.processes}), PostgreSQL; "
            f"load: {args.concurrency} connections, {args.requests:,} requests per line "
            f"after {args.warmup} warm-up; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before the run"
        )
        for label, target in plan:
            requests = args.requests
            if target is read:  # each read marks a different unread message
                requests = min(requests, len(reads) - args.warmup)
                if requests < 100:
                    print(f"{label:<34} skipped: too few unread messages sampled")
                    continue
            result = await drive(
                label,
                ports,
                [p.pid for p in procs],
                target,
                requests,
                args.concurrency,
                args.warmup,
            )
            print(result.line(), flush=True)
        if args.in_process:
            # Reads continue after the messages the HTTP part marked, so they still write.
            first = args.warmup + args.requests
            await cpu_per_request(dsn, plan, args.in_process, first)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=20)
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=5_000, help="measured requests per line")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--in-process",
        type=int,
        default=0,
        metavar="N",
        help="also time N requests per line against the ASGI app in this process, one at a time",
    )
    parser.add_argument(
        "--servers", type=int, default=1, help="clarion serve processes (connections alternate)"
    )
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument(
        "--processes", type=int, default=1, help="clarion serve --processes of each server"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="CLARION_X=VALUE",
        help="a setting for the clarion server (repeatable), "
        "e.g. CLARION_DATABASE_READ_POOL_SIZE=4",
    )
    parser.add_argument(
        "--server-log", type=Path, default=Path("/tmp/clarion-bench-inbox-server.log")
    )
    args = parser.parse_args()
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    runner(bench(args))


if __name__ == "__main__":
    main()
