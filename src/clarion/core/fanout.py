"""The campaign fan-out: plan pages of devices, deliver each page, once per device.

One job kind, ``campaign``, with two shapes of payload:

- ``{"campaign": id}`` plans. It walks the devices of the campaign's users by device id (keyset
  pagination over a join of ``campaign_users`` and ``devices`` on (app, user)), and for every page,
  in one transaction: writes the page's ledger rows with ``INSERT ... SELECT`` (no device passes
  through Python), enqueues one page job, and moves its cursor. A planner that dies resumes at its
  cursor; no page is planned twice.
- ``{"campaign": id, "after": a, "upto": b}`` delivers the ledger rows of devices ``a < id <= b``
  that are still pending, in chunks, recording each chunk's outcomes as it goes. Pages are separate
  jobs, so every worker sharing the database takes pages of the same campaign.

Once per device: a token registered under two users of the campaign (two registrations of one
phone) gets one ledger row, for its lowest registration id; the ledger is unique per (message,
device). A page that runs again (its worker died, its lease ended) sends only rows still pending,
so the only repeats are the chunk a worker had in flight when it died, sent but not recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import and_, delete, exists, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from clarion.core import notification as notification_json
from clarion.core.messages import _outcome_update
from clarion.core.sender import Sender, Target
from clarion.providers.base import Notification, OutcomeKind
from clarion.store import jobs
from clarion.store.db import Database
from clarion.store.models import (
    Application,
    Campaign,
    CampaignUser,
    Delivery,
    Device,
    PushMessage,
    UTCDateTime,
    utcnow,
)

log = logging.getLogger(__name__)

JOB_KIND = "campaign"
PAGES_PER_PLANNER_RUN = 20  # then the planner yields its slot and runs again at once
SEND_CHUNK = 1_000  # ledger rows sent, then recorded, at a time: the most a crash can repeat
METRICS_CAMPAIGNS = 20  # progress gauges for at most this many campaigns in progress

CAMPAIGN_PUSHES = Counter(
    "clarion_campaign_pushes_total",
    "Campaign pushes this process finished, by outcome (sent, failed).",
    ["outcome"],
)
CAMPAIGN_DEVICES = Gauge(
    "clarion_campaign_devices",
    "Devices of campaigns in progress by state (total, sent, failed, pending); "
    f"only the {METRICS_CAMPAIGNS} most recent campaigns in progress.",
    ["campaign", "state"],
)
CAMPAIGNS_IN_PROGRESS = Gauge(
    "clarion_campaigns_in_progress", "Campaigns sent live and not completed yet."
)


@dataclass(frozen=True, slots=True)
class Progress:
    """Devices of a live send: ``total`` grows while the fan-out is still being planned."""

    total: int
    sent: int
    failed: int
    planned: bool
    completed_at: datetime | None

    @property
    def pending(self) -> int:
        return max(0, self.total - self.sent - self.failed)


async def progress_of(session: AsyncSession, campaign: Campaign) -> Progress:
    counts: dict[str, int] = {}
    if campaign.message_id is not None:
        rows = await session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.message_id == campaign.message_id, Delivery.status != "pending")
            .group_by(Delivery.status)
        )
        counts = {status: int(n) for status, n in rows}
    return Progress(
        total=campaign.devices_total,
        sent=counts.get("sent", 0),
        failed=counts.get("failed", 0),
        planned=campaign.planned,
        completed_at=campaign.completed_at,
    )


@dataclass(frozen=True, slots=True)
class _Live:
    campaign_id: int
    app_pk: int
    app_id: str
    message_id: int
    notification: Notification


class FanOut:
    """Runs ``campaign`` jobs on the workers."""

    def __init__(
        self, db: Database, sender: Sender, *, page_size: int, wake: asyncio.Event
    ) -> None:
        self._db = db
        self._sender = sender
        self._page_size = page_size
        self._wake = wake

    async def run_job(self, payload: dict[str, Any]) -> datetime | None:
        campaign_id = int(payload["campaign"])
        if "upto" in payload:
            return await self.send_page(campaign_id, int(payload["after"]), int(payload["upto"]))
        return await self.plan(campaign_id)

    # --- planning --------------------------------------------------------------------------

    async def plan(self, campaign_id: int) -> datetime | None:
        """Schedule up to a number of pages; return now if there are more, None when done."""
        for _ in range(PAGES_PER_PLANNER_RUN):
            async with self._db.transaction() as session:
                live = await _live(session, campaign_id, lock=True)
                if live is None:
                    return None
                campaign = await session.get(Campaign, campaign_id)
                assert campaign is not None
                if campaign.planned:
                    return None
                after = campaign.planned_through or 0
                upto, count = await self._next_page(session, live, after)
                if count == 0:
                    campaign.planned = True
                else:
                    await _write_ledger(session, live, after, upto)
                    jobs.enqueue(
                        session,
                        JOB_KIND,
                        [{"campaign": campaign_id, "after": after, "upto": upto}],
                    )
                    campaign.planned_through = upto
                    campaign.devices_total = campaign.devices_total + count
            self._wake.set()
            if count == 0:
                await self._complete_if_done(live)
                return None
        return utcnow()

    async def _next_page(self, session: AsyncSession, live: _Live, after: int) -> tuple[int, int]:
        """The last device id of the next page after ``after``, and how many devices it has."""
        page = (
            _members(live)
            .with_only_columns(Device.id)
            .where(Device.id > after)
            .order_by(Device.id)
            .limit(self._page_size)
            .subquery()
        )
        upto, count = (
            await session.execute(select(func.max(page.c.id), func.count()).select_from(page))
        ).one()
        return int(upto or after), int(count)

    # --- delivering ------------------------------------------------------------------------

    async def send_page(self, campaign_id: int, after: int, upto: int) -> datetime | None:
        """Send the page's pending rows; return when to run again, or None when all are final."""
        async with self._db.reader() as session:
            live = await _live(session, campaign_id)
        if live is None:
            return None  # deleted meanwhile: nothing more to send
        now = utcnow()
        rows = await self._due(live, after, upto, now)
        for i in range(0, len(rows), SEND_CHUNK):
            await self._deliver(live, rows[i : i + SEND_CHUNK])
        async with self._db.reader() as session:
            pending = (
                await session.execute(
                    select(func.count(), func.min(Delivery.next_attempt_at)).where(
                        *_page_rows(live, after, upto), Delivery.status == "pending"
                    )
                )
            ).one()
        if pending[0]:
            return pending[1] or utcnow()
        await self._complete_if_done(live)
        return None

    async def _due(self, live: _Live, after: int, upto: int, now: datetime) -> list[Delivery]:
        async with self._db.reader() as session:
            result = await session.scalars(
                select(Delivery)
                .where(
                    *_page_rows(live, after, upto),
                    Delivery.status == "pending",
                    (Delivery.next_attempt_at.is_(None)) | (Delivery.next_attempt_at <= now),
                )
                .order_by(Delivery.device_id)
            )
            return list(result)

    async def _deliver(self, live: _Live, rows: Sequence[Delivery]) -> None:
        by_attempt: dict[int, list[Delivery]] = defaultdict(list)
        for row in rows:
            by_attempt[row.attempts + 1].append(row)
        delivered: dict[int, list[int]] = defaultdict(list)
        others: list[dict[str, Any]] = []
        dead: list[int] = []
        now = utcnow()
        for attempt, group in by_attempt.items():
            targets = [
                Target(r.device_id, r.platform, r.environment, r.token, None, True) for r in group
            ]
            outcomes = await self._sender.send_once(
                live.app_id, live.notification, targets, attempt=attempt
            )
            for row, outcome in zip(group, outcomes, strict=True):
                if outcome.kind is OutcomeKind.DELIVERED:
                    delivered[attempt].append(row.id)
                    continue
                others.append({"id": row.id, **_outcome_update(outcome, now, attempts=attempt)})
                if outcome.kind is OutcomeKind.TOKEN_DEAD:
                    dead.append(row.device_id)
        async with self._db.transaction() as session:
            for attempt, ids in delivered.items():
                await session.execute(
                    update(Delivery)
                    .where(Delivery.id.in_(ids))
                    .values(status="sent", attempts=attempt, next_attempt_at=None, updated_at=now)
                )
            if others:
                await session.execute(update(Delivery), others)
            if dead:
                await session.execute(delete(Device).where(Device.id.in_(dead)))
        CAMPAIGN_PUSHES.labels("sent").inc(sum(len(ids) for ids in delivered.values()))
        CAMPAIGN_PUSHES.labels("failed").inc(sum(1 for o in others if o["status"] == "failed"))

    async def _complete_if_done(self, live: _Live) -> None:
        """Stamp the campaign completed once it is planned and no ledger row is pending."""
        pending = exists().where(
            Delivery.message_id == live.message_id, Delivery.status == "pending"
        )
        now = utcnow()
        async with self._db.transaction() as session:
            done = await session.execute(
                update(Campaign)
                .where(
                    Campaign.id == live.campaign_id,
                    Campaign.planned.is_(True),
                    Campaign.completed_at.is_(None),
                    ~pending,
                )
                .values(completed_at=now)
            )
            if getattr(done, "rowcount", 0):
                await session.execute(
                    update(PushMessage)
                    .where(PushMessage.id == live.message_id)
                    .values(completed_at=now)
                )
                log.info("campaign completed", extra={"campaign": live.campaign_id})


