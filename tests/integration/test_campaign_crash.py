"""A live campaign to 100,000 devices survives kill -9 of every clarion process mid-fan-out.

Real processes: ``clarion serve`` (with its worker on SQLite; API only on PostgreSQL, where two
``clarion worker`` processes share the fan-out), pointed at an APNs emulator that runs in this
process in a background thread with its own event loop. Devices are registered by bulk SQL.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from clarion.core.fanout import SEND_CHUNK
from clarion.core.services import Services
from clarion.emulators.apns import ApnsEmulator
from clarion.emulators.apns_connection import ReceivedPush
from clarion.store.models import Application, Delivery, Device
from tests.conftest import TEST_SECRET_KEY
from tests.fake_powerauth import free_port
from tests.support import assert_ok, envelope

pytestmark = pytest.mark.slow

DEVICES = 100_000
SHARED = 100  # tokens registered a second time under another campaign user
BUNDLE = "com.example.crash"
CONCURRENCY = 4
CLARION = [sys.executable, "-m", "clarion"]


class EmulatorThread:
    """An APNs emulator serving from its own thread and event loop; counts 200s per token."""

    def __init__(self) -> None:
        self.emulator = ApnsEmulator(record=False, strict_http2=False)
        self.key = self.emulator.create_team_key("TEAM123456", "KEY1234567")
        self.emulator.register_bundle(BUNDLE)
        self.counts: Counter[str] = Counter()
        self.emulator.on_receive = self._received
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _received(self, push: ReceivedPush) -> None:
        if push.status == 200:
            self.counts[push.token] += 1

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.emulator.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.emulator.stop())

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def pushes(self) -> int:
        return sum(self.counts.values())


@pytest.fixture
def apns() -> Iterator[EmulatorThread]:
    with EmulatorThread() as emulator:
        yield emulator


class Cluster:
    """clarion serve (and workers) as real processes; kill -9 and restart them."""

    def __init__(self, services: Services, apns: EmulatorThread, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.postgres = services.db.dialect == "postgresql"
        base = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
        self.env = {
            **base,
            "CLARION_DATABASE_URL": services.settings.database_url,
            "CLARION_SECRET_KEY": TEST_SECRET_KEY,
            "CLARION_APNS_PRODUCTION_URL": apns.emulator.url,
            "CLARION_APNS_SANDBOX_URL": apns.emulator.url,
            "CLARION_PROVIDER_CA_FILE": apns.emulator.ca_file,
            "CLARION_WORKER_LEASE_SECONDS": "3",
            "CLARION_WORKER_POLL_INTERVAL": "0.2",
            "CLARION_WORKER_CONCURRENCY": str(CONCURRENCY),
            "CLARION_CAMPAIGN_BATCH_SIZE": "2000",
            "CLARION_LOG_LEVEL": "WARNING",
        }
        self.log = tmp_path / "clarion.log"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        commands = [[*CLARION, "serve", "--port", str(self.port)]]
        if self.postgres:
            commands = [[*commands[0], "--no-worker"], [*CLARION, "worker"], [*CLARION, "worker"]]
        with self.log.open("ab") as out:
            self.processes = [
                subprocess.Popen(c, env=self.env, stdout=out, stderr=out) for c in commands
            ]

    @property
    def workers(self) -> int:
        return 2 if self.postgres else 1

    def kill(self) -> None:
        for proc in self.processes:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    async def ready(self, client: httpx.AsyncClient, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in self.processes), self.log.read_text()[-3000:]
            try:
                if (await client.get("/push/service/status")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError("clarion did not become ready")


async def register_devices(services: Services, app_id: str) -> list[str]:
    """100,000 APNs registrations (one user each) by bulk SQL, plus second registrations."""
    async with services.db.transaction() as session:
        app_pk = await session.scalar(select(Application.id).where(Application.app_id == app_id))
        now = datetime.now(UTC)
        tokens = [f"{i:064x}" for i in range(DEVICES)]
        rows: list[dict[str, Any]] = [
            {
                "application_id": app_pk,
                "platform": "apns",
                "token": token,
                "environment": None,
                "activation_id": f"act-{i}",
                "user_id": f"user-{i}",
                "active": True,
                "registered_at": now,
            }
            for i, token in enumerate(tokens)
        ]
        # A phone shared by two users: the token of user-i registered again for user-(i+1).
        rows += [
            {**rows[i], "activation_id": f"act-shared-{i}", "user_id": f"user-{i + 1}"}
            for i in range(0, SHARED * 7, 7)
        ]
        for i in range(0, len(rows), 20_000):
            await session.execute(insert(Device), rows[i : i + 20_000])
    return tokens


async def wait_for(condition: Callable[[], bool], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def progress(client: httpx.AsyncClient, campaign: str) -> dict[str, Any]:
    data = assert_ok(await client.get(f"/push/campaign/{campaign}/detail"))
    found: dict[str, Any] = data["responseObject"]
    return found


async def test_kill_9_mid_fan_out_then_restart_delivers_every_device(
    services: Services, apns: EmulatorThread, tmp_path: Path
) -> None:
    cluster = Cluster(services, apns, tmp_path)
    cluster.start()
    try:
        async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
            await cluster.ready(client)
            assert_ok(await client.post("/admin/app/create", json=envelope(appId="crash-app")))
            ios = envelope(
                appId="crash-app",
                bundle=BUNDLE,
                keyId="KEY1234567",
                teamId="TEAM123456",
                environment="production",
                privateKeyBase64=base64.b64encode(apns.key).decode(),
            )
            assert_ok(await client.put("/admin/app/ios/update", json=ios))
            tokens = await register_devices(services, "crash-app")
            created = await client.post(
                "/push/campaign/create",
                json=envelope(appId="crash-app", message={"title": "Crash", "body": "test"}),
            )
            campaign = assert_ok(created)["responseObject"]["id"]
            users = [f"user-{i}" for i in range(DEVICES)]
            started = time.perf_counter()
            url = f"/push/campaign/{campaign}/user/add"
            assert_ok(await client.put(url, json={"requestObject": users}))
            print(f"user/add of {DEVICES} users: {time.perf_counter() - started:.2f} s")
            assert_ok(await client.post(f"/push/campaign/send/live/{campaign}"))

            # Let the fan-out get going, then kill every clarion process without warning.
            await wait_for(lambda: apns.pushes >= DEVICES // 4, timeout=60)
            cluster.kill()
            at_kill = apns.pushes
            await asyncio.sleep(0.5)  # what was on the wire lands (or not) at the emulator
            cluster.start()
            await cluster.ready(client)
            state = await progress(client, campaign)
            # Generous: on a slow 2-core machine, beside the rest of the suite, the 75,000 or
            # so pushes left took over 90 s (a run that was on its way, not stuck).
            deadline = time.monotonic() + 240
            while state["timestampCompleted"] is None and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                state = await progress(client, campaign)
    finally:
        cluster.stop()

    assert state["devices"] == {"total": DEVICES, "sent": DEVICES, "failed": 0, "pending": 0}
    assert set(apns.counts) == set(tokens)  # every device, the shared phones included
    repeats = apns.pushes - DEVICES
    # A repeat is a push that reached APNs but whose ledger row was not yet written when its
    # process died: at most one chunk per job in hand, per killed worker.
    bound = cluster.workers * CONCURRENCY * SEND_CHUNK
    print(
        f"{DEVICES} devices: {at_kill} pushes before kill -9, {repeats} repeats after "
        f"restart (bound {bound}), {max(apns.counts.values())} pushes at most per device"
    )
    assert 0 < at_kill < DEVICES
    assert 0 <= repeats <= bound
    assert max(apns.counts.values()) <= 2
    async with services.db.reader() as session:
        ledger = await session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.status == "sent")
        )
    assert ledger == DEVICES
