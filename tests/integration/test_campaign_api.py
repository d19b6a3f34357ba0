"""PowerAuth campaigns over HTTP: management, test and live sends through the emulators."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from clarion.core import fanout as fanout_module
from clarion.core import worker as worker_module
from clarion.core.sender import Target
from clarion.core.services import Services
from clarion.store.jobs import queue_depth
from clarion.store.models import Campaign, CampaignPage, CampaignUser, Delivery, Device, Job
from tests.integration.test_messages_api import (
    ANDROID_TOKEN,
    IOS_TOKEN,
    Emulators,
    emulators,
    register,
    run_worker_until_idle,
    setup_app,
)
from tests.support import assert_error, assert_ok, envelope

__all__ = ["emulators"]  # the fixture, shared with the message tests

MESSAGE = {
    "title": "Balance update",
    "titleLocKey": "balance.update.title",
    "body": "Your balance is now $745.00",
    "badge": 3,
    "sound": "default",
    "category": "balance-update",
    "collapseKey": "balance-update",
    "validUntil": "2099-10-12T11:20:04+00:00",
    "extras": {"_comment": "Any custom data."},
}


@pytest.fixture
def settings_overrides(emulators: Emulators) -> dict[str, Any]:
    return {
        "apns_production_url": emulators.apns.url,
        "apns_sandbox_url": emulators.apns.url,
        "provider_ca_file": emulators.apns.ca_file,
        "fcm_base_url": emulators.fcm.url,
        "delivery_backoff_base": 0.01,
        "delivery_backoff_cap": 0.05,
        "campaign_batch_size": 3,  # many small pages, so paging is exercised
        "multiple_activations": True,  # one token may be registered under several users
    }


@pytest.fixture
async def app_ready(client: httpx.AsyncClient, emulators: Emulators) -> Emulators:
    await setup_app(client, emulators)
    return emulators


async def create(client: httpx.AsyncClient, message: dict[str, Any] | None = None) -> str:
    body = envelope(appId="mobile-app", message=message or MESSAGE)
    data = assert_ok(await client.post("/push/campaign/create", json=body))
    campaign_id: str = data["responseObject"]["id"]
    return campaign_id


async def add_users(client: httpx.AsyncClient, campaign: str, users: list[str]) -> None:
    url = f"/push/campaign/{campaign}/user/add"
    assert_ok(await client.put(url, json={"requestObject": users}))


async def live_campaign(client: httpx.AsyncClient, tokens: list[str]) -> str:
    """A campaign to ``user-i`` (activation ``act-i``, iOS token ``tokens[i]``), sent live."""
    for i, token in enumerate(tokens):
        await register(client, token, f"act-{i}", user=f"user-{i}")
    campaign = await create(client)
    await add_users(client, campaign, [f"user-{i}" for i in range(len(tokens))])
    assert_ok(await client.post(f"/push/campaign/send/live/{campaign}"))
    return campaign


async def planned_campaign(
    client: httpx.AsyncClient, services: Services, tokens: list[str]
) -> tuple[str, list[CampaignPage]]:
    """``live_campaign``, its plan run to the end: the campaign and its pages, in order."""
    campaign = await live_campaign(client, tokens)
    assert await services.fanout.plan(int(campaign)) is None
    async with services.db.reader() as session:
        pages = (await session.scalars(select(CampaignPage).order_by(CampaignPage.upto))).all()
    return campaign, list(pages)


async def detail(client: httpx.AsyncClient, campaign: str) -> dict[str, Any]:
    data = assert_ok(await client.get(f"/push/campaign/{campaign}/detail"))
    result: dict[str, Any] = data["responseObject"]
    return result


async def test_created_campaign_is_listed_with_its_message(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    campaign = await create(client)
    assert campaign.isdigit()
    found = await detail(client, campaign)
    assert found["id"] == campaign and found["appId"] == "mobile-app"
    assert found["sent"] is False and found["message"] == MESSAGE
    assert found["timestampSent"] is None and found["timestampCreated"]
    assert found["devices"] == {"total": 0, "sent": 0, "failed": 0, "pending": 0}
    # all=false (the default) lists only sent campaigns.
    assert assert_ok(await client.get("/push/campaign/list"))["responseObject"] == []
    listed = assert_ok(await client.get("/push/campaign/list?all=true"))["responseObject"]
    assert [c["id"] for c in listed] == [campaign]
    assert "devices" not in listed[0]  # the detail's extension, not the list's
    assert listed[0]["message"]["title"] == "Balance update"


async def test_users_are_kept_once_paged_and_removed(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    campaign = await create(client)
    await add_users(client, campaign, ["carol", "alice", "bob", "alice"])
    # The Java client's alias: POST.
    url = f"/push/campaign/{campaign}/user/add"
    assert_ok(await client.post(url, json={"requestObject": ["bob", "dave"]}))
    page = assert_ok(await client.get(f"/push/campaign/{campaign}/user/list?page=0&size=3"))
    assert page["page"] == 0 and page["size"] == 3
    assert page["responseObject"] == {"campaignId": campaign, "users": ["alice", "bob", "carol"]}
    page = assert_ok(await client.get(f"/push/campaign/{campaign}/user/list?page=1&size=3"))
    assert page["responseObject"]["users"] == ["dave"]
    past_end = await client.get(f"/push/campaign/{campaign}/user/list?page=7&size=3")
    assert assert_ok(past_end)["responseObject"]["users"] == []

    body = {"requestObject": ["alice", "nobody"]}
    assert_ok(await client.request("DELETE", f"/push/campaign/{campaign}/user/delete", json=body))
    body = {"requestObject": ["dave"]}
    assert_ok(await client.post(f"/push/campaign/{campaign}/user/delete", json=body))
    page = assert_ok(await client.get(f"/push/campaign/{campaign}/user/list"))
    assert page["responseObject"]["users"] == ["bob", "carol"]


async def test_concurrent_additions_to_one_campaign_keep_every_user_once(
    client: httpx.AsyncClient, app_ready: Emulators, services: Services
) -> None:
    # Overlapping lists at once: every request succeeds and the union is there, each user
    # once (no unique-key error from a race between two of them).
    campaign = await create(client)
    lists = [[f"user-{(7 * n + i) % 50:02d}" for i in range(30)] for n in range(6)]
    await asyncio.gather(*(add_users(client, campaign, users) for users in lists))
    await add_users(client, campaign, lists[0])  # all of them there already
    expected = sorted({user for users in lists for user in users})
    page = assert_ok(await client.get(f"/push/campaign/{campaign}/user/list?size=100"))
    assert page["responseObject"]["users"] == expected
    async with services.db.reader() as session:
        rows = await session.scalar(
            select(func.count())
            .select_from(CampaignUser)
            .where(CampaignUser.campaign_id == int(campaign))
        )
    assert rows == len(expected)


async def test_deleting_a_campaign_says_whether_it_existed(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    campaign = await create(client)
    await add_users(client, campaign, ["alice"])
    response = await client.delete(f"/push/campaign/{campaign}/delete")
    assert assert_ok(response)["responseObject"] == {"deleted": True}
    response = await client.post(f"/push/campaign/{campaign}/delete")
    assert assert_ok(response)["responseObject"] == {"deleted": False}
    response = await client.delete("/push/campaign/not-a-number/delete")
    assert assert_ok(response)["responseObject"] == {"deleted": False}
    assert_error(
        await client.get(f"/push/campaign/{campaign}/detail"),
        "ERROR_GENERIC",
        contains="Campaign with entered ID does not exist",
    )


async def test_live_send_reaches_every_device_once_even_one_shared_by_two_users(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    tokens = [f"{i:02x}" * 32 for i in range(8)]
    for i, token in enumerate(tokens):
        await register(client, token, f"act-{i}", user=f"user-{i}")
    # One phone, two users: two registrations of the same token; it must get one push.
    await register(client, tokens[0], "act-shared", user="user-1")
    await register(client, ANDROID_TOKEN, "act-android", user="user-2", platform="android")
    await register(client, IOS_TOKEN, "act-outsider", user="outsider")
    campaign = await create(client)
    await add_users(client, campaign, [f"user-{i}" for i in range(8)] + ["no-devices"])

    assert_ok(await client.post(f"/push/campaign/send/live/{campaign}"))
    sent = await detail(client, campaign)
    assert sent["sent"] is True and sent["timestampSent"] and sent["timestampCompleted"] is None
    assert app_ready.apns.received == []  # the answer came once it was scheduled, not sent

    await run_worker_until_idle(services)
    delivered = sorted(p.token for p in app_ready.apns.delivered())
    assert delivered == sorted(tokens)  # each once; the outsider none
    assert len(app_ready.fcm.messages_to(ANDROID_TOKEN)) == 1
    [push] = [p for p in app_ready.apns.delivered() if p.token == tokens[3]]
    assert push.payload["aps"]["alert"]["title"] == "Balance update"
    assert push.headers["apns-collapse-id"] == "balance-update"
    done = await detail(client, campaign)
    assert done["devices"] == {"total": 9, "sent": 9, "failed": 0, "pending": 0}
    assert done["timestampCompleted"] >= done["timestampSent"]
    # The dialect's one time format (as the inbox and the service status write it).
    for name in ("timestampCreated", "timestampSent", "timestampCompleted"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", done[name])
    listed = assert_ok(await client.get("/push/campaign/list"))["responseObject"]
    assert [c["id"] for c in listed] == [campaign]

    again = await client.post(f"/push/campaign/send/live/{campaign}")
    assert_error(again, "ERROR_GENERIC", contains="already sent")


async def test_the_users_of_a_sent_campaign_are_fixed(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    """Once the fan-out walks the users, a user added or removed might or might not get the
    message: both are refused instead, before and after the fan-out ends."""
    await register(client, IOS_TOKEN, "act-late", user="late")
    campaign = await create(client)
    await add_users(client, campaign, ["alice"])
    assert_ok(await client.post(f"/push/campaign/send/live/{campaign}"))
    for when in ("during", "after"):
        for method, action in (("PUT", "add"), ("DELETE", "delete")):
            response = await client.request(
                method, f"/push/campaign/{campaign}/user/{action}", json={"requestObject": ["late"]}
            )
            assert_error(response, "ERROR_GENERIC", contains="already sent")
        if when == "during":
            await run_worker_until_idle(services)
    assert app_ready.apns.received == []  # "late" got nothing
    users = assert_ok(await client.get(f"/push/campaign/{campaign}/user/list"))
    assert users["responseObject"]["users"] == ["alice"]
    # An unknown campaign is still "not found", not "already sent".
    response = await client.put("/push/campaign/999/user/add", json={"requestObject": ["x"]})
    assert_error(response, "ERROR_GENERIC", contains="does not exist")


async def test_test_send_reaches_the_user_and_leaves_the_campaign_unsent(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    await register(client, IOS_TOKEN, "act-ios", user="1234567890")
    await register(client, ANDROID_TOKEN, "act-android", user="someone-else", platform="android")
    campaign = await create(client)
    await add_users(client, campaign, ["someone-else"])
    body = envelope(userId="1234567890")
    answer = assert_ok(await client.post(f"/push/campaign/send/test/{campaign}", json=body))
    none = {"sent": 0, "pending": 0, "failed": 0, "total": 0}
    assert answer["responseObject"] == {
        "result": {"ios": {**none, "sent": 1, "total": 1}, "android": none, "huawei": none}
    }
    assert [p.token for p in app_ready.apns.delivered()] == [IOS_TOKEN]
    assert app_ready.fcm.received == []
    found = await detail(client, campaign)
    assert found["sent"] is False and found["timestampSent"] is None
    assert (await queue_depth(services.db)) == {}


async def test_test_send_says_what_did_not_reach_the_user(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    await register(client, IOS_TOKEN, "act-ios", user="1234567890")
    await register(client, ANDROID_TOKEN, "act-android", user="1234567890", platform="android")
    app_ready.apns.unregister_device(IOS_TOKEN)
    app_ready.fcm.faults.error_burst = 1  # one 503: retry later
    campaign = await create(client)
    body = envelope(userId="1234567890")
    answer = assert_ok(await client.post(f"/push/campaign/send/test/{campaign}", json=body))
    result = answer["responseObject"]["result"]
    assert result["ios"] == {"sent": 0, "pending": 0, "failed": 1, "total": 1}
    assert result["android"] == {"sent": 0, "pending": 1, "failed": 0, "total": 1}
    # A user with no devices: nothing sent, nothing failed.
    answer = assert_ok(
        await client.post(f"/push/campaign/send/test/{campaign}", json=envelope(userId="nobody"))
    )
    assert all(c["total"] == 0 for c in answer["responseObject"]["result"].values())


async def test_a_page_job_that_runs_again_sends_nothing_twice(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    tokens = [f"{i:02x}" * 32 for i in range(10)]
    await live_campaign(client, tokens)
    await run_worker_until_idle(services)
    assert len(app_ready.apns.delivered()) == 10
    async with services.db.transaction() as session:
        pages = await session.scalar(select(func.count()).select_from(Job))
        # As after a crash between delivering and finishing: every job comes back.
        await session.execute(update(Job).values(state="queued", finished_at=None))
    assert pages == 1 + 4  # the planner and ceil(10 / 3) pages
    async with services.db.reader() as session:
        assert await session.scalar(select(func.count()).select_from(CampaignPage)) == 4
    await run_worker_until_idle(services)
    assert sorted(p.token for p in app_ready.apns.delivered()) == sorted(tokens)
    async with services.db.reader() as session:
        ledger = (
            await session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        ).all()
        jobs_now = await session.scalar(select(func.count()).select_from(Job))
    assert dict(ledger) == {"sent": 10} and jobs_now == pages  # the planner planned nothing new


async def test_a_page_cut_short_sends_only_what_was_not_recorded(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    tokens = [f"{i:02x}" * 32 for i in range(3)]
    campaign, [_] = await planned_campaign(client, services, tokens)  # one page of 3
    async with services.db.transaction() as session:
        # A worker sent to the first device and recorded it, then died before the others.
        message_id = await session.scalar(select(Campaign.message_id))
        first = (await session.scalars(select(Device).order_by(Device.id))).first()
        assert first is not None and message_id is not None
        session.add(
            Delivery(
                message_id=message_id,
                device_id=first.id,
                platform=first.platform,
                token=first.token,
                status="sent",
                attempts=1,
                updated_at=datetime.now(UTC),
            )
        )
    await run_worker_until_idle(services)
    delivered = sorted(p.token for p in app_ready.apns.delivered())
    assert delivered == sorted(tokens[1:])
    done = await detail(client, campaign)
    assert done["timestampCompleted"]
    # The counters saw two pushes; at completion the ledger (three rows) is the truth.
    assert done["devices"] == {"total": 3, "sent": 3, "failed": 0, "pending": 0}


async def test_a_late_run_of_a_page_changes_no_counter_after_completion(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    # A worker paused past its lease resumed after another had finished the campaign: its
    # sends were recorded as "already there", but added to the counters (sent 20,542 of
    # 20,000, for good).
    tokens = [f"{i + 0x40:02x}" * 32 for i in range(4)]
    campaign = await live_campaign(client, tokens)
    await run_worker_until_idle(services)
    done = await detail(client, campaign)
    assert done["devices"] == {"total": 4, "sent": 4, "failed": 0, "pending": 0}
    async with services.db.reader() as session:
        live = await fanout_module._live(session, int(campaign))
        assert live is not None
        devices = (await session.scalars(select(Device).order_by(Device.id))).all()
    targets = [
        Target(d.id, d.platform, d.environment, d.token, d.activation_id, True) for d in devices
    ]
    final = await services.fanout._send_fresh(live, targets)  # the late run's last chunk
    assert final is False  # it wrote nothing: the rows were there
    again = await detail(client, campaign)
    assert again["devices"] == {"total": 4, "sent": 4, "failed": 0, "pending": 0}
    async with services.db.reader() as session:
        row = await session.get(Campaign, int(campaign))
        assert row is not None and (row.devices_sent, row.devices_failed) == (4, 0)


async def test_a_page_whose_lease_ended_mid_chunk_records_nothing(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    # The paused worker's chunk came back after another worker had taken the page over: it
    # recorded those outcomes (retries, from its timed-out requests), and the new holder then
    # sent the devices a third time.
    tokens = [f"{i + 0x60:02x}" * 32 for i in range(3)]
    campaign, [page] = await planned_campaign(client, services, tokens)
    held = {"lease": True}
    app_ready.apns.faults.delay = 0.5

    loop = asyncio.get_running_loop()
    chunk_sent = asyncio.Event()

    def received(_push: object) -> None:
        if len(app_ready.apns.received) >= len(tokens):
            loop.call_soon_threadsafe(chunk_sent.set)

    app_ready.apns.on_receive = received

    async def lose_the_lease() -> None:
        # Once the chunk is with the provider, which holds its answers for 0.5 s. (A fixed
        # 0.2 s was not always enough on a loaded CI machine: the lease went before the chunk
        # did, and nothing was sent.)
        await asyncio.wait_for(chunk_sent.wait(), 10)
        held["lease"] = False

    losing = asyncio.create_task(lose_the_lease())
    token = worker_module._lease_held.set(lambda: held["lease"])
    try:
        with pytest.raises(worker_module.LeaseLost):
            await services.fanout.send_page(int(campaign), page.after, page.upto)
    finally:
        worker_module._lease_held.reset(token)
        app_ready.apns.on_receive = None
        await losing
    assert len(app_ready.apns.delivered()) == 3  # sent, as the paused worker's were
    async with services.db.reader() as session:
        assert await session.scalar(select(func.count()).select_from(Delivery)) == 0
        row = await session.get(Campaign, int(campaign))
        assert row is not None and (row.devices_sent, row.devices_failed) == (0, 0)


async def test_progress_counts_each_page_as_it_is_recorded_and_retries_when_final(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    tokens = [f"{i + 0x10:02x}" * 32 for i in range(6)]
    app_ready.apns.unregister_device(tokens[2])
    app_ready.apns.faults.by_token[tokens[1]] = (429, "TooManyRequests")
    campaign, [first, _] = await planned_campaign(client, services, tokens)  # two pages of 3
    retry_at = await services.fanout.send_page(int(campaign), first.after, first.upto)
    assert retry_at is not None  # user-1's push waits for its retry

    progress = (await detail(client, campaign))["devices"]
    assert progress == {"total": 6, "sent": 1, "failed": 1, "pending": 4}

    del app_ready.apns.faults.by_token[tokens[1]]
    await run_worker_until_idle(services)
    done = await detail(client, campaign)
    assert done["timestampCompleted"]
    assert done["devices"] == {"total": 6, "sent": 5, "failed": 1, "pending": 0}
    async with services.db.reader() as session:
        row = await session.get(Campaign, int(campaign))
        assert row is not None and (row.devices_sent, row.devices_failed) == (5, 1)


async def test_dead_tokens_are_counted_failed_and_forgotten(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    await register(client, IOS_TOKEN, "act-ios", user="alice")
    await register(client, "cd" * 32, "act-2", user="bob")
    app_ready.apns.unregister_device(IOS_TOKEN)
    campaign = await create(client)
    await add_users(client, campaign, ["alice", "bob"])
    assert_ok(await client.post(f"/push/campaign/send/live/{campaign}"))
    await run_worker_until_idle(services)
    progress = (await detail(client, campaign))["devices"]
    assert progress == {"total": 2, "sent": 1, "failed": 1, "pending": 0}
    async with services.db.reader() as session:
        assert list(await session.scalars(select(Device.token))) == ["cd" * 32]


GAUGES = (
    'clarion_jobs{state="queued"}',
    'clarion_jobs{state="running"}',
    "clarion_oldest_due_job_seconds",
)


async def test_metrics_export_progress_of_campaigns_in_progress_only(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    campaign = await live_campaign(client, [f"{i:02x}" * 32 for i in range(4)])
    while await services.fanout.plan(int(campaign)) is not None:
        pass
    text = (await client.get("/metrics")).text
    assert f'clarion_campaign_devices{{campaign="{campaign}",state="pending"}} 4.0' in text
    assert "clarion_campaigns_in_progress 1.0" in text
    # The planned sends wait as queued jobs, due now: the backlog is exported too.
    queued, running, waited = (
        float(line.split()[1])
        for prefix in GAUGES
        for line in text.splitlines()
        if line.startswith(prefix + " ")
    )
    async with services.db.reader() as session:
        in_queue = await session.scalar(
            select(func.count()).select_from(Job).where(Job.state == "queued")
        )
    assert (queued, running) == (in_queue, 0.0) and queued >= 1
    assert waited > 0.0
    assert 'clarion_jobs{state="lease_expired"} 0.0' in text
    # A worker killed with a job in hand: the job shows as waiting for one, since its lease
    # ended (it showed as running until another worker took it).
    async with services.db.transaction() as session:
        job = (await session.scalars(select(Job).where(Job.state == "queued"))).first()
        assert job is not None
        job.state, job.lease_owner = "running", "a-dead-worker"
        job.lease_until = datetime.now(UTC) - timedelta(seconds=120)
    text = (await client.get("/metrics")).text
    assert 'clarion_jobs{state="lease_expired"} 1.0' in text
    assert f'clarion_jobs{{state="queued"}} {in_queue - 1:.1f}' in text
    [waited_now] = [
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("clarion_oldest_due_job_seconds ")
    ]
    assert waited_now >= 120
    await run_worker_until_idle(services)
    text = (await client.get("/metrics")).text
    assert f'campaign="{campaign}"' not in text
    assert "clarion_campaigns_in_progress 0.0" in text
    assert 'clarion_campaign_pushes_total{outcome="sent"}' in text
    assert 'clarion_jobs{state="queued"} 0.0' in text
    assert "clarion_oldest_due_job_seconds 0.0" in text


async def test_a_deleted_campaign_stops_its_fan_out(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    await register(client, IOS_TOKEN, "act-ios", user="alice")
    campaign = await create(client)
    await add_users(client, campaign, ["alice"])
    assert_ok(await client.post(f"/push/campaign/send/live/{campaign}"))
    assert_ok(await client.delete(f"/push/campaign/{campaign}/delete"))
    await run_worker_until_idle(services)
    assert app_ready.apns.received == []
    async with services.db.reader() as session:
        assert await session.scalar(select(func.count()).select_from(Campaign)) == 0


async def test_a_planner_that_died_after_marking_the_campaign_planned_completes_it(
    client: httpx.AsyncClient, services: Services, app_ready: Emulators
) -> None:
    """Killed between marking the campaign planned and completing it, with every page done:
    no page job is left to complete it, so the planner's next run must."""
    await register(client, IOS_TOKEN, "act-1", user="alice")
    campaign = await create(client)
    await add_users(client, campaign, ["alice"])
    assert_ok(await client.post(f"/push/campaign/send/live/{campaign}"))
    await run_worker_until_idle(services)
    assert (await detail(client, campaign))["timestampCompleted"] is not None
    async with services.db.transaction() as session:  # the state that crash leaves
        await session.execute(update(Campaign).values(completed_at=None))
    assert await services.fanout.plan(int(campaign)) is None
    done = await detail(client, campaign)
    assert done["timestampCompleted"] is not None
    assert done["devices"] == {"total": 1, "sent": 1, "failed": 0, "pending": 0}
    assert len(app_ready.apns.delivered()) == 1


