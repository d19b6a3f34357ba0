"""The message inbox: /inbox/messages/...

The hot routes (``hot.py``) call the list, count, detail and query-form read functions below
directly for requests in their plain form, so both paths build the same bodies."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AfterValidator

from clarion.api.powerauth.deps import ServicesDep
from clarion.api.powerauth.envelope import (
    NoNul,
    ObjectRequest,
    ObjectResponse,
    OkResponse,
    PowerAuthRoute,
    add_routes,
    ok,
)
from clarion.api.powerauth.inbox_models import (
    InboxMessageDetail,
    InboxMessagePage,
    PostMessageRequest,
    ReadAllRequest,
    ReadMessageRequest,
    UnreadCount,
)
from clarion.api.powerauth.status import iso
from clarion.core.inbox import (
    MAX_PAGE_SIZE,
    MessageDetail,
    NewMessage,
    parse_message_id,
    parse_type,
)
from clarion.errors import InvalidRequest

router = APIRouter(route_class=PowerAuthRoute, tags=["Inbox"])


def _not_blank(label: str) -> AfterValidator:
    """A blank query value is refused as the body forms refuse one (the spec: empty → 400)."""

    def check(value: str | None) -> str | None:
        if value is not None and value.isspace():
            raise ValueError(InvalidRequest(f"{label} must not be empty."))
        return value

    return AfterValidator(check)


UserIdQuery = Annotated[str, Query(min_length=1, max_length=255), NoNul, _not_blank("User ID")]
AppIdQuery = Annotated[str, Query(min_length=1, max_length=255), NoNul, _not_blank("App ID")]
MessageIdQuery = Annotated[str | None, Query(max_length=64), NoNul]
OptionalUserIdQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=255, description="When given, the message must be theirs."),
    NoNul,
    _not_blank("User ID"),
]


def _detail(message: MessageDetail) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "userId": message.user_id,
        "type": message.type,
        "subject": message.subject,
        "summary": message.summary,
        "body": message.body,
        "read": message.read,
        "timestampCreated": iso(message.created_at),
        "timestampRead": iso(message.read_at) if message.read_at else None,
        "applications": list(message.app_ids),
    }


def _app_filter(applications: str | None) -> list[str] | None:
    """``a,b`` -> ["a", "b"]; absent or empty means every application."""
    if applications is None:
        return None
    app_ids = [part.strip() for part in applications.split(",") if part.strip()]
    return app_ids or None


@router.post(
    "/inbox/messages",
    response_model=ObjectResponse[InboxMessageDetail],
    summary="Post a message to a user's inbox",
)
async def post_message(
    request: ObjectRequest[PostMessageRequest], svc: ServicesDep
) -> dict[str, Any]:
    """Store the message (``read: false``). It does not send a push: send one separately."""
    body = request.requestObject
    message = await svc.inbox.post(
        NewMessage(
            user_id=body.userId,
            type=parse_type(body.type),
            subject=body.subject,
            summary=body.summary,
            body=body.body,
            app_ids=body.applications,
        )
    )
    return ok(_detail(message))


@router.get(
    "/inbox/messages/list",
    response_model=InboxMessagePage,
    summary="List a user's messages, newest first",
)
async def list_messages(
    svc: ServicesDep,
    userId: UserIdQuery,
    applications: Annotated[
        str | None,
        Query(
            max_length=100 * 256,
            description="Comma-separated application IDs; absent: every application.",
            examples=["mobile-app,web-app"],
        ),
        NoNul,
    ] = None,
    onlyUnread: bool = False,
    page: Annotated[int, Query(description="Zero-based page index.")] = 0,
    size: Annotated[int, Query(description=f"Page size, 1 to {MAX_PAGE_SIZE}.")] = 100,
) -> dict[str, Any]:
    messages = await svc.inbox.messages(
        userId, _app_filter(applications), only_unread=onlyUnread, page=page, size=size
    )
    return {
        "status": "OK",
        "page": page,
        "size": size,
        "responseObject": [
            {
                "id": str(m.id),
                "type": m.type,
                "subject": m.subject,
                "summary": m.summary,
                "read": m.read,
                "timestampCreated": iso(m.created_at),
            }
            for m in messages
        ],
    }


@router.get(
    "/inbox/messages/count",
    response_model=ObjectResponse[UnreadCount],
    summary="Count a user's unread messages for an application",
)
async def count_unread(svc: ServicesDep, userId: UserIdQuery, appId: AppIdQuery) -> dict[str, Any]:
    return ok({"countUnread": await svc.inbox.count_unread(userId, appId)})


@router.get(
    "/inbox/messages/detail",
    response_model=ObjectResponse[InboxMessageDetail],
    summary="Message detail",
)
async def message_detail(
    svc: ServicesDep,
    messageId: MessageIdQuery = None,
    id: Annotated[  # the official Java client's parameter name
        str | None, Query(max_length=64, description="The official Java client's name."), NoNul
    ] = None,
    userId: OptionalUserIdQuery = None,
) -> dict[str, Any]:
    if messageId is not None and id is not None and messageId != id:
        raise InvalidRequest("Give the message ID once, as messageId or as id.")
    message_id = _message_id(messageId if messageId is not None else id)
    return ok(_detail(await svc.inbox.detail(message_id, userId)))


def _message_id(value: str | None) -> uuid.UUID:
    if value is None or not value.strip():
        raise InvalidRequest("Message ID must not be null.")
    return parse_message_id(value)


async def read_message_by_query(
    svc: ServicesDep, userId: UserIdQuery, messageId: MessageIdQuery = None
) -> dict[str, Any]:
    """Mark the user's message read; already read is a no-op (the first read time stays)."""
    return ok(_detail(await svc.inbox.read(_message_id(messageId), userId)))


async def read_message(
    request: ObjectRequest[ReadMessageRequest], svc: ServicesDep
) -> dict[str, Any]:
    """Mark the message read (the official Java client's form); already read is a no-op."""
    body = request.requestObject
    return ok(_detail(await svc.inbox.read(_message_id(body.inboxId), body.userId)))


async def read_all_by_query(
    svc: ServicesDep, userId: UserIdQuery, appId: AppIdQuery
) -> dict[str, Any]:
    """Mark every unread message of the user for the application read."""
    await svc.inbox.read_all(userId, appId)
    return ok()


async def read_all(request: ObjectRequest[ReadAllRequest], svc: ServicesDep) -> dict[str, Any]:
    """Mark every unread message of the user for the application read (Java client's form)."""
    body = request.requestObject
    await svc.inbox.read_all(body.userId, body.appId)
    return ok()


add_routes(
    router,
    read_message_by_query,
    [("PUT", "/inbox/messages/read")],
    response_model=ObjectResponse[InboxMessageDetail],
    summary="Mark a message read",
)
add_routes(
    router,
    read_message,
    [("POST", "/inbox/messages/read")],
    response_model=ObjectResponse[InboxMessageDetail],
    summary="Mark a message read (official Java client form, inboxId in the body)",
)
add_routes(
    router,
    read_all_by_query,
    [("PUT", "/inbox/messages/read-all")],
    response_model=OkResponse,
    summary="Mark all of a user's messages for an application read",
)
add_routes(
    router,
    read_all,
    [("POST", "/inbox/messages/read-all")],
    response_model=OkResponse,
    summary="Mark all messages read (official Java client form, body)",
)