async def export_progress(db: Database) -> None:
    """Refresh the progress gauges from the database (called on a /metrics scrape)."""
    async with db.reader() as session:
        in_progress = Campaign.sent.is_(True) & Campaign.completed_at.is_(None)
        count = await session.scalar(select(func.count()).where(in_progress))
        recent = (
            await session.scalars(
                select(Campaign)
                .where(in_progress)
                .order_by(Campaign.id.desc())
                .limit(METRICS_CAMPAIGNS)
            )
        ).all()
        progress = [(c.id, await progress_of(session, c)) for c in recent]
    CAMPAIGNS_IN_PROGRESS.set(count or 0)
    CAMPAIGN_DEVICES.clear()  # finished campaigns leave the gauge: the label set stays bounded
    for campaign_id, p in progress:
        for state, value in (
            ("total", p.total),
            ("sent", p.sent),
            ("failed", p.failed),
            ("pending", p.pending),
        ):
            CAMPAIGN_DEVICES.labels(str(campaign_id), state).set(value)


# --- queries -------------------------------------------------------------------------------


async def _live(session: AsyncSession, campaign_id: int, *, lock: bool = False) -> _Live | None:
    query = (
        select(
            Campaign.application_id,
            Campaign.message_id,
            Campaign.notification,
            Application.app_id,
        )
        .join(Application, Application.id == Campaign.application_id)
        .where(Campaign.id == campaign_id)
    )
    if lock:  # one planner at a time, even when a lease ended under a live worker
        query = query.with_for_update(of=Campaign)
    row = (await session.execute(query)).one_or_none()
    if row is None or row.message_id is None:
        return None
    return _Live(
        campaign_id,
        row.application_id,
        row.app_id,
        row.message_id,
        notification_json.from_json(row.notification),
    )


