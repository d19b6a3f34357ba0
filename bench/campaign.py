"""A live campaign end to end: 1,000,000 devices of 1,000,000 users, pushes/s and memory.

    python bench/campaign.py [--devices 1000000] [--database postgresql|sqlite] [--workers 0]

Starts an nginx HTTP/2 sink (as ``bench/delivery.py``; ``apt-get install -y nginx-light``), a
fresh database (PostgreSQL at CLARION_BENCH_POSTGRES_DSN, default
postgresql://postgres@127.0.0.1:5432/postgres, or a SQLite file), and clarion as real processes:
``clarion serve`` with its own worker, the default deployment (on PostgreSQL, ``--workers N``
runs the serve API-only beside N ``clarion worker`` processes: on two cores that is slower,
8,067 against 10,278 pushes/s on 2026-12-01, and each process adds its own ~130 MB).
Devices are registered by one bulk SQL statement, users are added through ``user/add``
(100,000 per request), then the campaign is sent live and followed through ``detail`` (every
2 s) until ``timestampCompleted``. Prints one line per figure:

    campaign: N pushes/s (end to end: from send/live to timestampCompleted)
    baseline: N pushes/s (ApnsProvider alone to the same sink, in this process)
    peak RSS: N MB (sum over clarion processes), with RSS at 100k and at the end
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).parent))
import procs
from delivery import (
    BUNDLE,
    KEY_ID,
    TEAM_ID,
    Sink,
    _team_key,
    nginx_sink,
    run_clarion,
)

ADMIN_DSN = os.environ.get(
    "CLARION_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CLARION = [sys.executable, "-m", "clarion"]
USERS_PER_REQUEST = 100_000
SECRET = "bench-secret-key-0123456789abcdef"


def cpu_seconds(match: Any) -> float:
    """CPU used so far by the processes ``match(pid, command)`` accepts."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        if match(int(entry.name), command):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_by_role(cluster_pids: list[int]) -> dict[str, float]:
    return {
        "clarion": cpu_seconds(lambda pid, _c: pid in cluster_pids),
        "postgres": cpu_seconds(lambda _p, c: c.startswith("postgres")),
        "nginx": cpu_seconds(lambda _p, c: c.startswith("nginx")),
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fresh_postgres() -> tuple[str, str]:
    name = f"clarion_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    rest = ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]
    return name, f"postgresql+asyncpg://{rest}/{name}"


async def drop_postgres(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def register_devices(url: str, count: int, analyze: bool = True) -> float:
    """One device per user, by one INSERT ... SELECT on the server; returns seconds taken."""
    from sqlalchemy import text

    from clarion.store.db import Database

    db = Database(url)
    started = time.perf_counter()
    if db.dialect == "postgresql":
        series = "SELECT g AS n FROM generate_series(0, :count - 1) AS g"
        token = "lpad(to_hex(n), 64, '0')"
    else:
        series = (
            "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < :count - 1) "
            "SELECT n FROM s"
        )
        token = "printf('%064x', n)"
    statement = text(
        f"INSERT INTO devices (application_id, platform, token, environment, activation_id, "
        f"user_id, active, registered_at) SELECT 1, 'apns', {token}, NULL, 'act-' || n, "
        f"'user-' || n, true, CURRENT_TIMESTAMP FROM ({series}) AS series"
    )
    async with db.transaction() as session:
        await session.execute(statement, {"count": count})
    if db.dialect == "postgresql" and analyze:  # as autovacuum would (--no-analyze: not)
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE devices"))
    await db.dispose()
    return time.perf_counter() - started


class Cluster:
    def __init__(self, url: str, sink: Sink, workers: int, concurrency: int, log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.postgres = url.startswith("postgresql")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLARION_")},
            "CLARION_DATABASE_URL": url,
            "CLARION_SECRET_KEY": SECRET,
            "CLARION_APNS_PRODUCTION_URL": sink.url,
            "CLARION_APNS_SANDBOX_URL": sink.url,
            "CLARION_PROVIDER_CA_FILE": sink.ca_file,
            "CLARION_WORKER_CONCURRENCY": str(concurrency),
            "CLARION_LOG_LEVEL": "WARNING",
        }
        serve = [*CLARION, "serve", "--port", str(self.port)]
        self.commands = [serve]
        if self.postgres and workers > 0:
            self.commands = [[*serve, "--no-worker"]] + [[*CLARION, "worker"]] * workers
        self.log = log
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.processes = [
                # Each in a session of its own, as a service manager starts it (bench/send.py).
                subprocess.Popen(c, env=self.env, stdout=out, stderr=out, start_new_session=True)
                for c in self.commands
            ]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


async def ready(client: httpx.AsyncClient) -> None:
    for _ in range(300):
        try:
            if (await client.get("/push/service/status")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("clarion did not start")


def ok(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    if response.status_code != 200 or data.get("status") != "OK":
        raise SystemExit(f"{response.request.url}: {response.status_code} {response.text[:300]}")
    return data


async def bench(args: argparse.Namespace, sink: Sink, key: bytes) -> None:
    from clarion.store.db import Database

    pg_name = None
    if args.database == "postgresql":
        pg_name, url = await fresh_postgres()
    else:
        url = f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='clarion-bench-')}/clarion.db"
    db = Database(url)
    await db.upgrade()
    await db.dispose()
    log = Path(tempfile.mkdtemp(prefix="clarion-bench-log-")) / "clarion.log"
    cluster = Cluster(url, sink, args.workers, args.concurrency, log)
    cluster.start()
    try:
        async with httpx.AsyncClient(base_url=cluster.base, timeout=120) as client:
            await ready(client)
            ok(await client.post("/admin/app/create", json={"requestObject": {"appId": "bench"}}))
            ios = {
                "appId": "bench",
                "bundle": BUNDLE,
                "keyId": KEY_ID,
                "teamId": TEAM_ID,
                "environment": "production",
                "privateKeyBase64": base64.b64encode(key).decode(),
            }
            ok(await client.put("/admin/app/ios/update", json={"requestObject": ios}))
            seconds = await register_devices(url, args.devices, analyze=args.analyze)
            print(f"devices: {args.devices:,} registered by bulk SQL in {seconds:.1f} s")
            body = {"appId": "bench", "message": {"title": "Bench", "body": "A campaign push"}}
            created = ok(await client.post("/push/campaign/create", json={"requestObject": body}))
            campaign = created["responseObject"]["id"]
            slowest = 0.0
            for start in range(0, args.devices, USERS_PER_REQUEST):
                users = [f"user-{n}" for n in range(start, min(args.devices, start + 100_000))]
                began = time.perf_counter()
                url_add = f"/push/campaign/{campaign}/user/add"
                ok(await client.put(url_add, json={"requestObject": users}))
                slowest = max(slowest, time.perf_counter() - began)
            print(f"user/add: 100,000 users per request, slowest request {slowest:.2f} s")
            await follow(client, cluster, campaign, args.devices)
    finally:
        cluster.stop()
        if pg_name:
            await drop_postgres(pg_name)


async def follow(client: httpx.AsyncClient, cluster: Cluster, campaign: str, devices: int) -> None:
    began = time.perf_counter()
    cpu_before = cpu_by_role(cluster.pids)
    ok(await client.post(f"/push/campaign/send/live/{campaign}"))
    peak, at_100k, done, tick, detail_ms = 0.0, None, 0, 0, 0.0
    while True:
        rss = procs.rss_mb(cluster.pids)
        peak = max(peak, rss)
        tick += 1
        if tick % 8:  # RSS four times a second; detail (it counts the ledger) every 2 s
            await asyncio.sleep(0.25)
            continue
        asked = time.perf_counter()
        detail = ok(await client.get(f"/push/campaign/{campaign}/detail"))["responseObject"]
        detail_ms = (time.perf_counter() - asked) * 1000
        done = detail["devices"]["sent"] + detail["devices"]["failed"]
        if at_100k is None and done >= 100_000:
            at_100k = rss
        if detail["timestampCompleted"]:
            break
    elapsed = time.perf_counter() - began
    sent_at = datetime.fromisoformat(detail["timestampSent"])
    completed_at = datetime.fromisoformat(detail["timestampCompleted"])
    server_side = (completed_at - sent_at).total_seconds()
    failed = detail["devices"]["failed"]
    print(
        f"campaign: {devices / elapsed:,.0f} pushes/s end to end ({devices:,} devices in "
        f"{elapsed:.1f} s; {server_side:.1f} s from timestampSent to timestampCompleted; "
        f"{failed} failed)"
    )
    cpu_after = cpu_by_role(cluster.pids)
    shares = ", ".join(
        f"{role} {(cpu_after[role] - cpu_before[role]) / devices * 1e6:.0f}" for role in cpu_before
    )
    print(f"cpu: µs per push: {shares} (2 cores: {2e6 / devices * elapsed:.0f} µs available)")
    print(f"detail: {detail_ms:.0f} ms for the last call (it reads the campaign's counters)")
    end = procs.rss_mb(cluster.pids)
    per_process = ", ".join(f"{procs.rss_mb([pid]):.0f}" for pid in cluster.pids)
    print(
        f"peak RSS: {peak:.0f} MB (clarion processes: {len(cluster.pids)}; "
        f"at 100k pushes {at_100k or 0:.0f} MB, at the end {end:.0f} MB; per process "
        f"{per_process} MB)"
    )


async def baseline(sink: Sink, key: bytes, count: int) -> None:
    result = await run_clarion(sink, key, count, batch=500, in_flight=2)
    print(
        f"baseline: {result.rate:,.0f} pushes/s (ApnsProvider alone, {count:,} pushes, same sink)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="clarion worker processes beside an API-only serve (PostgreSQL); 0 (the default): "
        "one serve process with its own worker, the default deployment",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="jobs per worker")
    parser.add_argument("--sink-workers", type=int, default=1)
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="PostgreSQL: leave the registered devices without planner statistics",
    )
    parser.add_argument("--baseline", type=int, default=50_000, help="pushes; 0 skips it")
    args = parser.parse_args()
    key = _team_key()
    with nginx_sink(args.sink_workers) as sink:
        if args.baseline:
            asyncio.run(baseline(sink, key, args.baseline))
        asyncio.run(bench(args, sink, key))


if __name__ == "__main__":
    main()
