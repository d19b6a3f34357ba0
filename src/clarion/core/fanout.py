"""The campaign fan-out: plan pages of users, deliver each page, once per device.

One job kind, ``campaign``, with two shapes of payload:

- ``{"campaign": id}`` plans. It walks the campaign's users by user id (keyset pagination over
  ``campaign_users``) and, for every page, in one transaction: records the page
  (``campaign_pages``, with its registrations counted), enqueues one page job, and moves its
  cursor. A planner that dies resumes at its cursor; no page is planned twice.
- ``{"campaign": id, "after": a, "upto": b}`` delivers the page: the devices of the users
  ``a < user_id <= b`` that have no ledger row yet, and the page's ledger rows waiting for a retry.
  Each chunk is sent, then its ledger rows are written (one insert per push, no update on the
  happy path). Pages are separate jobs, so every worker sharing the database takes pages of the
  same campaign. The campaign is completed when its last page is done.

Every query is an index lookup with a bounded IN list (an array parameter on PostgreSQL), so a
page costs the same on the first page of a campaign of ten and the last of a million.

Once per device: a token registered under two users of the campaign (two registrations of one
phone) is sent once, for its lowest registration id; the ledger is unique per (message, device).
A page that runs again (its worker died, its lease ended) skips every device with a ledger row,
so the only repeats are the chunk a worker had in flight when it died: sent, not yet recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, any_, bindparam, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core import ledger
from clarion.core import notification as notification_json
from clarion.core.campaign_progress import count_outcomes, finished
from clarion.core.sender import (
    PG_COUNT_DEVICES_OF,
    PG_DEVICES_OF,
    Sender,
    Target,
    forget_dead,
    log_failures,
)
from clarion.core.worker import check_handback, check_lease
from clarion.providers.base import Notification, Outcome, OutcomeKind
from clarion.store import jobs
from clarion.store.db import Database
from clarion.store.models import (
    Application,
    Campaign,
    CampaignPage,
    CampaignUser,
    Delivery,
    Device,
    PushMessage,
    utcnow,
)

log = logging.getLogger(__name__)

JOB_KIND = "campaign"
PAGES_PER_PLANNER_RUN = 20  # then the planner yields its slot and runs again at once
SEND_CHUNK = 1_000  # ledger rows sent, then recorded, at a time: the most a crash can repeat


@dataclass(frozen=True, slots=True)
class _Row:
    """A pending ledger row with what is needed to send it."""

    id: int
    target: Target
    attempts: int
    next_attempt_at: datetime | None = None


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
        self,
        db: Database,
        sender: Sender,
        *,
        page_size: int,
        wake: asyncio.Event,
        record_wait: float = 0.0,
    ) -> None:
        self._db = db
        self._sender = sender
        self._page_size = page_size
        self._wake = wake
        # How long a page waits out an outage to record what the providers accepted.
        self._record_wait = record_wait

    async def run_job(self, payload: dict[str, Any]) -> datetime | None:
        campaign_id = int(payload["campaign"])
        if "upto" in payload:
            after = payload.get("after")
            return await self.send_page(
                campaign_id, None if after is None else str(after), str(payload["upto"])
            )
        return await self.plan(campaign_id)

    # --- planning --------------------------------------------------------------------------

    async def plan(self, campaign_id: int) -> datetime | None:
        """Schedule up to a number of pages; return now if there are more, None when done."""
        for _ in range(PAGES_PER_PLANNER_RUN):
            check_handback()
            async with self._db.transaction() as session:
                live = await _live(session, campaign_id, lock=True)
                if live is None:
                    return None
                campaign = await session.get(Campaign, campaign_id)
                assert campaign is not None
                # Planned already: a run that ended (a crash) between marking it planned and
                # completing it. Every page may be done, and no page job would complete it.
                users = (
                    []
                    if campaign.planned
                    else await _next_users(
                        session, campaign_id, campaign.planned_through, self._page_size
                    )
                )
                after = campaign.planned_through
                if not users:
                    campaign.planned = True
                else:
                    upto = users[-1]
                    devices = await _count_devices(session, live, users)
                    session.add(
                        CampaignPage(
                            campaign_id=campaign_id,
                            upto=upto,
                            after=after,
                            devices=devices,
                            done=False,
                        )
                    )
                    jobs.enqueue(
                        session,
                        JOB_KIND,
                        [{"campaign": campaign_id, "after": after, "upto": upto}],
                    )
                    campaign.planned_through = upto
                    campaign.devices_total = campaign.devices_total + devices
            self._wake.set()
            if not users:
                await self._complete_if_done(live)
                return None
        return utcnow()

    # --- delivering ------------------------------------------------------------------------

    async def send_page(self, campaign_id: int, after: str | None, upto: str) -> datetime | None:
        """Send the page; return when to run it again (retries), or None once all are final."""
        async with self._db.reader() as session:
            live = await _live(session, campaign_id)
            if live is None:
                return None  # deleted meanwhile: nothing more to send
            users = await _users_between(session, campaign_id, after, upto)
            targets = await _page_targets(session, live, users)
            recorded = await _recorded(session, live, [t.device_id for t in targets])
        fresh = [t for t in targets if t.device_id not in recorded]
        # Final already: every row read was final and this run wrote every other row, final.
        # Then there is nothing pending to look for (two queries per page, saved).
        final = all(status != "pending" for status in recorded.values())
        for i in range(0, len(fresh), SEND_CHUNK):
            # The chunks before are recorded: a safe point to stop. It also stops a run whose
            # lease ended (this process was paused past it): the run that took over sends the
            # rest. (Reading the ledger again before each chunk cost PostgreSQL twice the CPU
            # per push of a million-device campaign.)
            check_handback()
            final = await self._send_fresh(live, fresh[i : i + SEND_CHUNK]) and final
        if not final:
            ids = [t.device_id for t in targets]
            retries = await self._pending(live, ids, due=utcnow())
            for i in range(0, len(retries), SEND_CHUNK):
                check_handback()
                await self._send_retries(live, retries[i : i + SEND_CHUNK])
            waiting = await self._pending(live, ids, due=None)
            if waiting:
                return min(r.next_attempt_at or utcnow() for r in waiting)
        async with self._db.transaction() as session:
            await session.execute(
                update(CampaignPage)
                .where(CampaignPage.campaign_id == campaign_id, CampaignPage.upto == upto)
                .values(done=True)
            )
        await self._complete_if_done(live)
        return None

    async def _send_fresh(self, live: _Live, targets: list[Target]) -> bool:
        """Send to devices with no ledger row yet and record the outcomes. True if every row
        written is final and was written by this call (no other run had recorded one first)."""
        outcomes = await self._sender.send_once(live.app_id, live.notification, targets)
        now = utcnow()
        rows = []
        for target, outcome in zip(targets, outcomes, strict=True):
            row = ledger.new_row(live.message_id, target, now)
            row.update(ledger.outcome_values(outcome, now, attempts=1))
            rows.append(row)
        inserted: int | None = None

        async def record(session: AsyncSession) -> None:
            nonlocal inserted
            inserted = await ledger.insert_rows(session, rows)
            await _forget_dead(session, targets, outcomes)
            if inserted == len(rows):
                # Else another run recorded some of them, and counted them: these outcomes are
                # left out (the count at completion, from the ledger, has every device once).
                await _add_to_counters(session, live.campaign_id, outcomes)

        check_lease()  # paused past its lease: the run that took the page over records these
        await self._db.record(record, outage_wait=self._record_wait)
        count_outcomes(outcomes)
        log_failures((live.app_id, t.platform, o) for t, o in zip(targets, outcomes, strict=True))
        return inserted == len(rows) and all(row["status"] != "pending" for row in rows)

    async def _pending(
        self, live: _Live, device_ids: list[int], *, due: datetime | None
    ) -> list[_Row]:
        """The page's ledger rows still pending (only those due by ``due``, when given)."""
        found: list[_Row] = []
        async with self._db.reader() as session:
            postgresql = session.get_bind().dialect.name == "postgresql"
            for chunk in _chunks(device_ids):
                rows: Any
                if postgresql:  # one index probe per device, as _recorded
                    params: dict[str, Any] = {"ids": list(chunk), "message_id": live.message_id}
                    if due is not None:
                        params["due"] = due
                    statement = _PG_PENDING if due is None else _PG_PENDING_DUE
                    rows = await session.execute(statement, params)
                else:
                    query = select(
                        *(Delivery.__table__.c[name] for name in _PENDING_COLUMNS)
                    ).where(
                        Delivery.message_id == live.message_id,
                        Delivery.device_id.in_(chunk),
                        Delivery.status == "pending",
                    )
                    if due is not None:
                        query = query.where(
                            Delivery.next_attempt_at.is_(None) | (Delivery.next_attempt_at <= due)
                        )
                    rows = await session.execute(query)
                found += [
                    _Row(
                        r.id,
                        Target(r.device_id, r.platform, r.environment, r.token, None, True),
                        r.attempts,
                        r.next_attempt_at,
                    )
                    for r in rows
                ]
        return found

    async def _send_retries(self, live: _Live, rows: Sequence[_Row]) -> None:
        by_attempt: dict[int, list[_Row]] = defaultdict(list)
        for row in rows:
            by_attempt[row.attempts + 1].append(row)
        for attempt, group in by_attempt.items():
            targets = [r.target for r in group]
            outcomes = await self._sender.send_once(
                live.app_id, live.notification, targets, attempt=attempt
            )
            now = utcnow()
            updates = [
                {"row_id": row.id, **ledger.outcome_values(outcome, now, attempts=attempt)}
                for row, outcome in zip(group, outcomes, strict=True)
            ]
            check_lease()
            await self._db.record(
                _updater(live.campaign_id, updates, targets, outcomes),
                outage_wait=self._record_wait,
            )
            count_outcomes(outcomes)
            log_failures(
                (live.app_id, t.platform, o) for t, o in zip(targets, outcomes, strict=True)
            )

    async def _complete_if_done(self, live: _Live) -> None:
        """Stamp the campaign completed once it is planned and every page is done."""
        pending = exists().where(
            CampaignPage.campaign_id == live.campaign_id, CampaignPage.done.is_(False)
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
                # The counters may have counted a page twice (its lease ended while its first
                # worker still ran it): the ledger is the truth, counted once, here.
                sent, failed = await _final_counts(session, live.message_id)
                await session.execute(
                    update(Campaign)
                    .where(Campaign.id == live.campaign_id)
                    .values(devices_sent=sent, devices_failed=failed)
                )
                log.info("campaign completed", extra={"campaign": live.campaign_id})


# --- queries -------------------------------------------------------------------------------


async def _final_counts(session: AsyncSession, message_id: int) -> tuple[int, int]:
    rows = await session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.message_id == message_id, Delivery.status != "pending")
        .group_by(Delivery.status)
    )
    counts = {status: int(n) for status, n in rows}
    return counts.get("sent", 0), counts.get("failed", 0)


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


