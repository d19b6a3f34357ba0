"""With 10% injected provider faults, an async batch of 10,000 ends with nothing lost or stuck."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from clarion.core.services import Services
from clarion.emulators.apns import ApnsEmulator
from clarion.store.jobs import queue_depth
from clarion.store.models import Application, Delivery, Device, utcnow
from tests.support import assert_ok, envelope

DEVICES = 10_000
BUNDLE = "com.example.app"


@pytest.fixture
async def apns() -> AsyncIterator[ApnsEmulator]:
    async with ApnsEmulator(record=True, seed=7) as emulator:
        emulator.register_bundle(BUNDLE)
        yield emulator


@pytest.fixture
def settings_overrides(apns: ApnsEmulator) -> dict[str, Any]:
    return {
        "apns_production_url": apns.url,
        "apns_sandbox_url": apns.url,
        "provider_ca_file": apns.ca_file,
        "delivery_backoff_base": 0.01,
        "delivery_backoff_cap": 0.05,
        "delivery_max_attempts": 10,
        "worker_poll_interval": 0.05,
    }


def token(i: int) -> str:
    return f"{i:064x}"


async def test_ten_percent_faults_end_with_every_push_delivered_or_classified(
    client: httpx.AsyncClient, services: Services, apns: ApnsEmulator
) -> None:
    key = apns.create_team_key("TEAM123456", "KEY1234567")
    assert_ok(await client.post("/admin/app/create", json=envelope(appId="mobile-app")))
    ios = envelope(
        appId="mobile-app",
        bundle=BUNDLE,
        keyId="KEY1234567",
        teamId="TEAM123456",
        environment="production",
        privateKeyBase64=base64.b64encode(key).decode(),
    )
    assert_ok(await client.put("/admin/app/ios/update", json=ios))
    async with services.db.transaction() as session:
        app_pk = await session.scalar(select(Application.id))
        await session.execute(
            insert(Device),
            [
                {
                    "application_id": app_pk,
                    "platform": "apns",
                    "token": token(i),
                    "environment": "production",
                    "activation_id": f"a-{i}",
                    "user_id": f"u-{i}",
                    "active": True,
                    "registered_at": utcnow(),
                }
                for i in range(DEVICES)
            ],
        )
    # 10% faults: 4% 429 with Retry-After 0, 4% 503, 2% of tokens permanently dead.
    apns.faults.too_many_requests_rate = 0.04
    apns.faults.retry_after = 0
    apns.faults.server_error_rate = 0.04
    dead = {token(i) for i in range(0, DEVICES, 50)}
    for t in dead:
        apns.faults.by_token[t] = (400, "BadDeviceToken")

    batch = [{"userId": f"u-{i}", "body": {"title": "hi"}} for i in range(DEVICES)]
    body = envelope(appId="mobile-app", mode="ASYNCHRONOUS", batch=batch)
    assert_ok(await client.post("/push/message/batch/send", json=body))

    worker = services.worker()
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(120):
            while True:
                await asyncio.sleep(0.2)
                depth = await queue_depth(services.db)
                if not depth.get("queued") and not depth.get("running"):
                    break
    finally:
        worker.stop()
        await task

    async with services.db.reader() as session:
        ledger = dict(
            (
                await session.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                )
            ).all()
        )
        remaining = set((await session.scalars(select(Device.token))).all())
    assert ledger == {"sent": DEVICES - len(dead), "failed": len(dead)}  # nothing pending, stuck
    delivered = Counter(p.token for p in apns.received if p.status == 200)
    assert set(delivered) == {token(i) for i in range(DEVICES)} - dead  # nothing lost
    assert max(delivered.values()) == 1  # nothing twice
    assert remaining.isdisjoint(dead) and len(remaining) == DEVICES - len(dead)
    faults = Counter(p.status for p in apns.received if p.status != 200)
    assert faults[429] > 100 and faults[503] > 100  # the faults really happened
