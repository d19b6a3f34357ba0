"""`clarion campaign send ID --follow` as a real command, with a worker in this process."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from datetime import UTC, datetime

from rich.console import Console
from sqlalchemy import insert, select

from clarion.cli import follow_campaign
from clarion.core.services import Services
from clarion.providers.base import Notification
from clarion.store.models import Application, Device
from tests.conftest import TEST_SECRET_KEY

CLARION = [sys.executable, "-m", "clarion"]


def command_env(services: Services) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    return {
        **base,
        "CLARION_DATABASE_URL": services.settings.database_url,
        "CLARION_SECRET_KEY": TEST_SECRET_KEY,
        "COLUMNS": "120",
    }


async def campaign_with_devices(services: Services, devices: int) -> int:
    await services.apps.create("mobile-app")
    async with services.db.transaction() as session:
        app_pk = await session.scalar(select(Application.id))
        rows = [
            {
                "application_id": app_pk,
                "platform": "fcm",  # no FCM credentials: every push fails, and is counted
                "token": f"token-{i}",
                "activation_id": f"act-{i}",
                "user_id": f"user-{i}",
                "active": True,
                "registered_at": datetime.now(UTC),
            }
            for i in range(devices)
        ]
        await session.execute(insert(Device), rows)
    campaign = await services.campaigns.create("mobile-app", Notification(title="Hi"))
    await services.campaigns.add_users(campaign, [f"user-{i}" for i in range(devices)])
    return campaign


async def test_send_follow_shows_progress_until_the_campaign_completes(
    services: Services,
) -> None:
    campaign = await campaign_with_devices(services, 5)
    proc = await asyncio.create_subprocess_exec(
        *CLARION,
        "campaign",
        "send",
        str(campaign),
        "--follow",
        env=command_env(services),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    worker = services.worker()
    task = asyncio.create_task(worker.run())
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        await _reap(proc)  # a test that failed leaves no process behind
        worker.stop()
        await task
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert f"campaign {campaign} scheduled" in text
    assert f"campaign {campaign} completed: 0 sent, 5 failed of 5 devices" in text
    assert (await services.campaigns.detail(campaign)).sent


async def test_send_of_a_sent_or_unknown_campaign_fails_with_a_message(
    services: Services,
) -> None:
    campaign = await campaign_with_devices(services, 1)
    await services.campaigns.send_live(campaign)
    again = await run(services, "campaign", "send", str(campaign))
    assert again[0] == 1 and "already sent" in again[1]
    unknown = await run(services, "campaign", "send", "999")
    assert unknown[0] == 1 and "does not exist" in unknown[1]
    # Past PostgreSQL's integer: the same message, not a traceback.
    huge = await run(services, "campaign", "send", "99999999999")
    assert huge[0] == 1 and "does not exist" in huge[1] and "Traceback" not in huge[1]


async def test_follow_refuses_an_unsent_or_unknown_campaign_instead_of_waiting_forever(
    services: Services,
) -> None:
    campaign = await campaign_with_devices(services, 1)
    unsent = await run(services, "campaign", "follow", str(campaign))
    assert unsent[0] == 1 and "was not sent" in unsent[1]
    for unknown in ("999", "99999999999"):
        code, err = await run(services, "campaign", "follow", unknown)
        assert code == 1 and "does not exist" in err and "Traceback" not in err


async def test_follow_says_when_nothing_moves_for_a_while(services: Services) -> None:
    # No worker runs: the bar alone sat at 0/? with no end.
    campaign = await campaign_with_devices(services, 2)
    await services.campaigns.send_live(campaign)
    console = Console(file=io.StringIO(), width=200)
    following = asyncio.create_task(follow_campaign(services, campaign, console, stall=1.0))
    try:
        for _ in range(100):
            if "no progress for 1 s" in console.file.getvalue():
                break
            await asyncio.sleep(0.1)
        said = console.file.getvalue()
        assert "no progress for 1 s" in said and "is one running?" in said
        assert said.count("no progress") == 1
        # Once a worker runs, the campaign completes and the follow ends.
        worker = services.worker()
        working = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(following, timeout=30)
        finally:
            worker.stop()
            await working
    finally:
        following.cancel()
    assert (
        f"campaign {campaign} completed: 0 sent, 2 failed of 2 devices" in console.file.getvalue()
    )


async def run(services: Services, *args: str) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLARION, *args, env=command_env(services), stderr=subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        await _reap(proc)
    return proc.returncode, err.decode()


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