# PostgreSQL: which of these (distinct) tokens have more than one registration in the app,
# one probe of the (application_id, token) index per token. As ``token = ANY(...)``, a devices
# table without statistics was planned as a scan of every device of the app, filtered: 11 ms
# for 2,000 tokens at 50,000 devices, on every page of a campaign.
_PG_SHARED_TOKENS = text(
    "SELECT t.token FROM unnest(CAST(:tokens AS text[])) AS t(token) CROSS JOIN LATERAL"
    " (SELECT count(*) AS n FROM devices AS dv"
    " WHERE dv.application_id = :app_pk AND dv.token = t.token OFFSET 0) AS c WHERE c.n > 1"
)


def _one_of(session: AsyncSession, column: Any, values: Sequence[Any], item: Any) -> Any:
    """``column IN values``; on PostgreSQL one array parameter (``= ANY($1)``), which spares
    SQLAlchemy rendering thousands of bind parameters for every page."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(item)))
    return column.in_(values)


def _chunks(items: Sequence[Any], size: int = 5_000) -> Iterator[Sequence[Any]]:
    """Bounded IN lists: every query here stays an index lookup, on SQLite and PostgreSQL."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def _next_users(
    session: AsyncSession, campaign_id: int, after: str | None, limit: int
) -> list[str]:
    """The next page of the campaign's users by user id (keyset over the primary key)."""
    query = select(CampaignUser.user_id).where(CampaignUser.campaign_id == campaign_id)
    if after is not None:
        query = query.where(CampaignUser.user_id > after)
    return list(await session.scalars(query.order_by(CampaignUser.user_id).limit(limit)))


