"""WalletConnect relay load: unique pushes against a real ``clarion serve``, SQLite and PostgreSQL.

    python bench/relay.py [--clients 10000] [--concurrency 64] [--seconds 30]
                          [--db sqlite,postgresql] [--type apns|noop] [--servers 1]

For each database: start ``clarion serve`` in a temporary folder (PostgreSQL: a fresh database,
migrated, dropped afterwards), register ``--clients`` clients, then push unique message ids to
random clients at ``--concurrency`` for ``--seconds``, and print requests/s with p50 / p99
latency and the server's CPU per push. ``--type apns`` (the default) delivers every push through
the real APNs provider to nginx as an HTTP/2 + TLS sink (``bench/sink.py``; the default tenant's
key comes from ``CLARION_WC_APNS_*``); ``--type noop`` measures the server, the store and dedup
without a provider. The baseline in the same run is ``GET /health`` at the same concurrency: the
ceiling of the HTTP stack alone.

The load comes from a small raw HTTP/1.1 keep-alive client (one connection per concurrent
request) so that the client's own cost stays well below the server's on a shared 2-core box.
The per-address rate limit is switched off (``CLARION_WC_RATE_LIMIT_PER_MINUTE=0``): every
request comes from 127.0.0.1 and registrations would otherwise be limited to 100 a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import procs

PG_ADMIN = os.environ.get(
    "CLARION_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BLOB = "x" * 300  # the size of a typical encrypted WalletConnect notify message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Connection:
    """One keep-alive HTTP/1.1 connection; requests with a body, answers with Content-Length."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def run_load(
    ports: list[int],
    concurrency: int,
    seconds: float,
    make: Callable[[int], tuple[str, str, bytes]],
) -> tuple[int, list[float], dict[int, int]]:
    """Each of ``concurrency`` connections sends ``make(n)`` requests back to back."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = 0
    deadline = time.perf_counter() + seconds

    async def worker(port: int) -> None:
        nonlocal counter
        conn = Connection(port)
        await conn.open()
        while time.perf_counter() < deadline:
            counter += 1
            method, path, body = make(counter)
            started = time.perf_counter()
            status = await conn.request(method, path, body)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
        conn.writer.close()

    # The collector off while measuring: this client's own full collections (55-159 ms, seen
    # in session 24 with a client like it) would count as the server's latency.
    gc.disable()
    try:
        await asyncio.gather(*(worker(ports[i % len(ports)]) for i in range(concurrency)))
    finally:
        gc.enable()
    return len(latencies), latencies, statuses


async def register(ports: list[int], clients: int, concurrency: int, push_type: str) -> float:
    queue = list(range(clients))
    started = time.perf_counter()

    async def worker(port: int) -> None:
        conn = Connection(port)
        await conn.open()
        while queue:
            n = queue.pop()
            token = f"{n:064x}"  # APNs tokens are hex
            body = json.dumps({"client_id": f"client-{n}", "type": push_type, "token": token})
            status = await conn.request("POST", "/clients", body.encode())
            if status != 200:
                raise SystemExit(f"registration failed with HTTP {status}")
        conn.writer.close()

    await asyncio.gather(*(worker(ports[i % len(ports)]) for i in range(concurrency)))
    return clients / (time.perf_counter() - started)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


@contextmanager
def server(
    database_url: str, env_extra: dict[str, str], http_server: str = "uvicorn", processes: int = 1
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        CLARION_DATABASE_URL=database_url,
        CLARION_SECRET_KEY="bench-secret-key-0123456789abcdef",
        CLARION_WC_RATE_LIMIT_PER_MINUTE="0",
        CLARION_LOG_LEVEL="WARNING",
        **env_extra,
    )
    folder = tempfile.mkdtemp(prefix="clarion-bench-")
    if not database_url.startswith("sqlite"):
        subprocess.run(
            [sys.executable, "-m", "clarion", "migrate"],
            env=env,
            cwd=folder,
            check=True,
            capture_output=True,
        )
    log = open(Path(folder) / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clarion",
            "serve",
            "--port",
            str(port),
            "--server",
            http_server,
            "--processes",
            str(processes),
        ],
        env=env,
        cwd=folder,
        stdout=log,
        stderr=log,
        start_new_session=True,  # a session of its own, as bench/send.py explains
    )
    try:
        wait_ready(port, proc)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("clarion serve exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("clarion serve did not start")


async def pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        folder = tempfile.mkdtemp(prefix="clarion-bench-db-")
        yield f"sqlite:///{folder}/clarion.db"
        return
    name = f"clarion_bench_{secrets.token_hex(4)}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def server_cpu(pids: list[int]) -> float:
    return procs.cpu_seconds(pids)


async def measure(kind: str, ports: list[int], pids: list[int], args: argparse.Namespace) -> None:
    rate = await register(ports, args.clients, args.concurrency, args.type)
    print(f"{kind}: registered {args.clients} clients at {rate:,.0f}/s")
    seconds = min(5.0, args.seconds)
    cpu_before = server_cpu(pids)
    health, _, _ = await run_load(
        ports, args.concurrency, seconds, lambda n: ("GET", "/health", b"")
    )
    health_cpu_us = (server_cpu(pids) - cpu_before) / health * 1e6
    run_id = secrets.token_hex(3)

    def push(n: int) -> tuple[str, str, bytes]:
        client = random.randrange(args.clients)
        body = {"id": f"{run_id}-{n}", "payload": {"topic": "t" * 64, "flags": 1, "blob": BLOB}}
        return "POST", f"/clients/client-{client}", json.dumps(body).encode()

    cpu_before = server_cpu(pids)
    client_before = time.process_time()
    count, latencies, statuses = await run_load(ports, args.concurrency, args.seconds, push)
    cpu = server_cpu(pids) - cpu_before
    client_cpu = time.process_time() - client_before
    print(
        f"{kind}: relay pushes {count / args.seconds:,.0f} requests/s, "
        f"p50 {percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
        f"server CPU {cpu / count * 1e6:,.0f} us/push ({cpu / args.seconds:.2f} cores busy), "
        f"statuses {statuses}; load client CPU {client_cpu / count * 1e6:,.0f} us/request; "
        f"baseline GET /health {health / seconds:,.0f} requests/s, {health_cpu_us:,.0f} us/request"
    )


@contextmanager
def apns_sink() -> Iterator[dict[str, str]]:
    """nginx as the APNs endpoint (bench/sink.py), and the default tenant's APNs key for it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from sink import nginx_sink

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    folder = Path(tempfile.mkdtemp(prefix="clarion-bench-key-"))
    (folder / "AuthKey.p8").write_bytes(key)
    with nginx_sink(1) as sink:
        yield {
            "CLARION_APNS_PRODUCTION_URL": sink.url,
            "CLARION_APNS_SANDBOX_URL": sink.url,
            "CLARION_PROVIDER_CA_FILE": sink.ca_file,
            "CLARION_WC_APNS_TOPIC": "com.example.wallet",
            "CLARION_WC_APNS_KEY_FILE": str(folder / "AuthKey.p8"),
            "CLARION_WC_APNS_KEY_ID": "BENCHKEY01",
            "CLARION_WC_APNS_TEAM_ID": "BENCHTEAM1",
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument(
        "--type", choices=["apns", "noop"], default="apns", help="push type of the clients"
    )
    parser.add_argument(
        "--servers", type=int, default=1, help="clarion serve processes on one database"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="clarion serve --processes: one port, N processes"
    )
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    args = parser.parse_args()
    for kind in args.db.split(","):
        with database(kind) as url, ExitStack() as stack:
            env = stack.enter_context(apns_sink()) if args.type == "apns" else {}
            servers = [
                stack.enter_context(server(url, env, args.server, args.processes))
                for _ in range(args.servers)
            ]
            label = f"{kind} {args.type} {args.server}"
            label += f" x{args.servers} servers" if args.servers > 1 else ""
            label += f", {args.processes} processes" if args.processes > 1 else ""
            asyncio.run(measure(label, [p for p, _ in servers], [s.pid for _, s in servers], args))


if __name__ == "__main__":
    main()
