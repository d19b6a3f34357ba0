"""Messages: resolve a user's devices, send synchronously or as durable jobs, keep the ledger.

Synchronous sends make one attempt per device at once; what the provider asks to retry becomes
a durable job and is reported ``pending``. Asynchronous sends commit messages and jobs and
return; a worker runs the jobs. The ledger (``deliveries``, unique per message and device) makes
a job that runs twice (a crash, a lease that ended) send each device at most once in effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core import notification as notification_json
from clarion.core.apps import application_pk
from clarion.core.platforms import Platform
from clarion.core.sender import Sender, Target
from clarion.providers.base import Notification, Outcome, OutcomeKind
from clarion.store import jobs
from clarion.store.db import Database
from clarion.store.models import Application, Delivery, Device, PushMessage, utcnow

log = logging.getLogger(__name__)

MESSAGES_PER_JOB = 500
LEDGER_WAVE = 100  # devices sent between two ledger commits of a job
JOB_KIND = "messages"


class Mode(StrEnum):
    SYNCHRONOUS = "SYNCHRONOUS"
    ASYNCHRONOUS = "ASYNCHRONOUS"


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One message to one user, or to one of the user's activations."""

    user_id: str
    notification: Notification
    activation_id: str | None = None
    personal: bool = False


@dataclass(slots=True)
class Counts:
    sent: int = 0
    pending: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.pending + self.failed


@dataclass(slots=True)
class SendResult:
    by_platform: dict[Platform, Counts] = field(
        default_factory=lambda: {p: Counts() for p in Platform}
    )

    def count(self, platform: str, outcome: str) -> None:
        setattr(
            self.by_platform[Platform(platform)],
            outcome,
            1 + getattr(self.by_platform[Platform(platform)], outcome),
        )


@dataclass(frozen=True, slots=True)
class _Row:
    """A ledger row with what is needed to send it."""

    id: int
    message_id: int
    target: Target
    attempts: int


def _matches(spec_activation: str | None, personal: bool, device: Target) -> bool:
    if spec_activation is not None and device.activation_id != spec_activation:
        return False
    return device.active or not personal


