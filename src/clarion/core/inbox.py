"""The message inbox: messages stored per user, for one or more applications, with read state.

The inbox never sends a push and never renders a body: an ``html`` body is stored and returned
exactly as given, and clients must sanitise it before display.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Executable,
    Integer,
    Select,
    Update,
    and_,
    bindparam,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import InvalidRequest, MessageNotFound, NotFound
from clarion.store.db import Database
from clarion.store.models import (
    Application,
    InboxMessage,
    InboxMessageApplication,
    UTCDateTime,
    utcnow,
)

MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000
MAX_APPLICATIONS = 100

_link = InboxMessageApplication
# Written exactly as the partial unread index's predicate (``NOT read`` on PostgreSQL,
# ``read = 0`` on SQLite), so that both planners use the index.
_unread = not_(InboxMessage.read)


class MessageType(enum.StrEnum):
    TEXT = "text"
    HTML = "html"


def parse_type(value: str) -> MessageType:
    """``text`` or ``html``, case-insensitively."""
    try:
        return MessageType(value.strip().lower())
    except ValueError:
        raise InvalidRequest(f"Unknown message type: {value[:40]!r}. Use text or html.") from None


def parse_message_id(value: str) -> uuid.UUID:
    """A message id is a UUID; anything else is a bad request, not an unknown message."""
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise InvalidRequest("Message ID must be a UUID.") from None


def check_page(page: int, size: int) -> None:
    if page < 0 or page > MAX_PAGE:
        raise InvalidRequest(f"Page must be between 0 and {MAX_PAGE}.")
    if size < 1 or size > MAX_PAGE_SIZE:
        raise InvalidRequest(f"Page size must be between 1 and {MAX_PAGE_SIZE}.")


def distinct_app_ids(app_ids: Sequence[str]) -> list[str]:
    """The application ids in first-seen order, each once; at most MAX_APPLICATIONS."""
    unique = list(dict.fromkeys(app_ids))
    if len(unique) > MAX_APPLICATIONS:
        raise InvalidRequest(f"At most {MAX_APPLICATIONS} applications are allowed.")
    return unique


@dataclass(frozen=True, slots=True)
class NewMessage:
    user_id: str
    type: MessageType
    subject: str
    summary: str
    body: str
    app_ids: Sequence[str]


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """A message as the list shows it (no body, no applications)."""

    id: uuid.UUID
    type: str
    subject: str
    summary: str
    read: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MessageDetail:
    id: uuid.UUID
    user_id: str
    type: str
    subject: str
    summary: str
    body: str
    read: bool
    created_at: datetime
    read_at: datetime | None
    app_ids: tuple[str, ...]


_SUMMARY_COLUMNS = (
    InboxMessage.id,
    InboxMessage.type,
    InboxMessage.subject,
    InboxMessage.summary,
    InboxMessage.read,
    InboxMessage.created_at,
)
_DETAIL_COLUMNS = (*_SUMMARY_COLUMNS, InboxMessage.user_id, InboxMessage.body, InboxMessage.read_at)


# Application row ids come from a per-process cache (``Inbox._application_pks``), and an
# application can be deleted (a WalletConnect tenant) and created again under a new row id,
# by any process; SQLite may even give the old row id to another application. So every
# statement that takes cached row ids also checks, in the same statement, that they still
# belong to the application ids asked for (an uncorrelated subquery on the primary key,
# evaluated once): if not, the statement finds nothing and the caller looks the ids up again.
_APPS_STAND = select(func.count()).select_from(Application).where(
    Application.id.in_(bindparam("app_pks", expanding=True)),
    Application.app_id.in_(bindparam("app_ids", expanding=True)),
).scalar_subquery() == bindparam("app_count", type_=Integer())
_APP_STANDS = exists().where(
    Application.id == bindparam("app_pk"), Application.app_id == bindparam("app_id")
)


# The hot statements are built once, with bound parameters: building a statement per request
# costs more CPU than running it.
def _list_statement(
    only_unread: bool, filtered: bool
) -> Select[uuid.UUID, str, str, str, bool, datetime]:
    query = (
        select(*_SUMMARY_COLUMNS)
        .where(InboxMessage.user_id == bindparam("user_id"))
        .order_by(InboxMessage.created_at.desc(), InboxMessage.id.desc())
        .limit(bindparam("limit", type_=Integer()))
        .offset(bindparam("offset", type_=Integer()))
    )
    if only_unread:
        query = query.where(_unread)
    if filtered:
        query = query.where(
            exists().where(
                _link.message_id == InboxMessage.id,
                _link.application_id.in_(bindparam("app_pks", expanding=True)),
            ),
            _APPS_STAND,
        )
    return query


_LIST = {(u, f): _list_statement(u, f) for u in (False, True) for f in (False, True)}
_COUNT_UNREAD = (
    select(func.count())
    .select_from(InboxMessage)
    .join(
        _link,
        and_(_link.message_id == InboxMessage.id, _link.application_id == bindparam("app_pk")),
    )
    .where(InboxMessage.user_id == bindparam("user_id"), _unread, _APP_STANDS)
)
_DETAIL = (
    select(*_DETAIL_COLUMNS, Application.app_id)
    .select_from(InboxMessage)
    .outerjoin(_link, _link.message_id == InboxMessage.id)
    .outerjoin(Application, Application.id == _link.application_id)
    .where(InboxMessage.id == bindparam("message_id"))
    .order_by(Application.app_id)
)
_MARK_READ = (
    update(InboxMessage)
    .where(InboxMessage.id == bindparam("message_id"), _unread)
    .values(read=True, read_at=bindparam("read_time", type_=UTCDateTime()))
)
_MARK_READ_OF_USER = _MARK_READ.where(InboxMessage.user_id == bindparam("owner"))


def _mark_and_detail(mark: Update) -> Executable:
    """PostgreSQL: mark the message read and answer its detail in one statement (one round
    trip). The update is a CTE, whose changes the outer SELECT does not see, so the read
    flag and time are taken from what the update returned when it changed the row."""
    marked = mark.returning(InboxMessage.id, InboxMessage.read_at).cte("marked")
    return (
        select(
            InboxMessage.id,
            InboxMessage.type,
            InboxMessage.subject,
            InboxMessage.summary,
            or_(InboxMessage.read, marked.c.id.is_not(None)).label("read"),
            InboxMessage.created_at,
            InboxMessage.user_id,
            InboxMessage.body,
            func.coalesce(marked.c.read_at, InboxMessage.read_at).label("read_at"),
            Application.app_id,
        )
        .select_from(InboxMessage)
        .outerjoin(marked, marked.c.id == InboxMessage.id)
        .outerjoin(_link, _link.message_id == InboxMessage.id)
        .outerjoin(Application, Application.id == _link.application_id)
        .where(InboxMessage.id == bindparam("message_id"))
        .order_by(Application.app_id)
    )


_MARK_AND_DETAIL = {False: _mark_and_detail(_MARK_READ), True: _mark_and_detail(_MARK_READ_OF_USER)}
_MARK_ALL_READ = (
    update(InboxMessage)
    .where(
        InboxMessage.user_id == bindparam("owner"),
        _unread,
        _APP_STANDS,
        InboxMessage.id.in_(
            select(_link.message_id).where(_link.application_id == bindparam("app_pk"))
        ),
    )
    .values(read=True, read_at=bindparam("read_time", type_=UTCDateTime()))
)


def _summary(row: Any) -> MessageSummary:
    return MessageSummary(*row)


_DetailRows = Sequence[Any]  # rows of _DETAIL, read by column name


async def _detail_rows(session: AsyncSession, message_id: uuid.UUID) -> _DetailRows:
    return (await session.execute(_DETAIL, {"message_id": message_id})).all()


def _detail(rows: _DetailRows, message_id: uuid.UUID, user_id: str | None) -> MessageDetail:
    """The message with its applications (the rows of ``_DETAIL``); MessageNotFound if it is
    not theirs."""
    if not rows or (user_id is not None and rows[0].user_id != user_id):
        # Another user's message is answered exactly like a missing one: nothing leaks.
        raise MessageNotFound(f"Inbox message not found: {message_id}")
    first = rows[0]
    return MessageDetail(
        id=first.id,
        user_id=first.user_id,
        type=first.type,
        subject=first.subject,
        summary=first.summary,
        body=first.body,
        read=first.read,
        created_at=first.created_at,
        read_at=first.read_at,
        app_ids=tuple(row.app_id for row in rows if row.app_id is not None),
    )


class Inbox:
    """Post, list, count, read and mark messages in users' inboxes.

    Reads are single statements through ``Database.read``: inline on a read-only connection on
    a SQLite file, on asyncpg directly on PostgreSQL (one round trip, each statement its own
    transaction, run once more if the connection was dead). Mark-read and read-all are single
    statements in their own transaction too (``Database.execute_idempotent`` /
    ``fetch_idempotent``), run once more if the connection was dead: a no-op the second time.
    Application row ids are cached once found. An application can be deleted (a WalletConnect
    tenant) and created again under another row id, by any process, so a cached id is never
    trusted alone: a post looks its applications up in its own transaction, and the reads
    check the cached ids in the same statement (``_APPS_STAND``); an empty answer is checked
    again against the table (``_recheck``) before it is believed.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._app_pks: dict[str, int] = {}

    async def _application_pks(
        self, app_ids: Sequence[str], session: AsyncSession | None = None
    ) -> list[int]:
        """Row ids of the applications, in order; NotFound names the first unknown one. Looked
        up in ``session`` if given (never from the cache: the caller writes with them), else
        from the cache or by a read of its own."""
        if session is not None:
            for app_id in app_ids:
                self._app_pks.pop(app_id, None)
        missing = [app_id for app_id in app_ids if app_id not in self._app_pks]
        if missing:
            lookup = select(Application.app_id, Application.id).where(
                Application.app_id.in_(missing)
            )
            rows = await (
                session.execute(lookup) if session is not None else self._db.read(lookup, {})
            )
            self._app_pks.update({row.app_id: row.id for row in rows})
        for app_id in app_ids:
            if app_id not in self._app_pks:
                raise NotFound(f"Application not found: {app_id[:255]}")
        return [self._app_pks[app_id] for app_id in app_ids]

    async def _recheck(self, app_ids: Sequence[str], params: dict[str, Any]) -> bool:
        """After an empty answer from a statement given cached row ids: look the applications
        up afresh (NotFound if one is gone). False if the row ids stood, so the answer was
        right; True if they had changed and ``params`` now holds the fresh ones (ask again)."""
        cached = [self._app_pks.pop(app_id, None) for app_id in app_ids]
        fresh = await self._application_pks(app_ids)
        if fresh == cached:
            return False
        if "app_pks" in params:
            params["app_pks"] = fresh
        else:
            [params["app_pk"]] = fresh
        return True

    async def post(self, new: NewMessage) -> MessageDetail:
        """Store a message for a user and the given (existing) applications."""
        app_ids = distinct_app_ids(new.app_ids)
        if not app_ids:
            raise InvalidRequest("Applications must not be empty.")
        message_id = uuid.uuid4()
        async with self._db.transaction() as session:
            app_pks = await self._application_pks(app_ids, session)
            await session.execute(
                insert(InboxMessage).values(
                    id=message_id,
                    user_id=new.user_id,
                    type=new.type.value,
                    subject=new.subject,
                    summary=new.summary,
                    body=new.body,
                    read=False,
                    created_at=utcnow(),
                    read_at=None,
                )
            )
            await session.execute(
                insert(_link), [{"message_id": message_id, "application_id": pk} for pk in app_pks]
            )
            return _detail(await _detail_rows(session, message_id), message_id, new.user_id)

    async def messages(
        self,
        user_id: str,
        app_ids: Sequence[str] | None,
        *,
        only_unread: bool,
        page: int,
        size: int,
    ) -> list[MessageSummary]:
        """One page of the user's messages, newest first; ``app_ids`` None means every app."""
        check_page(page, size)
        params: dict[str, Any] = {"user_id": user_id, "limit": size, "offset": page * size}
        statement = _LIST[only_unread, app_ids is not None]
        if app_ids is None:
            rows = await self._db.read(statement, params)
        else:
            unique = distinct_app_ids(app_ids)
            params.update(
                app_pks=await self._application_pks(unique), app_ids=unique, app_count=len(unique)
            )
            rows = await self._db.read(statement, params)
            if not rows and await self._recheck(unique, params):
                rows = await self._db.read(statement, params)
        return [_summary(row) for row in rows]

    async def count_unread(self, user_id: str, app_id: str) -> int:
        """How many of the user's messages for the application are unread."""
        [app_pk] = await self._application_pks([app_id])
        params = {"user_id": user_id, "app_pk": app_pk, "app_id": app_id}
        count = await self._count(params)
        if not count and await self._recheck([app_id], params):
            count = await self._count(params)
        return count

    async def _count(self, params: dict[str, Any]) -> int:
        rows = await self._db.read(_COUNT_UNREAD, params)
        return int(rows[0][0] or 0) if rows else 0

    async def detail(self, message_id: uuid.UUID, user_id: str | None = None) -> MessageDetail:
        """The full message; with ``user_id``, only if it is that user's."""
        rows = await self._db.read(_DETAIL, {"message_id": message_id})
        return _detail(rows, message_id, user_id)

    async def read(self, message_id: uuid.UUID, user_id: str | None = None) -> MessageDetail:
        """Mark the message read (first read time kept: reading again is a no-op)."""
        params = {"message_id": message_id, "read_time": utcnow(), "owner": user_id}
        # Committed on its own: the first reader sets the read time.
        if self._db.dialect == "postgresql":
            rows = await self._db.fetch_idempotent(_MARK_AND_DETAIL[user_id is not None], params)
        else:  # SQLite has no UPDATE in a WITH clause: two statements
            await self._db.execute_idempotent(
                _MARK_READ if user_id is None else _MARK_READ_OF_USER, params
            )
            rows = await self._db.read(_DETAIL, {"message_id": message_id})
        return _detail(rows, message_id, user_id)

    async def read_all(self, user_id: str, app_id: str) -> int:
        """Mark every unread message of the user for the application read; how many changed."""
        [app_pk] = await self._application_pks([app_id])
        params = {"owner": user_id, "app_pk": app_pk, "app_id": app_id, "read_time": utcnow()}
        changed = await self._db.execute_idempotent(_MARK_ALL_READ, params)
        if not changed and await self._recheck([app_id], params):
            changed = await self._db.execute_idempotent(_MARK_ALL_READ, params)
        return changed
