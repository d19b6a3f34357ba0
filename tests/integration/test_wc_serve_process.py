"""WalletConnect against real `clarion serve` processes: the README's curl walkthrough, and a
message id that stays used across a restart and in a second process on the same database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.fake_powerauth import free_port

CLARION = [sys.executable, "-m", "clarion"]
REGISTER = {"client_id": "did:key:z6MkwalletDemo", "type": "noop", "token": "demo-token"}
PUSH = {"id": "msg-1", "payload": {"topic": "demo", "flags": 1, "blob": "c2VhbGVk"}}


@contextmanager
def serve(folder: Path, **settings: str) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(settings)
    with (folder / f"serve-{port}.log").open("wb") as log:
        proc = subprocess.Popen(
            [*CLARION, "serve", "--port", str(port)], cwd=folder, env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "clarion serve exited early"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "clarion serve did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def pushes(url: str, result: str) -> float:
    metrics = httpx.get(url + "/metrics").text
    found = re.search(rf'clarion_wc_pushes_total{{result="{result}"}} ([0-9.]+)', metrics)
    return float(found.group(1)) if found else 0.0


def test_readme_walkthrough_and_dedup_across_restart_and_processes(tmp_path: Path) -> None:
    with serve(tmp_path) as url:
        assert httpx.post(url + "/clients", json=REGISTER).json() == {"status": "OK"}
        assert httpx.post(url + "/clients/z6MkwalletDemo", json=PUSH).json() == {"status": "OK"}
        assert pushes(url, "sent") == 1
    # Restarted, and a second process beside it, on the same SQLite file.
    with serve(tmp_path) as first, serve(tmp_path) as second:
        for url in (first, second):
            again = httpx.post(url + "/clients/z6MkwalletDemo", json=PUSH)
            assert again.status_code == 200 and again.json() == {"status": "OK"}
            assert pushes(url, "duplicate") == 1 and pushes(url, "sent") == 0
        new = httpx.post(second + "/clients/z6MkwalletDemo", json={**PUSH, "id": "msg-2"})
        assert new.status_code == 200 and pushes(second, "sent") == 1


def test_a_forwarded_for_header_from_an_untrusted_peer_does_not_dodge_the_rate_limit(
    tmp_path: Path,
) -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 unless told not to; clarion believes it
    only from CLARION_WC_TRUSTED_PROXIES (unset here)."""
    with serve(tmp_path, CLARION_WC_RATE_LIMIT_PER_MINUTE="2") as url:
        statuses = [httpx.get(url + "/rate_limit_test").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        forged = httpx.get(url + "/rate_limit_test", headers={"X-Forwarded-For": "9.9.9.9"})
        assert forged.status_code == 429