async def test_a_deleted_campaigns_id_is_never_given_again(
    client: httpx.AsyncClient, app_ready: Emulators
) -> None:
    """SQLite gives a new row the largest row id plus one: without care, the newest campaign
    deleted and another created would share an id, and a retried DELETE would hit it."""
    first = await create(client)
    second = await create(client)
    deleted = await client.request("DELETE", f"/push/campaign/{second}/delete")
    assert assert_ok(deleted)["responseObject"] == {"deleted": True}
    third = await create(client)
    assert int(third) > int(second) > int(first)
    again = await client.request("DELETE", f"/push/campaign/{second}/delete")
    assert assert_ok(again)["responseObject"] == {"deleted": False}
    assert (await detail(client, third))["id"] == third


async def test_a_page_whose_every_push_is_final_skips_the_pending_lookups(
    client: httpx.AsyncClient,
    services: Services,
    app_ready: Emulators,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two lookups per device are saved when the page's run wrote every row final itself;
    a page with a retry, or one another run recorded first, still looks."""
    lookups: list[int] = []
    original = services.fanout._pending

    async def counted(*args: Any, **kwargs: Any) -> Any:
        lookups.append(1)
        return await original(*args, **kwargs)

    monkeypatch.setattr(services.fanout, "_pending", counted)
    tokens = [f"{i + 0x40:02x}" * 32 for i in range(3)]
    campaign, [page] = await planned_campaign(client, services, tokens)
    assert await services.fanout.send_page(int(campaign), page.after, page.upto) is None
    assert lookups == []  # every push delivered, every row this run's
    assert len(app_ready.apns.delivered()) == 3
    # The same page again (a job run twice): the rows are there, final: still no lookups.
    assert await services.fanout.send_page(int(campaign), page.after, page.upto) is None
    assert lookups == [] and len(app_ready.apns.delivered()) == 3