class Messages:
    """The PowerAuth message service over the delivery core."""

    def __init__(self, db: Database, sender: Sender, *, store_messages: bool) -> None:
        self._db = db
        self._sender = sender
        self._store = store_messages
        self.wake = asyncio.Event()  # set when jobs were enqueued, so a local worker looks now

    # --- accepting -------------------------------------------------------------------------

    async def send(
        self, app_id: str, specs: Sequence[MessageSpec], mode: Mode
    ) -> SendResult | None:
        """Send synchronously (a result per platform) or enqueue durably (None)."""
        if mode is Mode.ASYNCHRONOUS:
            await self.enqueue(app_id, specs)
            return None
        return await self.send_now(app_id, specs)

    async def enqueue(self, app_id: str, specs: Sequence[MessageSpec]) -> list[int]:
        """Commit the messages and their jobs; return the message ids."""
        async with self._db.transaction() as session:
            app_pk = await application_pk(session, app_id)
            ids = await _insert_messages(session, app_pk, specs)
            jobs.enqueue(
                session,
                JOB_KIND,
                [
                    {"messages": ids[i : i + MESSAGES_PER_JOB]}
                    for i in range(0, len(ids), MESSAGES_PER_JOB)
                ],
            )
        self.wake.set()
        return ids

    async def send_now(self, app_id: str, specs: Sequence[MessageSpec]) -> SendResult:
        """One attempt per device now; anything the provider asks to retry becomes a job."""
        result = SendResult()
        async with self._db.reader() as session:
            app_pk = await application_pk(session, app_id)
            devices = await self._sender.devices_of(session, app_pk, {s.user_id for s in specs})
        plans = [
            (
                spec,
                [
                    d
                    for d in devices.get(spec.user_id, [])
                    if _matches(spec.activation_id, spec.personal, d)
                ],
            )
            for spec in specs
        ]
        outcomes = await asyncio.gather(
            *(self._sender.send_once(app_id, spec.notification, targets) for spec, targets in plans)
        )
        retry: list[tuple[MessageSpec, list[tuple[Target, Outcome]]]] = []
        dead: list[int] = []
        for (spec, targets), results in zip(plans, outcomes, strict=True):
            later = []
            for target, outcome in zip(targets, results, strict=True):
                if outcome.kind is OutcomeKind.DELIVERED:
                    result.count(target.platform, "sent")
                elif outcome.kind is OutcomeKind.RETRY:
                    result.count(target.platform, "pending")
                    later.append((target, outcome))
                else:
                    result.count(target.platform, "failed")
                    if outcome.kind is OutcomeKind.TOKEN_DEAD:
                        dead.append(target.device_id)
            if later or self._store:
                retry.append((spec, [(t, o) for t, o in zip(targets, results, strict=True)]))
        if dead:
            await self._sender.forget_devices(dead)
        if retry:
            await self._record(app_pk, retry)
        return result

    async def _record(
        self, app_pk: int, sent: list[tuple[MessageSpec, list[tuple[Target, Outcome]]]]
    ) -> None:
        """Store synchronous sends in the ledger; what needs a retry gets a durable job."""
        now = utcnow()
        async with self._db.transaction() as session:
            ids = await _insert_messages(session, app_pk, [spec for spec, _ in sent], resolved=True)
            rows: list[dict[str, Any]] = []
            retry_ids: list[int] = []
            first_retry: datetime | None = None
            for message_id, (_spec, results) in zip(ids, sent, strict=True):
                for target, outcome in results:
                    row = _ledger_row(message_id, target, now)
                    row.update(_outcome_update(outcome, now, attempts=1))
                    rows.append(row)
                    if outcome.kind is OutcomeKind.RETRY:
                        retry_ids.append(message_id)
                        when = row["next_attempt_at"]
                        first_retry = when if first_retry is None else min(first_retry, when)
                if not any(o.kind is OutcomeKind.RETRY for _, o in results):
                    await session.execute(
                        update(PushMessage)
                        .where(PushMessage.id == message_id)
                        .values(completed_at=now)
                    )
            if rows:
                await session.execute(insert(Delivery), rows)
            if retry_ids:
                unique = list(dict.fromkeys(retry_ids))
                jobs.enqueue(session, JOB_KIND, [{"messages": unique}], run_after=first_retry)
        if retry_ids:
            self.wake.set()

    # --- the job ---------------------------------------------------------------------------

    async def run_job(self, payload: dict[str, Any]) -> datetime | None:
        """Deliver a job's messages; return when to run it again, or None when it is done."""
        message_ids = [int(i) for i in payload["messages"]]
        messages = await self._resolve(message_ids)
        rows = await self._due_rows(message_ids, utcnow())
        groups: dict[tuple[int, int], list[_Row]] = defaultdict(list)
        for row in rows:
            if row.message_id in messages:
                groups[(row.message_id, row.attempts + 1)].append(row)
        versions = {app_id: await self._sender.versions(app_id) for app_id, _ in messages.values()}
        results: list[tuple[_Row, Outcome, int]] = []

        async def deliver(message_id: int, attempt: int, group: list[_Row]) -> None:
            app_id, notification = messages[message_id]
            outcomes = await self._sender.send_once(
                app_id,
                notification,
                [r.target for r in group],
                attempt=attempt,
                versions=versions[app_id],
            )
            results.extend((r, o, attempt) for r, o in zip(group, outcomes, strict=True))

        # Waves bound what a crash can leave accepted by a provider but not yet recorded.
        for wave in _waves(list(groups.items()), LEDGER_WAVE):
            await asyncio.gather(*(deliver(mid, n, group) for (mid, n), group in wave))
            await self._save(results)
            results.clear()
        return await self._next_run(message_ids)

    async def _save(self, results: list[tuple[_Row, Outcome, int]]) -> None:
        """Record a job's outcomes in one unit of work and forget dead tokens."""
        if not results:
            return
        now = utcnow()
        updates = [
            {"id": row.id, **_outcome_update(outcome, now, attempts=attempt)}
            for row, outcome, attempt in results
        ]
        dead = [r.target.device_id for r, o, _ in results if o.kind is OutcomeKind.TOKEN_DEAD]
        async with self._db.transaction() as session:
            await session.execute(update(Delivery), updates)
            if dead:
                await session.execute(delete(Device).where(Device.id.in_(dead)))

    async def _resolve(self, message_ids: list[int]) -> dict[int, tuple[str, Notification]]:
        """Create the ledger rows of messages not resolved yet; return (app id, notification)."""
        async with self._db.transaction() as session:
            found = (
                await session.execute(
                    select(PushMessage, Application.app_id)
                    .join(Application, Application.id == PushMessage.application_id)
                    .where(PushMessage.id.in_(message_ids))
                )
            ).all()
            unresolved = [m for m, _ in found if not m.resolved]
            if unresolved:
                now = utcnow()
                by_app: dict[int, list[PushMessage]] = defaultdict(list)
                for message in unresolved:
                    by_app[message.application_id].append(message)
                rows: list[dict[str, Any]] = []
                for app_pk, group in by_app.items():
                    devices = await self._sender.devices_of(
                        session, app_pk, {m.user_id for m in group}
                    )
                    for message in group:
                        for target in devices.get(message.user_id, []):
                            if _matches(message.activation_id, message.personal, target):
                                rows.append(_ledger_row(message.id, target, now))
                if rows:
                    await _insert_ignoring_duplicates(session, rows)
                await session.execute(
                    update(PushMessage)
                    .where(PushMessage.id.in_([m.id for m in unresolved]))
                    .values(resolved=True)
                )
        return {m.id: (app_id, notification_json.from_json(m.notification)) for m, app_id in found}

    async def _due_rows(self, message_ids: list[int], now: datetime) -> list[_Row]:
        async with self._db.reader() as session:
            result = await session.execute(
                select(Delivery).where(
                    Delivery.message_id.in_(message_ids),
                    Delivery.status == "pending",
                    (Delivery.next_attempt_at.is_(None)) | (Delivery.next_attempt_at <= now),
                )
            )
            return [
                _Row(
                    d.id,
                    d.message_id,
                    Target(d.device_id, d.platform, d.environment, d.token, None, True),
                    d.attempts,
                )
                for d in result.scalars()
            ]

    async def _next_run(self, message_ids: list[int]) -> datetime | None:
        async with self._db.transaction() as session:
            pending = (
                await session.execute(
                    select(Delivery.message_id, func.min(Delivery.next_attempt_at))
                    .where(Delivery.message_id.in_(message_ids), Delivery.status == "pending")
                    .group_by(Delivery.message_id)
                )
            ).all()
            done = set(message_ids) - {mid for mid, _ in pending}
            if done:
                await session.execute(
                    update(PushMessage)
                    .where(PushMessage.id.in_(done), PushMessage.completed_at.is_(None))
                    .values(completed_at=utcnow())
                )
        if not pending:
            return None
        times = [when or utcnow() for _, when in pending]
        return min(times)


