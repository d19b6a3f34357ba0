"""Messages: resolve a user's devices, send synchronously or as durable jobs, keep the ledger.

Synchronous sends make one attempt per device at once; what the provider asks to retry becomes
a durable job and is reported ``pending``. Asynchronous sends commit messages and jobs and
return; a worker runs the jobs. The ledger (``deliveries``, unique per message and device) makes
a job that runs twice (a crash, a lease that ended) send each device at most once in effect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, Text, bindparam, column, insert, select, text, update
from sqlalchemy import cast as cast_
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core import ledger
from clarion.core import notification as notification_json
from clarion.core.apps import application_pk
from clarion.core.platforms import Platform
from clarion.core.sender import LOOKUP_USERS, Sender, Target, forget_dead, log_failures
from clarion.core.worker import check_handback, check_lease
from clarion.errors import NotFound
from clarion.providers.base import Notification, Outcome, OutcomeKind
from clarion.store import jobs
from clarion.store.bulk import SQLITE_ROWS, bind, sqlite_values
from clarion.store.db import Database
from clarion.store.models import Application, PushMessage, utcnow

log = logging.getLogger(__name__)

MESSAGES_PER_JOB = 500
LEDGER_WAVE = 100  # devices sent between two ledger commits of a job
JOB_KIND = "messages"


# Built once, so the reads and the update compile once (per number of ids).
_PLAN_MESSAGES = (
    select(
        PushMessage.id,
        PushMessage.application_id,
        PushMessage.user_id,
        PushMessage.activation_id,
        PushMessage.personal,
        # As stored (text): the messages of a batch often carry the same notification, read
        # once per job below instead of once per message.
        cast_(PushMessage.notification, Text).label("notification"),
        Application.app_id,
    )
    .join(Application, Application.id == PushMessage.application_id)
    .where(PushMessage.id.in_(bindparam("ids", expanding=True)), PushMessage.completed_at.is_(None))
)
# PostgreSQL: the same read as one index probe per message, whatever the planner knows of the
# table. As ``id IN (...)`` joined to the applications, a table of messages never analyzed
# (autovacuum off, or the minutes after a burst of sends) was read whole by every job:
# bench/send.py's 100,000 messages made 187 scans of up to 100,000 rows, about a seventh of
# PostgreSQL's CPU in the run, and more as the table grows (bench/README.md, session 25).
_PLAN_COLUMNS = (
    "id",
    "application_id",
    "user_id",
    "activation_id",
    "personal",
    "notification",
    "app_id",
)
_PG_PLAN_MESSAGES = text(
    "SELECT m.id, m.application_id, m.user_id, m.activation_id, m.personal, "
    "CAST(m.notification AS TEXT) AS notification, a.app_id "
    "FROM unnest(CAST(:ids AS bigint[])) AS i(id) CROSS JOIN LATERAL "
    "(SELECT * FROM push_messages AS p WHERE p.id = i.id AND p.completed_at IS NULL "
    "OFFSET 0) AS m JOIN applications AS a ON a.id = m.application_id"
).columns(*(column(name) for name in _PLAN_COLUMNS))
_MESSAGES = cast(Table, PushMessage.__table__)
# On the table, not the ORM class: an ORM update first looks for the rows in the session.
_COMPLETE = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id.in_(bindparam("ids", expanding=True)),
        _MESSAGES.c.completed_at.is_(None),
    )
    .values(completed_at=bindparam("now"))
)


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
class _Work:
    """One device to send a message to now; ``ledger_id`` when it is a retry."""

    message_id: int
    attempt: int
    target: Target
    ledger_id: int | None


async def add_unowned(
    sender: Sender,
    app_pk: int,
    devices: dict[str, list[Target]],
    wanted: Iterable[tuple[str, str | None]],
) -> bool:
    """Add to ``devices`` (by user) the registrations with no user of the activations the
    messages name: a device registered before its user was known is reachable through its
    ``activationId`` (the spec). ``wanted``: each message's (userId, activationId). Only a
    message whose user has no registration of that activation costs a query. True if any
    registration was added."""
    missing = {
        (user, activation)
        for user, activation in wanted
        if activation is not None
        and not any(d.activation_id == activation for d in devices.get(user, ()))
    }
    if not missing:
        return False
    found = await sender.unowned(app_pk, {activation for _, activation in missing})
    for user, activation in missing:
        if activation in found:
            devices[user] = [*devices.get(user, ()), *found[activation]]
    return bool(found)


def one_per_token(targets: Iterable[Target]) -> list[Target]:
    """One registration per (platform, token), the oldest: a phone whose token is registered
    for two activations (``CLARION_MULTIPLE_ACTIVATIONS``) gets a message once, not twice."""
    kept: dict[tuple[str, str], Target] = {}
    for target in targets:
        key = (target.platform, target.token)
        if key not in kept or target.device_id < kept[key].device_id:
            kept[key] = target
    return list(kept.values())


def _matches(spec_activation: str | None, personal: bool, device: Target) -> bool:
    if spec_activation is not None and device.activation_id != spec_activation:
        return False
    return device.active or not personal


class Messages:
    """The PowerAuth message service over the delivery core."""

    def __init__(
        self, db: Database, sender: Sender, *, store_messages: bool, record_wait: float = 0.0
    ) -> None:
        self._db = db
        self._sender = sender
        self._store = store_messages
        # How long a job waits out an outage to record what the providers accepted.
        self._record_wait = record_wait
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
            ids = await _insert_messages(session, app_pk, specs, ordered=False)
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
        users = list({s.user_id for s in specs})
        if len(users) <= LOOKUP_USERS:  # the common case: one query for this and the others
            found, devices, versions = await self._sender.lookup_together(app_id, users)
            if found is None:
                raise NotFound(f"Application not found: {app_id[:255]}")
            app_pk = found
        else:
            async with self._db.reader() as session:
                app_pk = await application_pk(session, app_id)
            devices = await self._sender.devices_of(app_pk, users)
            versions = await self._sender.versions_of(app_pk)
        wanted = ((s.user_id, s.activation_id) for s in specs)
        if await add_unowned(self._sender, app_pk, devices, wanted):
            # The lookup read the credentials of the users' own devices' platforms only.
            versions = await self._sender.versions_of(app_pk)
        plans = [
            (
                spec,
                one_per_token(
                    d
                    for d in devices.get(spec.user_id, [])
                    if _matches(spec.activation_id, spec.personal, d)
                ),
            )
            for spec in specs
        ]
        outcomes = await self._sender.send_together(
            app_id, [(spec.notification, targets) for spec, targets in plans], versions=versions
        )
        retry: list[tuple[MessageSpec, list[tuple[Target, Outcome]]]] = []
        dead: list[tuple[int, Outcome]] = []
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
                        dead.append((target.device_id, outcome))
            if later or self._store:
                retry.append((spec, [(t, o) for t, o in zip(targets, results, strict=True)]))
        # The answer has counts only: the reasons go to the log.
        log_failures(
            (app_id, target.platform, outcome)
            for (_, targets), results in zip(plans, outcomes, strict=True)
            for target, outcome in zip(targets, results, strict=True)
        )
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
        retry_ids: list[int] = []

        # A message none of whose devices waits for a retry is complete as it is stored.
        completed = [
            not any(o.kind is OutcomeKind.RETRY for _, o in results) for _, results in sent
        ]

        async def record(session: AsyncSession) -> None:
            ids = await _insert_messages(
                session, app_pk, [spec for spec, _ in sent], ordered=True, completed=completed
            )
            rows: list[dict[str, Any]] = []
            retry_ids.clear()  # a second run (after a lock) starts again
            first_retry: datetime | None = None
            for message_id, (_spec, results) in zip(ids, sent, strict=True):
                for target, outcome in results:
                    row = ledger.new_row(message_id, target, now)
                    row.update(ledger.outcome_values(outcome, now, attempts=1))
                    rows.append(row)
                    if outcome.kind is OutcomeKind.RETRY:
                        retry_ids.append(message_id)
                        when = row["next_attempt_at"]
                        first_retry = when if first_retry is None else min(first_retry, when)
            if rows:
                await ledger.insert_rows(session, rows)
            if retry_ids:
                unique = list(dict.fromkeys(retry_ids))
                jobs.enqueue(session, JOB_KIND, [{"messages": unique}], run_after=first_retry)

        # What the providers accepted is recorded even if SQLite is momentarily locked.
        await self._db.record(record)
        if retry_ids:
            self.wake.set()

    # --- the job ---------------------------------------------------------------------------

    async def run_job(self, payload: dict[str, Any]) -> datetime | None:
        """Deliver a job's messages; return when to run it again, or None when it is done.

        What the ledger holds is settled (or waits for its retry time); every other target of
        a message is still to be sent. So a job that runs again after a crash sends only what
        its previous run had not recorded.
        """
        message_ids = [int(i) for i in payload["messages"]]
        now = utcnow()
        messages, work, later = await self._plan(message_ids, now)
        outcomes: list[tuple[_Work, Outcome]] = []
        groups: dict[tuple[int, int], list[_Work]] = defaultdict(list)
        for item in work:
            groups[(item.message_id, item.attempt)].append(item)
        apps = {app_id for app_id, _ in messages.values()}
        versions = {app_id: await self._sender.versions(app_id) for app_id in apps}

        async def deliver(app_id: str, attempt: int, wave: list[tuple[int, list[_Work]]]) -> None:
            # The wave's messages in one call: one provider request per device, but the
            # dispatcher's gates, slots and metrics once instead of once per message.
            results = await self._sender.send_many(
                app_id,
                [(messages[mid][1], [w.target for w in group]) for mid, group in wave],
                attempt=attempt,
                versions=versions[app_id],
            )
            for (_, group), answers in zip(wave, results, strict=True):
                outcomes.extend(zip(group, answers, strict=True))

        # Waves bound what a crash can leave accepted by a provider but not yet recorded.
        for wave in _waves(list(groups.items()), LEDGER_WAVE):
            check_handback()  # the waves before are recorded: a safe point to stop
            calls: dict[tuple[str, int], list[tuple[int, list[_Work]]]] = defaultdict(list)
            for (mid, attempt), group in wave:
                calls[(messages[mid][0], attempt)].append((mid, group))
            await asyncio.gather(*(deliver(a, n, part) for (a, n), part in calls.items()))
            later.extend(await self._save(outcomes))
            log_failures((messages[w.message_id][0], w.target.platform, o) for w, o in outcomes)
            outcomes.clear()
        if later:
            return min(later)
        # One statement, a no-op when run again: on PostgreSQL on the driver, without a unit
        # of work's BEGIN and COMMIT.
        await self._db.execute_idempotent(_COMPLETE, {"ids": message_ids, "now": utcnow()})
        return None

    async def _plan(
        self, message_ids: list[int], now: datetime
    ) -> tuple[dict[int, tuple[str, Notification]], list[_Work], list[datetime]]:
        """The messages, what to send now, and when the retries not yet due are."""
        # Separate reads (inline on SQLite): only this job, under its lease, writes the ledger
        # rows of its messages, so nothing it reads here changes between the statements.
        plan = _PG_PLAN_MESSAGES if self._db.dialect == "postgresql" else _PLAN_MESSAGES
        found = await self._db.read(plan, {"ids": message_ids})
        held = await ledger.of_messages(self._db, [m.id for m in found])
        by_app: dict[int, list[Any]] = defaultdict(list)
        for message in found:
            by_app[message.application_id].append(message)
        devices: dict[int, dict[str, list[Target]]] = {}
        for app_pk, group in by_app.items():
            devices[app_pk] = await self._sender.devices_of(app_pk, {m.user_id for m in group})
            await add_unowned(
                self._sender, app_pk, devices[app_pk], ((m.user_id, m.activation_id) for m in group)
            )
        recorded = {(row.message_id, row.device_id) for row in held}
        # A token already recorded through another registration of it is not sent again.
        recorded_tokens = {(row.message_id, row.platform, row.token) for row in held}
        work: list[_Work] = []
        later: list[datetime] = []
        for m in found:
            targets = one_per_token(
                t
                for t in devices[m.application_id].get(m.user_id, [])
                if _matches(m.activation_id, m.personal, t)
            )
            for target in targets:
                if (m.id, target.device_id) not in recorded and (
                    m.id,
                    target.platform,
                    target.token,
                ) not in recorded_tokens:
                    work.append(_Work(m.id, 1, target, None))
        for row in held:
            if row.status != "pending":
                continue
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                later.append(row.next_attempt_at)
                continue
            target = Target(row.device_id, row.platform, row.environment, row.token, None, True)
            work.append(_Work(row.message_id, row.attempts + 1, target, row.id))
        # One Notification per distinct stored text, shared by the messages that carry it: the
        # provider then builds its payload once for all of them (ApnsProvider.send_many).
        parsed: dict[str, Notification] = {}
        messages: dict[int, tuple[str, Notification]] = {}
        for m in found:
            notification = parsed.get(m.notification)
            if notification is None:
                notification = notification_json.from_json(json.loads(m.notification))
                parsed[m.notification] = notification
            messages[m.id] = (m.app_id, notification)
        return messages, work, later

    async def _save(self, outcomes: list[tuple[_Work, Outcome]]) -> list[datetime]:
        """Record outcomes in one unit of work, forget dead tokens; return the retry times."""
        if not outcomes:
            return []
        now = utcnow()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        retries: list[datetime] = []
        for item, outcome in outcomes:
            values = ledger.outcome_values(outcome, now, attempts=item.attempt)
            if values["next_attempt_at"] is not None:
                retries.append(values["next_attempt_at"])
            if item.ledger_id is None:
                inserts.append({**ledger.new_row(item.message_id, item.target, now), **values})
            else:
                updates.append({"row_id": item.ledger_id, **values})
        dead = [(w.target.device_id, o) for w, o in outcomes if o.kind is OutcomeKind.TOKEN_DEAD]

        async def record(session: AsyncSession) -> None:
            if inserts:
                await ledger.insert_rows(session, inserts)
            if updates:
                await ledger.update_rows(session, updates)
            await forget_dead(session, dead)

        check_lease()  # paused past its lease: the run that took the job over records these
        # The usual record, a wave's first outcomes, is one statement: on PostgreSQL it runs on
        # its own, without a unit of work (bench/README.md, session 24: 7% less CPU per push).
        if not (updates or dead):
            if await self._db.record_on_driver(
                ledger.PG_INSERT, ledger.pg_arrays(inserts), outage_wait=self._record_wait
            ):
                return retries
            # On a SQLite file, on the event loop's thread in one short transaction: the write
            # lock is held only while SQLite writes (store/db.py, InlineWriter).
            if await self._db.record_inline(
                ledger.sqlite_inserts(inserts, self._db.engine.dialect),
                outage_wait=self._record_wait,
            ):
                return retries
        await self._db.record(record, outage_wait=self._record_wait)
        return retries


# --- ledger helpers ------------------------------------------------------------------------


def _waves(
    items: list[tuple[tuple[int, int], list[_Work]]], size: int
) -> Iterable[list[tuple[tuple[int, int], list[_Work]]]]:
    """Split (message, attempt) groups into waves of about ``size`` devices."""
    wave: list[tuple[tuple[int, int], list[_Work]]] = []
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
    session: AsyncSession,
    app_pk: int,
    specs: Sequence[MessageSpec],
    *,
    ordered: bool,
    completed: Sequence[bool] | None = None,
) -> list[int]:
    """Insert the messages; their ids in the order of ``specs`` if ``ordered``, else in any
    order, in one statement per few hundred messages on the driver (``_insert_unordered``).
    Asking SQLAlchemy for the order makes it insert row by row on SQLite: for the few messages
    of a synchronous send only. ``completed`` (ordered only): per message, whether it is
    stored as complete already (a synchronous send with nothing left to retry)."""
    if not specs:
        return []
    if not ordered:
        return await _insert_unordered(session, app_pk, specs)
    now = utcnow()
    done = completed if completed is not None else [False] * len(specs)
    rows = [
        {
            "application_id": app_pk,
            "user_id": spec.user_id,
            "activation_id": spec.activation_id,
            "personal": spec.personal,
            "notification": notification_json.to_json(spec.notification),
            "expires_at": spec.notification.expires_at,
            "created_at": now,
            "completed_at": now if complete else None,
        }
        for spec, complete in zip(specs, done, strict=True)
    ]
    result = await session.execute(
        insert(PushMessage).returning(PushMessage.id, sort_by_parameter_order=True), rows
    )
    return [int(i) for i in result.scalars()]


_MESSAGE_COLUMNS = (
    "user_id",
    "activation_id",
    "personal",
    "notification",
    "expires_at",
    "application_id",
    "created_at",
)
# One array per varying column, unnested together; the application and the time once.
_PG_INSERT_MESSAGES = (
    "INSERT INTO push_messages (user_id, activation_id, personal, notification, expires_at, "
    "application_id, created_at) "
    "SELECT u, a, p, n::json, e, $6::int, $7::timestamptz FROM unnest($1::varchar[], "
    "$2::varchar[], $3::bool[], $4::text[], $5::timestamptz[]) AS t(u, a, p, n, e) "
    "RETURNING id"
)


async def _insert_unordered(
    session: AsyncSession, app_pk: int, specs: Sequence[MessageSpec]
) -> list[int]:
    connection = await session.connection()
    dialect = connection.dialect
    now = utcnow()
    notifications = [json.dumps(notification_json.to_json(s.notification)) for s in specs]
    if dialect.name == "postgresql":
        result = await connection.exec_driver_sql(
            _PG_INSERT_MESSAGES,
            (
                [s.user_id for s in specs],
                [s.activation_id for s in specs],
                [s.personal for s in specs],
                notifications,
                [s.notification.expires_at for s in specs],
                app_pk,
                now,
            ),
        )
        return [int(row[0]) for row in result]
    # SQLite: the values as SQLAlchemy would bind them, the shared ones converted once.
    timestamp = bind(_MESSAGES.c.created_at, dialect)
    personal = bind(_MESSAGES.c.personal, dialect)
    created = timestamp(now)
    expiry: dict[datetime, Any] = {}  # messages of one request mostly share their expiry
    ids: list[int] = []
    for start in range(0, len(specs), SQLITE_ROWS):
        chunk = specs[start : start + SQLITE_ROWS]
        args: list[Any] = []
        for spec, stored in zip(chunk, notifications[start : start + SQLITE_ROWS], strict=True):
            expires = spec.notification.expires_at
            if expires is not None and expires not in expiry:
                expiry[expires] = timestamp(expires)
            args += (
                spec.user_id,
                spec.activation_id,
                personal(spec.personal),
                stored,
                None if expires is None else expiry[expires],
                app_pk,
                created,
            )
        sql = sqlite_values("push_messages", _MESSAGE_COLUMNS, len(chunk), " RETURNING id")
        result = await connection.exec_driver_sql(sql, tuple(args))
        ids += [int(row[0]) for row in result]
    return ids
