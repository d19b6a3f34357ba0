"""Campaign progress: devices total / sent / failed / pending, in detail and in /metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.providers.base import Outcome, OutcomeKind
from clarion.store.db import Database
from clarion.store.jobs import backlog
from clarion.store.models import Campaign

# Gauges read from the shared database on a scrape of a serve process (campaign progress, the
# job queue): the same for every process, so a worker's own /metrics leaves them out rather
# than show values it never refreshes. The HTTP edge (clarion.metrics) serves them.
DATABASE_REGISTRY = CollectorRegistry(auto_describe=True)
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
    registry=DATABASE_REGISTRY,
)
CAMPAIGNS_IN_PROGRESS = Gauge(
    "clarion_campaigns_in_progress",
    "Campaigns sent live and not completed yet.",
    registry=DATABASE_REGISTRY,
)
JOBS = Gauge(
    "clarion_jobs",
    "Durable jobs (message batches, campaign fan-outs) by state: queued, running, "
    "lease_expired (running, but its worker stopped renewing the lease: dead or cut off; "
    "another worker takes it).",
    ["state"],
    registry=DATABASE_REGISTRY,
)
OLDEST_DUE_JOB = Gauge(
    "clarion_oldest_due_job_seconds",
    "How long the oldest due job (queued, or its lease ended) has waited for a worker "
    "(0: none waits).",
    registry=DATABASE_REGISTRY,
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
    """The campaign's progress from its row: the fan-out keeps the counters with the ledger
    (no count of the ledger per call)."""
    sent, failed = campaign.devices_sent, campaign.devices_failed
    # Planning counted the devices; registrations that changed before their page was sent make
    # the count approximate until the end, when the ledger is the truth.
    total = sent + failed if campaign.completed_at is not None else campaign.devices_total
    return Progress(
        total=total,
        sent=sent,
        failed=failed,
        planned=campaign.planned,
        completed_at=campaign.completed_at,
    )


DATABASE_UP = Gauge(
    "clarion_database_up",
    "1 if the last /metrics scrape could read the database's gauges, 0 if not.",
    registry=DATABASE_REGISTRY,
)


def forget_database_gauges() -> None:
    """The database could not be read: its gauges are dropped (absent, not stale or zero)."""
    DATABASE_UP.set(0)
    JOBS.clear()
    CAMPAIGN_DEVICES.clear()
    OLDEST_DUE_JOB.set(math.nan)
    CAMPAIGNS_IN_PROGRESS.set(math.nan)


async def export_progress(db: Database) -> None:
    """Refresh the database's gauges, campaign progress and the job queue (called on a
    /metrics scrape of a serve process)."""
    queue = await backlog(db)
    DATABASE_UP.set(1)
    JOBS.labels("queued").set(queue.queued)
    JOBS.labels("running").set(queue.running)
    JOBS.labels("lease_expired").set(queue.lease_expired)
    OLDEST_DUE_JOB.set(queue.waited)
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


def finished(outcomes: Sequence[Outcome]) -> tuple[int, int]:
    """How many of the outcomes are final, as (sent, failed): a retry is not finished yet."""
    sent = sum(1 for o in outcomes if o.kind is OutcomeKind.DELIVERED)
    failed = sum(1 for o in outcomes if o.kind not in (OutcomeKind.DELIVERED, OutcomeKind.RETRY))
    return sent, failed


def count_outcomes(outcomes: Sequence[Outcome]) -> None:
    """Count pushes this process finished."""
    sent, failed = finished(outcomes)
    CAMPAIGN_PUSHES.labels("sent").inc(sent)
    CAMPAIGN_PUSHES.labels("failed").inc(failed)