# --- ledger helpers ------------------------------------------------------------------------


def _waves(
    items: list[tuple[tuple[int, int], list[_Row]]], size: int
) -> Iterable[list[tuple[tuple[int, int], list[_Row]]]]:
    """Split (message, attempt) groups into waves of about ``size`` devices."""
    wave: list[tuple[tuple[int, int], list[_Row]]] = []
    count = 0
    for item in items:
        wave.append(item)
        count += len(item[1])
        if count >= size:
            yield wave
            wave, count = [], 0
    if wave:
        yield wave


async def _insert_messages(
    session: AsyncSession, app_pk: int, specs: Iterable[MessageSpec], *, resolved: bool = False
) -> list[int]:
    now = utcnow()
    rows = [
        {
            "application_id": app_pk,
            "user_id": spec.user_id,
            "activation_id": spec.activation_id,
            "personal": spec.personal,
            "notification": notification_json.to_json(spec.notification),
            "expires_at": spec.notification.expires_at,
            "resolved": resolved,
            "created_at": now,
        }
        for spec in specs
    ]
    if not rows:
        return []
    result = await session.execute(
        insert(PushMessage).returning(PushMessage.id, sort_by_parameter_order=True), rows
    )
    return [int(i) for i in result.scalars()]


def _ledger_row(message_id: int, target: Target, now: datetime) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "device_id": target.device_id,
        "platform": target.platform,
        "environment": target.environment,
        "token": target.token,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": None,
        "reason": None,
        "updated_at": now,
    }


def _outcome_update(outcome: Outcome, now: datetime, *, attempts: int) -> dict[str, Any]:
    if outcome.kind is OutcomeKind.DELIVERED:
        status, reason, next_at = "sent", None, None
    elif outcome.kind is OutcomeKind.RETRY:
        delay = outcome.retry_after if outcome.retry_after is not None else 1.0
        status, reason, next_at = "pending", outcome.reason, now + timedelta(seconds=delay)
    else:
        status, reason, next_at = "failed", outcome.reason or outcome.kind.value, None
    return {
        "status": status,
        "reason": (reason or None) and reason[:255],
        "next_attempt_at": next_at,
        "attempts": attempts,
        "updated_at": now,
    }


async def _insert_ignoring_duplicates(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    dialect = session.get_bind().dialect.name
    statement = (pg_insert if dialect == "postgresql" else sqlite_insert)(Delivery)
    await session.execute(
        statement.on_conflict_do_nothing(index_elements=["message_id", "device_id"]), rows
    )
