"""The hot write paths that bypass SQLAlchemy's row-by-row binding (``clarion.store.bulk``):
accepted asynchronous messages and delivery-ledger rows must read back exactly as written, on
SQLite and PostgreSQL, across the statements a large batch is split into."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from clarion.core import ledger
from clarion.core.messages import MESSAGES_PER_JOB, MessageSpec
from clarion.core.sender import Target
from clarion.core.services import Services
from clarion.providers.base import Notification, Outcome, OutcomeKind, Priority
from clarion.store.bulk import SQLITE_ROWS
from clarion.store.models import Application, Delivery, Device, Job, PushMessage, utcnow


async def add_app(services: Services) -> int:
    async with services.db.transaction() as session:
        app = Application(app_id="bulk-app")
        session.add(app)
        await session.flush()
        return app.id


def spec(i: int, expires: datetime) -> MessageSpec:
    return MessageSpec(
        user_id=f"user-{i}",
        activation_id=f"act-{i}" if i % 3 == 0 else None,
        personal=i % 2 == 0,
        notification=Notification(
            title=f"Title {i}",
            body='é ✓ "quoted" \\ {i}',
            title_loc_args=("a", str(i)),
            badge=i,
            priority=Priority.NORMAL if i % 5 == 0 else Priority.HIGH,
            silent=i % 7 == 0,
            extras={"n": i, "nested": {"k": [1, None]}},
            expires_at=None if i % 4 == 0 else expires + timedelta(seconds=i % 2),
        ),
    )


async def test_an_async_batch_is_stored_field_for_field_with_its_jobs(
    services: Services,
) -> None:
    await add_app(services)
    count = 2 * SQLITE_ROWS + 37  # three statements on SQLite
    expires = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    specs = [spec(i, expires) for i in range(count)]
    before = utcnow()
    ids = await services.messages.enqueue("bulk-app", specs)
    after = utcnow()

    assert len(ids) == count and len(set(ids)) == count
    async with services.db.reader() as session:
        rows = (await session.scalars(select(PushMessage).where(PushMessage.id.in_(ids)))).all()
        jobs = (await session.scalars(select(Job))).all()
    by_user = {row.user_id: row for row in rows}
    assert len(by_user) == count
    for i, wanted in enumerate(specs):
        row = by_user[f"user-{i}"]
        assert row.activation_id == wanted.activation_id
        assert row.personal is wanted.personal
        assert row.expires_at == wanted.notification.expires_at
        assert row.completed_at is None
        assert before <= row.created_at <= after
        assert row.notification["title"] == f"Title {i}"
        assert row.notification["extras"] == {"n": i, "nested": {"k": [1, None]}}
    # The jobs hold every message once, in jobs of at most MESSAGES_PER_JOB.
    held = [m for job in jobs for m in job.payload["messages"]]
    assert sorted(held) == sorted(ids)
    assert max(len(job.payload["messages"]) for job in jobs) == MESSAGES_PER_JOB


async def test_a_stored_message_rebuilds_the_notification_that_was_accepted(
    services: Services,
) -> None:
    await add_app(services)
    expires = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    specs = [spec(i, expires) for i in range(12)]
    ids = await services.messages.enqueue("bulk-app", specs)
    messages, work, later = await services.messages._plan(ids, utcnow())
    assert work == [] and later == []  # no devices: nothing to send
    # ids come back in no particular order: match each message by its title.
    rebuilt = {n.title: n for _, n in messages.values()}
    assert rebuilt == {s.notification.title: s.notification for s in specs}
    assert {app for app, _ in messages.values()} == {"bulk-app"}


async def test_ledger_rows_read_back_as_written_and_a_second_insert_adds_nothing(
    services: Services,
) -> None:
    app_pk = await add_app(services)
    ids = await services.messages.enqueue("bulk-app", [spec(i, utcnow()) for i in range(3)])
    async with services.db.transaction() as session:
        devices = [
            Device(
                application_id=app_pk,
                platform="ios",
                environment="production",
                token=f"{i:064x}",
                user_id=f"user-{i}",
                activation_id=f"dev-{i}",
            )
            for i in range(SQLITE_ROWS + 10)
        ]
        session.add_all(devices)
        await session.flush()
        device_ids = [d.id for d in devices]
    now = utcnow()
    retry_at = now + timedelta(seconds=30)
    rows = []
    for n, device_id in enumerate(device_ids):
        target = Target(device_id, "ios", "production", f"{n:064x}", None, True)
        token = f"{n:064x}"
        outcome = (
            Outcome(token, OutcomeKind.RETRY, reason="TooManyRequests", retry_after=30)
            if n % 3 == 0
            else Outcome(token, OutcomeKind.DELIVERED)
            if n % 3 == 1
            else Outcome(token, OutcomeKind.FAILED, reason="BadTopic")
        )
        row = ledger.new_row(ids[n % len(ids)], target, now)
        row.update(ledger.outcome_values(outcome, now, attempts=1))
        rows.append(row)

    async with services.db.transaction() as session:
        added = await ledger.insert_rows(session, rows)
    async with services.db.transaction() as session:
        again = await ledger.insert_rows(session, rows[:20])
    assert added == len(rows) and again == 0

    async with services.db.reader() as session:
        stored = (await session.scalars(select(Delivery))).all()
        due = await session.scalar(select(func.count()).where(Delivery.next_attempt_at <= retry_at))
    assert len(stored) == len(rows)
    by_device = {d.device_id: d for d in stored}
    for row in rows:
        got = by_device[row["device_id"]]
        assert (got.message_id, got.token, got.status, got.reason, got.attempts) == (
            row["message_id"],
            row["token"],
            row["status"],
            row["reason"],
            row["attempts"],
        )
        assert got.updated_at == now
        assert got.next_attempt_at == row["next_attempt_at"]
    # Stored timestamps compare as times in SQL (SQLite compares their text).
    assert due == sum(1 for row in rows if row["next_attempt_at"] is not None)
