"""PowerAuth message sending end to end: a real `clarion serve` process, a real database, nginx
as an APNs sink that is not the bottleneck.

    python bench/send.py [--db sqlite|postgresql|both] [--messages 100000] [--seconds 30]

(a) ASYNCHRONOUS batches of ``--messages`` messages to as many users with one device each: time
    from the first request to the last delivery recorded in the ledger, pushes/s.
(b) SYNCHRONOUS single-message requests at ``--concurrency`` for ``--seconds`` (driven by wrk,
    `apt-get install -y wrk`): requests/s and p50 / p99 latency. wrk's latencies are corrected
    for coordinated omission; ``--own-client`` measures (b) once more with a client that
    reports each request's own latency.

PostgreSQL: a fresh database is created (and dropped) through CLARION_BENCH_POSTGRES_DSN
(default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import procs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sink import Sink, nginx_sink, spare_port
from sqlalchemy import func, insert, select, text

from clarion.store.db import Database
from clarion.store.models import Application, Delivery, Device, utcnow

ADMIN_DSN = os.environ.get(
    "CLARION_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BUNDLE = "com.example.bench"
# Each wrk thread loads the script in a Lua state of its own; seeded from the clock alone, the
# two threads drew the same users in the same order. setup() numbers the threads (it runs in the
# main state, once per thread) and init() seeds each with its number.
WRK_SCRIPT = """
local threads = 0
setup = function(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end
init = function(args)
  math.randomseed(os.time() * 16 + thread_number)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local user = math.random(0, {users} - 1)
  return wrk.format(nil, "/push/message/send",
    nil, '{{"requestObject": {{"appId": "bench-app", "message": {{"userId": "u-' .. user ..
    '", "body": {{"title": "Balance", "body": "Your balance is now $745.00", "badge": 1}}}}}}}}')
end
"""


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{folder / 'bench.db'}"
        return
    import asyncpg

    name = f"clarion_bench_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        rest = ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]
        yield f"postgresql+asyncpg://{rest}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def load_devices(url: str, users: int, analyze: bool = True) -> None:
    db = Database(url)
    await db.upgrade()
    async with db.transaction() as session:
        session.add(Application(app_id="bench-app", created_at=utcnow()))
    now = utcnow()
    async with db.transaction() as session:
        app_pk = await session.scalar(select(Application.id))
        for start in range(0, users, 20_000):
            await session.execute(
                insert(Device),
                [
                    {
                        "application_id": app_pk,
                        "platform": "apns",
                        "token": f"{i:064x}",
                        "environment": "production",
                        "activation_id": f"act-{i}",
                        "user_id": f"u-{i}",
                        "active": True,
                        "registered_at": now,
                    }
                    for i in range(start, min(users, start + 20_000))
                ],
            )
    if url.startswith("postgresql") and analyze:
        # Statistics for the planner, as autovacuum would gather within a minute of a bulk
        # load (and as an operator should after one). Before the sends' lookups became one
        # index probe per user (2026-11-30), PostgreSQL without them guessed the table held a
        # few rows and scanned every device of the app per job: 277 ms a lookup with 20,000
        # devices, over 90% of PostgreSQL's CPU in the async run. --no-analyze shows how the
        # server does without them.
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE devices"))
    await db.dispose()


def postmaster(url: str) -> int | None:
    """The PostgreSQL server's process (the parent of a connection's backend) when it runs
    on this machine and /proc shows it; else None."""

    async def find() -> int | None:
        db = Database(url)
        try:
            async with db.reader() as session:
                backend = int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)
                # Read while the connection, and so its backend, is still there.
                return await asyncio.to_thread(procs.parent, backend)
        finally:
            await db.dispose()

    parent = asyncio.run(find())
    return parent if parent is not None and parent > 1 else None


async def count_sent(db: Database) -> tuple[int, int]:
    async with db.reader() as session:
        rows = dict(
            (
                await session.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                )
            ).all()
        )
    return int(rows.get("sent", 0)), int(rows.get("failed", 0))


def start_clarion(
    url: str, sink: Sink, folder: Path, port: int, processes: int, extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        CLARION_DATABASE_URL=url,
        CLARION_SECRET_KEY="bench-secret-key-0123456789",
        CLARION_AUTO_MIGRATE="true",
        CLARION_APNS_PRODUCTION_URL=sink.url,
        CLARION_APNS_SANDBOX_URL=sink.url,
        CLARION_PROVIDER_CA_FILE=sink.ca_file,
        CLARION_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    log = (folder / "clarion.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clarion",
            "serve",
            "--port",
            str(port),
            "--processes",
            str(processes),
        ],
        env=env,
        cwd=folder,
        stdout=log,
        stderr=log,
        # A session of its own, as a service manager starts a server. With the kernel's
        # autogroup scheduling (sched_autogroup_enabled, on here) a session is a scheduling
        # group: in the script's session, with wrk and nginx, the two saturated processes
        # left PostgreSQL's backends waiting for a core up to 376 ms at a time (their
        # /proc schedstat), and wrk's p99 of (b) at 30-337 ms; on their own, 9.3-10.5 ms
        # (bench/README.md, session 25).
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/push/service/status").status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("clarion did not start; see " + str(folder / "clarion.log"))


def upload_credentials(api: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = {
        "requestObject": {
            "appId": "bench-app",
            "bundle": BUNDLE,
            "keyId": "BENCHKEY01",
            "teamId": "BENCHTEAM1",
            "environment": "production",
            "privateKeyBase64": base64.b64encode(key).decode(),
        }
    }
    httpx.put(api + "/admin/app/ios/update", json=body).raise_for_status()


def bench_async(
    api: str,
    url: str,
    messages: int,
    per_request: int,
    server: int,
    same_body: bool = False,
    postgres: int | None = None,
) -> str:
    db = Database(url)
    # Encoded before the clock starts: the load client's own JSON work (100,000 messages)
    # competes with the server for the same two cores, and is not the server's cost.
    bodies = [
        json.dumps(
            {
                "requestObject": {
                    "appId": "bench-app",
                    "mode": "ASYNCHRONOUS",
                    "batch": [
                        {
                            "userId": f"u-{i}",
                            "body": {
                                "title": "Balance",
                                "body": "Message" + ("" if same_body else f" {i}"),
                            },
                        }
                        for i in range(start, min(messages, start + per_request))
                    ],
                }
            }
        ).encode()
        for start in range(0, messages, per_request)
    ]
    cpu_before = procs.cpu_seconds([server])
    pg_before = procs.server_cpu_seconds(postgres) if postgres is not None else 0.0
    started_at = utcnow()
    started = time.perf_counter()
    with httpx.Client(base_url=api, timeout=120) as client:
        for body in bodies:
            client.post(
                "/push/message/batch/send",
                content=body,
                headers={"content-type": "application/json"},
            ).raise_for_status()
    accepted = time.perf_counter() - started

    async def wait() -> tuple[int, int, float]:
        while True:
            sent, failed = await count_sent(db)
            if sent + failed >= messages:
                async with db.reader() as session:
                    last = await session.scalar(select(func.max(Delivery.updated_at)))
                await db.dispose()
                return sent, failed, (last - started_at).total_seconds()
            # Each count reads the whole ledger: ten a second were a fifth of a core of
            # PostgreSQL at 100,000 rows, taken from the server being measured.
            await asyncio.sleep(0.5)

    sent, failed, last = asyncio.run(wait())
    seen = time.perf_counter() - started
    cpu = procs.cpu_seconds([server]) - cpu_before
    done = max(sent + failed, 1)
    pg = ""
    if postgres is not None:
        pg_cpu = procs.server_cpu_seconds(postgres) - pg_before
        pg = f", PostgreSQL CPU {pg_cpu / done * 1e6:,.0f} us/push"
    # The end is the last delivery the ledger recorded (each row's time is taken after the
    # provider answered); this script's poll only notices it up to half a second later.
    return (
        f"{messages:,} async messages accepted in {accepted:.1f} s, last delivery at {last:.2f} s: "
        f"{sent / last:,.0f} pushes/s ({sent:,} sent, {failed:,} failed; seen by the poll at "
        f"{seen:.1f} s, {sent / seen:,.0f}/s); server CPU {cpu / done * 1e6:,.0f} us/push "
        f"({cpu / last:.2f} cores busy){pg}"
    )


def bench_sync(
    api: str,
    users: int,
    seconds: int,
    concurrency: int,
    folder: Path,
    server: int,
    postgres: int | None = None,
) -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "sync: skipped, wrk is not installed (apt-get install -y wrk)"
    script = folder / "sync.lua"
    script.write_text(WRK_SCRIPT.format(users=users))
    cpu_before = procs.cpu_seconds([server])
    pg_before = procs.server_cpu_seconds(postgres) if postgres is not None else 0.0
    out = subprocess.run(
        [wrk, "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script), api],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    made = re.search(r"(\d+) requests in", out)
    done = max(float(made.group(1)) if made else rps * seconds, 1.0)
    cpu = f"; server CPU {(procs.cpu_seconds([server]) - cpu_before) / done * 1e6:,.0f} us/request"
    if postgres is not None:
        pg_cpu = procs.server_cpu_seconds(postgres) - pg_before
        cpu += f", PostgreSQL CPU {pg_cpu / done * 1e6:,.0f} us/request"

    def pct(p: str) -> str:
        match = re.search(rf"\s{p}%\s+([\d.]+\w+)", out)
        return match.group(1) if match else "?"

    # wrk's maximum is a request's own; its percentiles are corrected (see bench_sync_own).
    longest = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (
        f"{rps:,.0f} sync requests/s at concurrency {concurrency} for {seconds} s: "
        f"p50 {pct('50')}, p99 {pct('99')}, max {longest.group(1) if longest else '?'}; "
        f"non-2xx: {errors.group(1) if errors else 0}{cpu}"
    )


def bench_sync_own(port: int, users: int, seconds: int, concurrency: int) -> str:
    """(b) with this script's own client (``relay.run_load``): every request's own latency.
    wrk corrects its latencies for coordinated omission (``stats_correct``): for each request
    slower than twice the mean interval between a connection's requests it adds samples for the
    requests a client sending at that rate would have had waiting, so a few stalls raise its
    p99 far above that of the requests actually made."""
    import random

    from relay import percentile, run_load

    rng = random.Random(1)

    def make(_n: int) -> tuple[str, str, bytes]:
        message = {
            "userId": f"u-{rng.randrange(users)}",
            "body": {"title": "Balance", "body": "Your balance is now $745.00", "badge": 1},
        }
        body = json.dumps({"requestObject": {"appId": "bench-app", "message": message}})
        return "POST", "/push/message/send", body.encode()

    count, latencies, statuses = asyncio.run(run_load([port], concurrency, seconds, make))
    failed = sum(n for status, n in statuses.items() if status != 200)
    return (
        f"{count / seconds:,.0f} sync requests/s at concurrency {concurrency} for {seconds} s "
        f"(own client): p50 {percentile(latencies, 0.5):.2f}ms, p99 "
        f"{percentile(latencies, 0.99):.2f}ms, max {max(latencies) * 1000:.0f}ms; "
        f"non-200: {failed}"
    )


def run(kind: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="clarion-bench-") as tmp, nginx_sink(2) as sink:
        folder = Path(tmp)
        with database(kind, folder) as url:
            asyncio.run(load_devices(url, args.messages, analyze=args.analyze))
            port = spare_port()
            extra = dict(item.split("=", 1) for item in args.env)
            proc = start_clarion(url, sink, folder, port, args.processes, extra)
            api = f"http://127.0.0.1:{port}"
            postgres = postmaster(url) if kind == "postgresql" else None
            try:
                upload_credentials(api)
                label = f"{kind}, {args.processes} process{'es' if args.processes > 1 else ''}"
                print(
                    f"send ({label}) a: "
                    + bench_async(
                        api,
                        url,
                        args.messages,
                        args.per_request,
                        proc.pid,
                        args.same_body,
                        postgres,
                    ),
                    flush=True,
                )
                if args.seconds > 0:
                    print(
                        f"send ({label}) b: "
                        + bench_sync(
                            api,
                            args.messages,
                            args.seconds,
                            args.concurrency,
                            folder,
                            proc.pid,
                            postgres,
                        ),
                        flush=True,
                    )
                if args.seconds > 0 and args.own_client:
                    print(
                        f"send ({label}) b: "
                        + bench_sync_own(port, args.messages, args.seconds, args.concurrency),
                        flush=True,
                    )
            finally:
                proc.terminate()
                proc.wait(30)
                if args.keep_log:
                    shutil.copy(folder / "clarion.log", args.keep_log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--per-request", type=int, default=5_000)
    parser.add_argument(
        "--same-body",
        action="store_true",
        help="(a): every message with the same title and body (else each its own body)",
    )
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--keep-log", type=Path, default=None)
    parser.add_argument(
        "--own-client",
        action="store_true",
        help="(b) once more with this script's own client: each request's own latency, "
        "where wrk's percentiles are corrected for coordinated omission",
    )
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="PostgreSQL: leave the loaded devices without planner statistics",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="clarion serve --processes (API + worker each)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="CLARION_X=VALUE",
        help="a setting for the clarion server (repeatable), e.g. CLARION_WORKER_CONCURRENCY=8",
    )
    args = parser.parse_args()
    for kind in ("sqlite", "postgresql") if args.db == "both" else (args.db,):
        run(kind, args)


if __name__ == "__main__":
    main()
