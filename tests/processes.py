"""Real processes for reliability tests: an APNs emulator in a thread, clarion as subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from clarion.emulators.apns import ApnsEmulator

CLARION = [sys.executable, "-m", "clarion"]
BUNDLE = "com.example.app"
TEAM, KEY = "TEAM123456", "KEY1234567"


class ThreadedApns:
    """An APNs emulator on its own event loop in a background thread."""

    def __init__(self) -> None:
        self.emulator = ApnsEmulator(max_concurrent_streams=1000)
        self.key_pem = self.emulator.create_team_key(TEAM, KEY)
        self.emulator.register_bundle(BUNDLE)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedApns:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def delivered_tokens(self) -> list[str]:
        return [p.token for p in list(self.emulator.received) if p.status == 200]


def clarion_env(database_url: str, apns: ThreadedApns, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        CLARION_DATABASE_URL=database_url,
        CLARION_SECRET_KEY="reliability-test-secret-key",
        CLARION_APNS_PRODUCTION_URL=apns.emulator.url,
        CLARION_APNS_SANDBOX_URL=apns.emulator.url,
        CLARION_PROVIDER_CA_FILE=apns.emulator.ca_file,
        CLARION_AUTO_MIGRATE="true",
        CLARION_LOG_LEVEL="INFO",
        CLARION_DELIVERY_BACKOFF_BASE="0.05",
        CLARION_DELIVERY_BACKOFF_CAP="0.5",
        CLARION_WORKER_LEASE_SECONDS="5",
        CLARION_WORKER_POLL_INTERVAL="0.1",
    )
    env.update(extra)
    return env


class Fleet:
    """clarion processes started for a test; every one is killed at the end."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = (cwd / "clarion.log").open("ab")

    def serve(self, port: int, *args: str) -> str:
        proc = subprocess.Popen(
            [*CLARION, "serve", "--port", str(port), *args],
            cwd=self.cwd,
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"clarion serve exited with {proc.returncode}")
            try:
                if httpx.get(url + "/push/service/status", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("clarion serve did not start")

    def worker(self, *args: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [*CLARION, "worker", *args],
                cwd=self.cwd,
                env=self.env,
                stdout=self.log,
                stderr=self.log,
            )
        )

    def kill9(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(10)
        self.procs.clear()

    def terminate(self) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in self.procs]
        self.procs.clear()
        return codes


@contextmanager
def fleet(cwd: Path, env: dict[str, str]) -> Iterator[Fleet]:
    started = Fleet(cwd, env)
    try:
        yield started
    finally:
        started.kill9()
        started.log.close()
