"""Retention: finished jobs, delivered messages (with their ledger) and WalletConnect message
ids older than ``CLARION_RETENTION_DAYS`` are deleted; nothing else is."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, select, update

from clarion.core import retention
from clarion.core.messages import MessageSpec
from clarion.core.retention import Retention
from clarion.core.services import Services
from clarion.providers.base import Notification
from clarion.store.models import (
    Application,
    Campaign,
    Delivery,
    Job,
    PushMessage,
    WcMessage,
    utcnow,
)

OLD = timedelta(days=45)  # older than the default 30 days
RECENT = timedelta(days=10)


async def seed(services: Services) -> dict[str, Any]:
    """Rows of every kind, old and recent; returns the ids that must survive."""
    now = utcnow()
    async with services.db.transaction() as session:
        app = Application(app_id="kept-app")
        session.add(app)
        await session.flush()

        def message(age: timedelta, *, completed: bool) -> PushMessage:
            return PushMessage(
                application_id=app.id,
                user_id="u",
                personal=False,
                notification={"title": "t"},
                created_at=now - age,
                completed_at=(now - age) if completed else None,
            )

        messages = {
            "old_done": message(OLD, completed=True),
            "old_done_2": message(OLD, completed=True),
            "old_pending": message(OLD, completed=False),  # still being delivered
            "recent_done": message(RECENT, completed=True),
            "old_campaign": message(OLD, completed=True),
        }
        session.add_all(messages.values())
        await session.flush()
        session.add(
            Campaign(
                application_id=app.id,
                notification={"title": "t"},
                sent=True,
                message_id=messages["old_campaign"].id,
                created_at=now - OLD,
            )
        )
        for n, row in enumerate(messages.values()):
            session.add(
                Delivery(
                    message_id=row.id,
                    device_id=n,
                    platform="ios",
                    token=f"{n:064x}",
                    status="sent",
                    attempts=1,
                    updated_at=row.created_at,
                )
            )

        def job(age: timedelta, state: str) -> Job:
            return Job(
                kind="messages",
                payload={"messages": []},
                state=state,
                run_after=now - age,
                attempts=0,
                created_at=now - age,
                finished_at=(now - age) if state == "done" else None,
            )

        jobs = {
            "old_done": job(OLD, "done"),
            "old_queued": job(OLD, "queued"),  # due long ago and never run: kept
            "recent_done": job(RECENT, "done"),
        }
        session.add_all(jobs.values())
        for n in range(5):
            session.add(
                WcMessage(
                    application_id=app.id,
                    client_id="wallet",
                    message_id=f"old-{n}",
                    created_at=now - OLD,
                )
            )
        session.add(
            WcMessage(
                application_id=app.id,
                client_id="wallet",
                message_id="recent",
                created_at=now - RECENT,
            )
        )
    return {
        "messages": {messages[k].id for k in ("old_pending", "recent_done", "old_campaign")},
        "jobs": {jobs[k].id for k in ("old_queued", "recent_done")},
        "wc": {"recent"},
    }


async def remaining(services: Services) -> dict[str, set[Any]]:
    async with services.db.reader() as session:
        return {
            "messages": set(await session.scalars(select(PushMessage.id))),
            "ledger": set(await session.scalars(select(Delivery.message_id))),
            "jobs": set(await session.scalars(select(Job.id))),
            "wc": set(await session.scalars(select(WcMessage.message_id))),
        }


async def test_only_settled_rows_older_than_the_retention_are_deleted(
    services: Services,
) -> None:
    kept = await seed(services)
    pruned = await Retention(services.db, 30, 30, batch=2).prune()  # several batches each
    assert (pruned.jobs, pruned.messages, pruned.walletconnect_ids) == (1, 2, 5)
    left = await remaining(services)
    assert left["messages"] == kept["messages"]
    assert left["ledger"] == kept["messages"]  # the ledger rows went with their messages
    assert left["jobs"] == kept["jobs"]
    assert left["wc"] == kept["wc"]
    # A second pass finds nothing more.
    assert (await Retention(services.db, 30, 30).prune()).total == 0


async def test_a_longer_retention_or_zero_keeps_them(services: Services) -> None:
    await seed(services)
    before = await remaining(services)
    assert (await Retention(services.db, 60, 60).prune()).total == 0
    assert (await Retention(services.db, 0).prune()).total == 0
    assert await remaining(services) == before


async def test_walletconnect_ids_are_kept_for_ever_unless_asked(services: Services) -> None:
    # The spec: a message id is pushed at most once, ever. Only an operator's setting prunes.
    kept = await seed(services)
    pruned = await services.retention.prune()  # the default settings
    assert pruned.walletconnect_ids == 0 and pruned.messages == 2
    assert (await remaining(services))["wc"] == kept["wc"] | {f"old-{n}" for n in range(5)}
    assert (await Retention(services.db, 0, 30).prune()).walletconnect_ids == 5


async def test_a_campaigns_message_goes_once_the_campaign_is_deleted(
    services: Services,
) -> None:
    kept = await seed(services)
    async with services.db.transaction() as session:
        campaign = (await session.scalars(select(Campaign))).one()
        await session.delete(campaign)
    await Retention(services.db, 30).prune()
    assert (await remaining(services))["messages"] == kept["messages"] - {campaign.message_id}


@pytest.mark.parametrize("settings_overrides", [{"wc_message_retention_days": 30}])
async def test_the_worker_prunes_while_it_runs(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = await seed(services)
    monkeypatch.setattr(retention, "FIRST_DELAY", (0.0, 0.0))
    worker = services.worker()
    running = asyncio.create_task(worker.run(grace=1))
    try:
        for _ in range(200):
            if (await remaining(services))["wc"] == kept["wc"]:
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await running
    left = await remaining(services)
    assert left["wc"] == kept["wc"] and left["messages"] == kept["messages"]


async def test_the_migration_indexes_the_ages_retention_looks_up(services: Services) -> None:
    # The batches look rows up by created_at: the migration indexes both tables.
    async with services.db.engine.connect() as conn:
        names = await conn.run_sync(
            lambda sync: {
                index["name"]
                for table in ("push_messages", "wc_messages")
                for index in inspect(sync).get_indexes(table)
            }
        )
    assert {"ix_push_messages_created_at", "ix_wc_messages_created_at"} <= names


async def test_old_messages_recorded_done_by_a_job_are_pruned_with_the_job(
    services: Services,
) -> None:
    # An async message's life: accepted, delivered by its job, completed; then, once old,
    # both the message and the job go.
    async with services.db.transaction() as session:
        session.add(Application(app_id="life-app"))
    [message_id] = await services.messages.enqueue(
        "life-app", [MessageSpec(user_id="nobody", notification=Notification(title="t"))]
    )
    worker = services.worker()
    running = asyncio.create_task(worker.run(grace=1))
    for _ in range(200):
        async with services.db.reader() as session:
            done = await session.scalar(
                select(PushMessage.completed_at).where(PushMessage.id == message_id)
            )
        if done is not None:
            break
        await asyncio.sleep(0.05)
    worker.stop()
    await running
    assert done is not None
    async with services.db.transaction() as session:
        then = utcnow() - OLD
        await session.execute(update(PushMessage).values(created_at=then, completed_at=then))
        await session.execute(update(Job).values(run_after=then, finished_at=then))
    pruned = await Retention(services.db, 30).prune()
    assert (pruned.jobs, pruned.messages) == (1, 1)