async def _users_between(
    session: AsyncSession, campaign_id: int, after: str | None, upto: str
) -> list[str]:
    query = select(CampaignUser.user_id).where(
        CampaignUser.campaign_id == campaign_id, CampaignUser.user_id <= upto
    )
    if after is not None:
        query = query.where(CampaignUser.user_id > after)
    return list(await session.scalars(query))


async def _page_targets(session: AsyncSession, live: _Live, users: Sequence[str]) -> list[Target]:
    """The devices of a page of users, each token once.

    A token registered under several users of the campaign (one phone, two activations) goes
    to its lowest registration id among them, whichever page that registration is in, so two
    pages never both send it. Every query is an index lookup over a bounded list of users or
    tokens (on PostgreSQL one index probe per value, whatever the table's statistics): no join
    whose plan could turn into a scan of the whole campaign on every page.
    """
    devices: list[Any] = []
    postgresql = session.get_bind().dialect.name == "postgresql"
    for chunk in _chunks(users):
        if postgresql:  # one index probe per user, whatever the statistics (sender.py)
            found = await session.execute(
                PG_DEVICES_OF, {"app_pk": live.app_pk, "users": list(chunk)}
            )
        else:
            found = await session.execute(
                select(
                    Device.id,
                    Device.platform,
                    Device.environment,
                    Device.token,
                    Device.user_id,
                ).where(Device.application_id == live.app_pk, Device.user_id.in_(chunk))
            )
        devices += found.all()
    if not devices:
        return []
    page_users = set(users)
    shared: list[str] = []  # tokens with more than one registration in the app (rare)
    for chunk in _chunks(list({d.token for d in devices})):
        if postgresql:  # one index probe per token, whatever the statistics
            shared += await session.scalars(
                _PG_SHARED_TOKENS, {"app_pk": live.app_pk, "tokens": list(chunk)}
            )
            continue
        shared += await session.scalars(
            select(Device.token)
            .where(Device.application_id == live.app_pk, Device.token.in_(chunk))
            .group_by(Device.token)
            .having(func.count() > 1)
        )
    if not shared:
        return [
            Target(d.id, d.platform, d.environment, d.token, None, True)
            for d in sorted(devices, key=lambda d: d.id)
        ]
    registrations: list[Any] = []
    for chunk in _chunks(shared):
        registrations += (
            await session.execute(
                select(Device.id, Device.platform, Device.token, Device.user_id).where(
                    Device.application_id == live.app_pk,
                    _one_of(session, Device.token, chunk, String()),
                )
            )
        ).all()
    outside = list({r.user_id for r in registrations if r.user_id not in page_users} - {None})
    members = set(page_users)
    for chunk in _chunks(outside):
        members.update(
            await session.scalars(
                select(CampaignUser.user_id).where(
                    CampaignUser.campaign_id == live.campaign_id,
                    _one_of(session, CampaignUser.user_id, chunk, String()),
                )
            )
        )
    first: dict[tuple[str, str], int] = {}
    for r in registrations:
        if r.user_id in members:
            key = (r.platform, r.token)
            first[key] = min(first.get(key, r.id), r.id)
    return [
        Target(d.id, d.platform, d.environment, d.token, None, True)
        for d in sorted(devices, key=lambda d: d.id)
        if first.get((d.platform, d.token), d.id) == d.id
    ]


