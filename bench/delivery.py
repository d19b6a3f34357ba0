"""APNs delivery throughput: clarion's ApnsProvider vs aioapns, one process, same local sink.

    python bench/delivery.py [--count 100000] [--batch 500] [--batches-in-flight 2]

The sink is nginx (HTTP/2 over TLS, ``return 200``) started by this script in a temporary
directory on a spare loopback port with a certificate from a throw-away CA; nothing leaves the
machine. Install nginx with ``apt-get install -y nginx-light`` if it is missing. Prints one line
per client (pushes/s and CPU µs per push in this process), the sink's CPU, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sink import Sink, nginx_sink, sink_cpu_seconds

from clarion import runloop
from clarion.heap import settle
from clarion.providers.apns import create_apns_provider
from clarion.providers.apns_payload import build_payload
from clarion.providers.base import ApnsCredentials, Notification, OutcomeKind
from clarion.providers.transport import configure_transport

TEAM_ID = "BENCHTEAM1"
KEY_ID = "BENCHKEY01"
BUNDLE = "com.example.bench"
NOTIFICATION = Notification(title="Bench", body="A push of realistic size", badge=1)


@dataclass(frozen=True)
class Result:
    name: str
    count: int
    seconds: float
    cpu_seconds: float
    sink_cpu_seconds: float
    failures: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def line(self) -> str:
        cpu = self.cpu_seconds / self.count * 1e6
        sink = self.sink_cpu_seconds / self.count * 1e6
        lost = f"; {self.failures} NOT DELIVERED" if self.failures else ""
        return (
            f"{self.name}: {self.rate:,.0f} pushes/s ({self.count:,} in {self.seconds:.2f} s; "
            f"{cpu:.0f} µs CPU per push in this process; sink {sink:.0f} µs{lost})"
        )


def _team_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _tokens(count: int) -> list[str]:
    return [f"{i:064x}" for i in range(count)]


async def run_clarion(sink: Sink, key_pem: bytes, count: int, batch: int, in_flight: int) -> Result:
    credentials = ApnsCredentials(
        bundle=BUNDLE, sandbox=False, key_id=KEY_ID, team_id=TEAM_ID, private_key_pem=key_pem
    )
    provider = create_apns_provider(credentials, base_url=sink.url, ca_file=sink.ca_file)
    await provider.send(NOTIFICATION, _tokens(10))  # connection up, token signed
    tokens = _tokens(count)
    batches = iter(range(0, count, batch))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for start in batches:
            outcomes = await provider.send(NOTIFICATION, tokens[start : start + batch])
            failures += sum(o.kind is not OutcomeKind.DELIVERED for o in outcomes)

    sink_cpu, cpu, started = sink_cpu_seconds(sink.pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    seconds = time.perf_counter() - started
    result = Result(
        "clarion apns",
        count,
        seconds,
        time.process_time() - cpu,
        sink_cpu_seconds(sink.pid) - sink_cpu,
        failures,
    )
    await provider.close()
    return result


async def run_aioapns(sink: Sink, key_pem: bytes, count: int, concurrency: int) -> Result | None:
    try:
        from aioapns import APNs, NotificationRequest, PushType
        from aioapns.connection import APNsProductionClientProtocol
    except ImportError:
        print("aioapns: not installed (pip install aioapns), baseline skipped")
        return None

    class ToSink(APNsProductionClientProtocol):
        APNS_SERVER = sink.host
        APNS_PORT = sink.port

    context = ssl.create_default_context(cafile=sink.ca_file)
    # aioapns offers no ALPN (Apple does not insist on it); nginx needs it to pick HTTP/2 over TLS.
    context.set_alpn_protocols(["h2"])
    client = APNs(
        key=key_pem.decode(), key_id=KEY_ID, team_id=TEAM_ID, topic=BUNDLE, ssl_context=context
    )
    client.pool.protocol_class = ToSink
    message = build_payload(NOTIFICATION)  # the very payload clarion sends
    tokens = iter(_tokens(count))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for token in tokens:
            result = await client.send_notification(
                NotificationRequest(
                    device_token=token, message=message, priority=10, push_type=PushType.ALERT
                )
            )
            failures += not result.is_successful

    sink_cpu, cpu, started = sink_cpu_seconds(sink.pid), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    result = Result(
        "aioapns",
        count,
        seconds,
        time.process_time() - cpu,
        sink_cpu_seconds(sink.pid) - sink_cpu,
        failures,
    )
    client.pool.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="pushes per client")
    parser.add_argument("--batch", type=int, default=500, help="tokens per provider.send call")
    parser.add_argument("--batches-in-flight", type=int, default=2)
    parser.add_argument("--aioapns-concurrency", type=int, default=1000)
    parser.add_argument("--aioapns-count", type=int, default=None, help="default: --count")
    parser.add_argument("--sink-workers", type=int, default=1, help="nginx worker processes")
    parser.add_argument("--skip-aioapns", action="store_true")
    parser.add_argument(
        "--gc",
        choices=["settled", "default"],
        default="settled",
        help="settled: the collector as in clarion's server and worker processes "
        "(clarion.heap.settle), for both clients; default: CPython's defaults",
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of both clients: uvloop, as clarion's processes (clarion.runloop), "
        "or asyncio's",
    )
    parser.add_argument(
        "--runtime-threads",
        type=int,
        default=None,
        help="threads of the HTTP client's Tokio runtime (0: pyreqwest's single-threaded "
        "runtime); default: clarion's default",
    )
    args = parser.parse_args()
    if args.runtime_threads is not None:
        configure_transport(args.runtime_threads)
    key_pem = _team_key()
    if args.gc == "settled":
        settle()
    with nginx_sink(args.sink_workers) as sink:
        run = runloop.run if args.loop == "uvloop" else asyncio.run
        ours = run(run_clarion(sink, key_pem, args.count, args.batch, args.batches_in_flight))
        print(ours.line(), flush=True)
        if args.skip_aioapns:
            return
        theirs = run(
            run_aioapns(sink, key_pem, args.aioapns_count or args.count, args.aioapns_concurrency)
        )
        if theirs is not None:
            print(theirs.line())
            print(f"ratio clarion/aioapns: {ours.rate / theirs.rate:.1f}x")


if __name__ == "__main__":
    main()