def _members(live: _Live) -> Any:
    """Devices of the campaign's users, without a second registration of the same token."""
    other, other_user = aliased(Device), aliased(CampaignUser)
    shadowed = (
        exists()
        .where(
            other.application_id == Device.application_id,
            other.token == Device.token,
            other.platform == Device.platform,
            other.id < Device.id,
            other_user.campaign_id == live.campaign_id,
            other_user.user_id == other.user_id,
        )
        .correlate(Device)
    )
    return (
        select(Device.id)
        .join(
            CampaignUser,
            and_(
                CampaignUser.campaign_id == live.campaign_id,
                CampaignUser.user_id == Device.user_id,
            ),
        )
        .where(Device.application_id == live.app_pk, ~shadowed)
    )


async def _write_ledger(session: AsyncSession, live: _Live, after: int, upto: int) -> None:
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    rows = (
        _members(live)
        .with_only_columns(
            literal(live.message_id),
            Device.id,
            Device.platform,
            Device.environment,
            Device.token,
            literal("pending"),
            literal(0),
            literal(utcnow(), UTCDateTime()),
        )
        .where(Device.id > after, Device.id <= upto)
    )
    columns = [
        "message_id",
        "device_id",
        "platform",
        "environment",
        "token",
        "status",
        "attempts",
        "updated_at",
    ]
    dialect = session.get_bind().dialect.name
    statement = (pg_insert if dialect == "postgresql" else sqlite_insert)(Delivery)
    await session.execute(
        statement.from_select(columns, rows).on_conflict_do_nothing(
            index_elements=["message_id", "device_id"]
        )
    )


def _page_rows(live: _Live, after: int, upto: int) -> tuple[Any, ...]:
    return (
        Delivery.message_id == live.message_id,
        Delivery.device_id > after,
        Delivery.device_id <= upto,
    )