async def _count_devices(session: AsyncSession, live: _Live, users: Sequence[str]) -> int:
    """Registrations of a page of users (a token shared by two users counts twice here; the
    ledger has the exact figure once the campaign completes)."""
    total = 0
    postgresql = session.get_bind().dialect.name == "postgresql"
    for chunk in _chunks(users):
        if postgresql:  # one index probe per user, whatever the statistics (sender.py)
            count = await session.scalar(
                PG_COUNT_DEVICES_OF, {"app_pk": live.app_pk, "users": list(chunk)}
            )
        else:
            count = await session.scalar(
                select(func.count()).where(
                    Device.application_id == live.app_pk, Device.user_id.in_(chunk)
                )
            )
        total += int(count or 0)
    return total


# PostgreSQL: a page's ledger rows by one probe of the (message_id, device_id) index per
# device. As ``message_id = :m AND device_id = ANY(:ids)``, a ledger without statistics was
# planned as a scan of every row of the message, each tested against the whole list: 77 ms a
# page at 200,000 rows, growing with the campaign (bench/campaign.py, pg_stat_statements).
_PG_RECORDED = text(
    "SELECT d.device_id, d.status FROM unnest(CAST(:ids AS integer[])) AS x(id)"
    " CROSS JOIN LATERAL (SELECT dl.device_id, dl.status FROM deliveries AS dl"
    " WHERE dl.message_id = :message_id AND dl.device_id = x.id OFFSET 0) AS d"
)

