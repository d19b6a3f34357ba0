"""Nothing accepted is lost: kill -9 clarion mid-delivery, start it again, count every push.

Real processes and signals: clarion runs as subprocesses (on PostgreSQL as an API process and two
`clarion worker` processes), the APNs emulator runs in this process and records every push.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert, select

from clarion.store.db import Database
from clarion.store.models import Application, Device, utcnow
from tests.conftest import _pg_admin, _pg_url, run_blocking
from tests.fake_powerauth import free_port
from tests.processes import BUNDLE, KEY, TEAM, ThreadedApns, clarion_env, fleet

DEVICES = 10_000


def token(i: int) -> str:
    return f"{i:064x}"


async def prepare(url: str, apns: ThreadedApns) -> None:
    """Schema, an app, and DEVICES devices of DEVICES users, by bulk SQL."""
    db = Database(url)
    await db.upgrade()
    async with db.transaction() as session:
        session.add(Application(app_id="mobile-app", created_at=utcnow()))
    async with db.transaction() as session:
        app_pk = await session.scalar(select(Application.id))
        now = utcnow()
        await session.execute(
            insert(Device),
            [
                {
                    "application_id": app_pk,
                    "platform": "apns",
                    "token": token(i),
                    "environment": "production",
                    "activation_id": f"act-{i}",
                    "user_id": f"user-{i}",
                    "active": True,
                    "registered_at": now,
                }
                for i in range(DEVICES)
            ],
        )
    await db.dispose()


def upload_credentials(api: str, apns: ThreadedApns) -> None:
    body = {
        "requestObject": {
            "appId": "mobile-app",
            "bundle": BUNDLE,
            "keyId": KEY,
            "teamId": TEAM,
            "environment": "production",
            "privateKeyBase64": base64.b64encode(apns.key_pem).decode(),
        }
    }
    assert httpx.put(api + "/admin/app/ios/update", json=body).status_code == 200


def send_async_batches(api: str) -> None:
    with httpx.Client(base_url=api, timeout=60) as client:
        for start in range(0, DEVICES, 2_500):
            batch = [
                {"userId": f"user-{i}", "body": {"title": "Hello", "body": f"message {i}"}}
                for i in range(start, start + 2_500)
            ]
            body = {
                "requestObject": {"appId": "mobile-app", "mode": "ASYNCHRONOUS", "batch": batch}
            }
            response = client.post("/push/message/batch/send", json=body)
            assert response.status_code == 200, response.text


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run_crash_scenario(tmp_path: Path, url: str, *, workers: int) -> None:
    with ThreadedApns() as apns:
        run_blocking(prepare(url, apns))
        env = clarion_env(url, apns)
        port = free_port()
        with fleet(tmp_path, env) as clarion:
            api = clarion.serve(port, *(["--no-worker"] if workers else []))
            for _ in range(workers):
                clarion.worker()
            upload_credentials(api, apns)
            send_async_batches(api)  # answered OK: from here on nothing may be lost
            wait_for(
                lambda: len(apns.delivered_tokens()) >= DEVICES // 4, 60, "deliveries to start"
            )
            clarion.kill9()
            time.sleep(1.0)  # the emulator finishes answering what reached it before the kill
            at_kill = apns.delivered_tokens()
            assert len(set(at_kill)) < DEVICES, "the kill came too late to test anything"

            clarion.serve(port, *(["--no-worker"] if workers else []))
            for _ in range(workers):
                clarion.worker()
            wait_for(lambda: len(set(apns.delivered_tokens())) >= DEVICES, 90, "every device")
            time.sleep(0.5)  # let stragglers arrive before counting duplicates
            # SIGTERM is graceful: uvicorn finishes its shutdown and then re-raises the signal.
            codes = clarion.terminate()
            assert codes[0] in (0, -15) and codes[1:] == [0] * workers, codes
            assert "Application shutdown complete" in (tmp_path / "clarion.log").read_text()

        delivered = apns.delivered_tokens()
        counts = Counter(delivered)
        assert set(counts) == {token(i) for i in range(DEVICES)}  # none lost
        duplicates = {t: n for t, n in counts.items() if n > 1}
        # A duplicate is only acceptable for a push the provider accepted before the kill,
        # whose outcome the killed process had not committed yet.
        before_kill = set(at_kill)
        assert set(duplicates) <= before_kill, "a duplicate not explained by the kill"
        assert all(n == 2 for n in duplicates.values())
        print(
            f"\ncrash test: {DEVICES} devices, {len(set(at_kill))} delivered before kill -9, "
            f"{len(duplicates)} duplicates (all accepted before the kill, outcome not yet "
            f"committed), {DEVICES - len(set(at_kill))} delivered after restart"
        )


def test_sqlite_kill_9_loses_nothing(tmp_path: Path) -> None:
    run_crash_scenario(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'clarion.db'}", workers=0)


def test_postgresql_two_workers_kill_9_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    name = f"clarion_crash_{os.getpid()}_{secrets.token_hex(3)}"
    run_blocking(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        run_crash_scenario(tmp_path, _pg_url(name), workers=2)
    finally:
        run_blocking(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
