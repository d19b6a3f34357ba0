"""Retention: what clarion keeps only for a while is deleted once it is older than that.

Every accepted PowerAuth message leaves a message row and its ledger rows, every job a row, and
every WalletConnect push its message id (the dedup key). None of them is needed for long once
settled, and without a limit they grow with every push. The worker deletes:

- after ``CLARION_RETENTION_DAYS`` days (30; 0: never), finished jobs and messages whose
  delivery is complete (every device settled), with their ledger rows. A campaign's message
  and ledger stay as long as the campaign does (its detail reads them);
- after ``CLARION_WC_MESSAGE_RETENTION_DAYS`` days, WalletConnect message ids. The default, 0,
  keeps them for ever, as the spec has it ("pushed at most once, ever"); an operator who sets
  it accepts that an id sent again later than that is pushed again (a relay retries within
  minutes).

Deletes go in batches of ``BATCH`` rows, each its own short transaction, so that pushes and
registrations are never held up behind a long one (SQLite has one writer). Every worker prunes
about once an hour, starting a few minutes after it starts; on PostgreSQL several workers may
prune at once, which costs only the repeated (empty) queries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, exists, select, tuple_

from clarion.store.db import Database
from clarion.store.models import Campaign, Job, PushMessage, WcMessage, utcnow

log = logging.getLogger(__name__)

BATCH = 5_000
INTERVAL = 3600.0  # seconds between two prunes of one worker
FIRST_DELAY = (60.0, 300.0)  # the first prune, a random time in this range after the start

_jobs = cast(Table, Job.__table__)
_messages = cast(Table, PushMessage.__table__)
_wc = cast(Table, WcMessage.__table__)
_campaigns = cast(Table, Campaign.__table__)


def _limited(statement: Any) -> Any:
    return statement.limit(bindparam("batch"))


# Each statement deletes at most ``batch`` rows older than ``cutoff`` and reports how many.
_OLD_JOBS = delete(_jobs).where(
    _jobs.c.id.in_(
        _limited(
            select(_jobs.c.id).where(
                _jobs.c.state == "done",
                _jobs.c.run_after < bindparam("cutoff"),  # the (state, run_after) index
                _jobs.c.finished_at < bindparam("cutoff"),
            )
        )
    )
)
_OLD_MESSAGES = delete(_messages).where(
    _messages.c.id.in_(
        _limited(
            select(_messages.c.id).where(
                _messages.c.created_at < bindparam("cutoff"),
                _messages.c.completed_at.is_not(None),
                ~exists().where(_campaigns.c.message_id == _messages.c.id),
            )
        )
    )
)
_OLD_WC_IDS = delete(_wc).where(
    tuple_(_wc.c.application_id, _wc.c.client_id, _wc.c.message_id).in_(
        _limited(
            select(_wc.c.application_id, _wc.c.client_id, _wc.c.message_id).where(
                _wc.c.created_at < bindparam("cutoff")
            )
        )
    )
)


@dataclass(slots=True)
class Pruned:
    jobs: int = 0
    messages: int = 0  # their ledger rows go with them
    walletconnect_ids: int = 0

    @property
    def total(self) -> int:
        return self.jobs + self.messages + self.walletconnect_ids


class Retention:
    """``days``: messages and jobs; ``wc_days``: WalletConnect message ids (0: keep)."""

    def __init__(
        self, db: Database, days: float, wc_days: float = 0.0, *, batch: int = BATCH
    ) -> None:
        self._db = db
        self.days = days
        self.wc_days = wc_days
        self._batch = batch

    @property
    def keeps_everything(self) -> bool:
        return self.days <= 0 and self.wc_days <= 0

    async def prune(self, now: datetime | None = None) -> Pruned:
        """Delete what is older than its retention; nothing where that is 0."""
        pruned = Pruned()
        now = now or utcnow()
        if self.days > 0:
            cutoff = now - timedelta(days=self.days)
            pruned.jobs = await self._drain(_OLD_JOBS, cutoff)
            pruned.messages = await self._drain(_OLD_MESSAGES, cutoff)
        if self.wc_days > 0:
            cutoff = now - timedelta(days=self.wc_days)
            pruned.walletconnect_ids = await self._drain(_OLD_WC_IDS, cutoff)
        return pruned

    async def _drain(self, statement: Any, cutoff: datetime) -> int:
        total = 0
        while True:
            async with self._db.transaction() as session:
                result: Any = await session.execute(
                    statement, {"cutoff": cutoff, "batch": self._batch}
                )
            count = max(int(result.rowcount or 0), 0)
            total += count
            if count < self._batch:
                return total
            await asyncio.sleep(0)  # let others write between two batches

    async def run(self) -> None:
        """Prune now and then, for as long as the worker runs (it cancels this)."""
        if self.keeps_everything:
            return
        await asyncio.sleep(random.uniform(*FIRST_DELAY))
        while True:
            try:
                pruned = await self.prune()
            except Exception as exc:  # the database may be down: try again next time
                log.warning("pruning old rows failed: %s", str(exc).splitlines()[0][:200])
            else:
                if pruned.total:
                    log.info(
                        "pruned old rows",
                        extra={
                            "jobs": pruned.jobs,
                            "messages": pruned.messages,
                            "walletconnect_ids": pruned.walletconnect_ids,
                        },
                    )
            await asyncio.sleep(INTERVAL)