# What a page reads of its pending ledger rows, to send them again.
_PENDING_COLUMNS = (
    "id",
    "device_id",
    "platform",
    "environment",
    "token",
    "attempts",
    "next_attempt_at",
)


def _pg_pending(due: str) -> Any:
    """The page's pending rows by one index probe per device (as ``_PG_RECORDED``), with the
    extra condition ``due``."""
    return text(
        "SELECT d.* FROM unnest(CAST(:ids AS integer[])) AS x(id)"  # noqa: S608 - constant SQL
        " CROSS JOIN LATERAL (SELECT "
        + ", ".join(f"dl.{name}" for name in _PENDING_COLUMNS)
        + " FROM deliveries AS dl WHERE dl.message_id = :message_id AND dl.device_id = x.id"
        " AND dl.status = 'pending'" + due + " OFFSET 0) AS d"
    ).columns(*(Delivery.__table__.c[name] for name in _PENDING_COLUMNS))


_PG_PENDING = _pg_pending("")
_PG_PENDING_DUE = _pg_pending(" AND (dl.next_attempt_at IS NULL OR dl.next_attempt_at <= :due)")


async def _recorded(session: AsyncSession, live: _Live, device_ids: list[int]) -> dict[int, str]:
    """The devices that already have a ledger row for the campaign's message, with its
    status."""
    found: dict[int, str] = {}
    postgresql = session.get_bind().dialect.name == "postgresql"
    for chunk in _chunks(device_ids):
        if postgresql:
            rows = await session.execute(
                _PG_RECORDED, {"ids": list(chunk), "message_id": live.message_id}
            )
        else:
            rows = await session.execute(
                select(Delivery.device_id, Delivery.status).where(
                    Delivery.message_id == live.message_id, Delivery.device_id.in_(chunk)
                )
            )
        found.update((device_id, status) for device_id, status in rows)
    return found


def _updater(
    campaign_id: int,
    updates: list[dict[str, Any]],
    targets: Sequence[Target],
    outcomes: Sequence[Outcome],
) -> Callable[[AsyncSession], Awaitable[None]]:
    async def update(session: AsyncSession) -> None:
        await ledger.update_rows(session, updates)
        await _forget_dead(session, targets, outcomes)
        await _add_to_counters(session, campaign_id, outcomes)

    return update


_ADD_TO_COUNTERS = (
    update(Campaign)
    # Once completed, the counters are the ledger's exact figures: a late run adds nothing.
    .where(Campaign.id == bindparam("campaign_id"), Campaign.completed_at.is_(None))
    .values(
        devices_sent=Campaign.devices_sent + bindparam("add_sent", type_=Integer()),
        devices_failed=Campaign.devices_failed + bindparam("add_failed", type_=Integer()),
    )
)


async def _add_to_counters(
    session: AsyncSession, campaign_id: int, outcomes: Sequence[Outcome]
) -> None:
    """Add a chunk's final outcomes to the campaign's counters, in the transaction of its
    ledger rows (a retry is not final: pending is what the total leaves)."""
    sent, failed = finished(outcomes)
    if sent or failed:
        await session.execute(
            _ADD_TO_COUNTERS, {"campaign_id": campaign_id, "add_sent": sent, "add_failed": failed}
        )


async def _forget_dead(
    session: AsyncSession, targets: Sequence[Target], outcomes: Sequence[Outcome]
) -> None:
    await forget_dead(
        session,
        [
            (t.device_id, o)
            for t, o in zip(targets, outcomes, strict=True)
            if o.kind is OutcomeKind.TOKEN_DEAD
        ],
    )
