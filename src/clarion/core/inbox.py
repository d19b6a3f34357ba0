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

from sqlalchemy import Select, and_, exists, func, not_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import InvalidRequest, MessageNotFound, NotFound
from clarion.store.db import Database
from clarion.store.models import Application, InboxMessage, InboxMessageApplication, utcnow

MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000
MAX_APPLICATIONS = 100

_link = InboxMessageApplication
_unread = not_(InboxMessage.read)  # the same predicate as the partial index, so it is used


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


async def _application_pks(session: AsyncSession, app_ids: Sequence[str]) -> list[int]:
    """Row ids of the applications, in the given order; NotFound names the first unknown one."""
    rows = await session.execute(
        select(Application.app_id, Application.id).where(Application.app_id.in_(app_ids))
    )
    found = {app_id: pk for app_id, pk in rows}
    for app_id in app_ids:
        if app_id not in found:
            raise NotFound(f"Application not found: {app_id[:255]}")
    return [found[app_id] for app_id in app_ids]


async def _detail(
    session: AsyncSession, message_id: uuid.UUID, user_id: str | None
) -> MessageDetail:
    message = await session.get(InboxMessage, message_id, populate_existing=True)
    if message is None or (user_id is not None and message.user_id != user_id):
        # Another user's message is answered exactly like a missing one: nothing leaks.
        raise MessageNotFound(f"Inbox message not found: {message_id}")
    app_ids = await session.scalars(
        select(Application.app_id)
        .join(_link, _link.application_id == Application.id)
        .where(_link.message_id == message_id)
        .order_by(Application.app_id)
    )
    return MessageDetail(
        id=message.id,
        user_id=message.user_id,
        type=message.type,
        subject=message.subject,
        summary=message.summary,
        body=message.body,
        read=message.read,
        created_at=message.created_at,
        read_at=message.read_at,
        app_ids=tuple(app_ids),
    )


class Inbox:
    """Post, list, count, read and mark messages in users' inboxes."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def post(self, new: NewMessage) -> MessageDetail:
        """Store a message for a user and the given (existing) applications."""
        app_ids = distinct_app_ids(new.app_ids)
        if not app_ids:
            raise InvalidRequest("Applications must not be empty.")
        message_id = uuid.uuid4()
        async with self._db.transaction() as session:
            app_pks = await _application_pks(session, app_ids)
            session.add(
                InboxMessage(
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
            await session.flush()
            session.add_all(
                InboxMessageApplication(message_id=message_id, application_id=pk) for pk in app_pks
            )
            await session.flush()
            return await _detail(session, message_id, new.user_id)

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
        async with self._db.reader() as session:
            query = self._list_query(user_id, only_unread)
            if app_ids is not None:
                app_pks = await _application_pks(session, distinct_app_ids(app_ids))
                query = query.where(
                    exists().where(
                        _link.message_id == InboxMessage.id, _link.application_id.in_(app_pks)
                    )
                )
            rows = await session.execute(query.limit(size).offset(page * size))
            return [MessageSummary(*row) for row in rows]

    @staticmethod
    def _list_query(
        user_id: str, only_unread: bool
    ) -> Select[uuid.UUID, str, str, str, bool, datetime]:
        query = (
            select(
                InboxMessage.id,
                InboxMessage.type,
                InboxMessage.subject,
                InboxMessage.summary,
                InboxMessage.read,
                InboxMessage.created_at,
            )
            .where(InboxMessage.user_id == user_id)
            .order_by(InboxMessage.created_at.desc(), InboxMessage.id.desc())
        )
        return query.where(_unread) if only_unread else query

    async def count_unread(self, user_id: str, app_id: str) -> int:
        """How many of the user's messages for the application are unread."""
        async with self._db.reader() as session:
            [app_pk] = await _application_pks(session, [app_id])
            count = await session.scalar(
                select(func.count())
                .select_from(InboxMessage)
                .join(
                    _link,
                    and_(_link.message_id == InboxMessage.id, _link.application_id == app_pk),
                )
                .where(InboxMessage.user_id == user_id, _unread)
            )
        return int(count or 0)

    async def detail(self, message_id: uuid.UUID, user_id: str | None = None) -> MessageDetail:
        """The full message; with ``user_id``, only if it is that user's."""
        async with self._db.reader() as session:
            return await _detail(session, message_id, user_id)

    async def read(self, message_id: uuid.UUID, user_id: str | None = None) -> MessageDetail:
        """Mark the message read (first read time kept: reading again is a no-op)."""
        query = update(InboxMessage).where(InboxMessage.id == message_id, _unread)
        if user_id is not None:
            query = query.where(InboxMessage.user_id == user_id)
        async with self._db.transaction() as session:
            await session.execute(
                query.values(read=True, read_at=utcnow()),
                execution_options={"synchronize_session": False},
            )
            return await _detail(session, message_id, user_id)

    async def read_all(self, user_id: str, app_id: str) -> int:
        """Mark every unread message of the user for the application read; how many changed."""
        async with self._db.transaction() as session:
            [app_pk] = await _application_pks(session, [app_id])
            in_app = select(_link.message_id).where(_link.application_id == app_pk)
            result = await session.execute(
                update(InboxMessage)
                .where(InboxMessage.user_id == user_id, _unread, InboxMessage.id.in_(in_app))
                .values(read=True, read_at=utcnow()),
                execution_options={"synchronize_session": False},
            )
        return int(getattr(result, "rowcount", 0) or 0)
