"""Request and response bodies of the PowerAuth inbox (/inbox/messages/...).

Every text is checked here (present, not blank, within its column's length, no NUL, valid
Unicode), with a sentence naming the field, so the store never sees a value it would refuse.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from clarion.api.powerauth.body import Body
from clarion.errors import InvalidRequest

USER_ID_MAX = 255
SHORT_TEXT_MAX = 255
BODY_MAX = 65_536


def check_text(label: str, max_length: int, value: Any) -> str:
    """Refuse a missing, blank, over-long or unstorable text with one clear sentence."""
    if value is None:
        raise InvalidRequest(f"{label} must not be null.")
    if not isinstance(value, str):
        raise InvalidRequest(f"{label} must be a string.")
    if not value.strip():
        raise InvalidRequest(f"{label} must not be empty.")
    if len(value) > max_length:
        raise InvalidRequest(f"{label} must be at most {max_length} characters.")
    if "\x00" in value:
        raise InvalidRequest(f"{label} must not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{label} must be valid Unicode text.") from None
    return value


def _text(label: str, max_length: int, *, optional: bool = False) -> BeforeValidator:
    def validate(value: Any) -> Any:
        if optional and value is None:
            return None
        try:
            return check_text(label, max_length, value)
        except InvalidRequest as exc:  # pydantic reports ValueErrors; envelope.py unwraps it
            raise ValueError(exc) from None

    return BeforeValidator(validate)


def _app_list(value: Any) -> Any:
    try:
        if value is None:
            raise InvalidRequest("Applications must not be null.")
        if not isinstance(value, list):
            raise InvalidRequest("Applications must be a list of application IDs.")
        if not value:
            raise InvalidRequest("Applications must not be empty.")
        return [check_text("Application ID", SHORT_TEXT_MAX, item) for item in value]
    except InvalidRequest as exc:
        raise ValueError(exc) from None


# A missing field is given as None and refused by the validator with the field's own sentence.
UserId = Annotated[str, _text("User ID", USER_ID_MAX)]
OptionalUserId = Annotated[str | None, _text("User ID", USER_ID_MAX, optional=True)]
AppId = Annotated[str, _text("App ID", SHORT_TEXT_MAX)]
Subject = Annotated[str, _text("Subject", SHORT_TEXT_MAX)]
Summary = Annotated[str, _text("Summary", SHORT_TEXT_MAX)]
MessageBody = Annotated[str, _text("Message body", BODY_MAX)]
MessageTypeName = Annotated[str, _text("Message type", 16)]
InboxId = Annotated[str, _text("Inbox ID", 64)]
AppIds = Annotated[list[str], BeforeValidator(_app_list)]


def _required(**options: Any) -> Any:
    return Field(default=None, validate_default=True, **options)


class PostMessageRequest(Body):
    userId: UserId = _required(examples=["user-001"])
    type: MessageTypeName = _required(description="text or html", examples=["text"])
    subject: Subject = _required(examples=["Example subject"])
    summary: Summary = _required(examples=["Example summary"])
    body: MessageBody = _required(
        description="Plain text, or an HTML document stored and returned as given: "
        "clients must sanitise it before display.",
        examples=["Example message body"],
    )
    applications: AppIds = _required(examples=[["mobile-app"]])


class ReadMessageRequest(Body):
    """The official Java client's form of "mark read": the message id as ``inboxId``."""

    inboxId: InboxId = _required(examples=["ae641389-d37a-4425-bd14-41c29484596f"])
    userId: OptionalUserId = Field(
        default=None, description="clarion extension: when given, the message must be theirs"
    )


class ReadAllRequest(Body):
    userId: UserId = _required(examples=["user-001"])
    appId: AppId = _required(examples=["mobile-app"])


class InboxMessageDetail(BaseModel):
    id: str
    userId: str
    type: str
    subject: str
    summary: str
    body: str
    read: bool
    timestampCreated: str
    timestampRead: str | None = Field(description="clarion extension: when it was first read")
    applications: list[str]


class InboxMessageSummary(BaseModel):
    id: str
    type: str
    subject: str
    summary: str
    read: bool
    timestampCreated: str


class InboxMessagePage(BaseModel):
    status: Literal["OK"] = "OK"
    page: int
    size: int
    responseObject: list[InboxMessageSummary]


class UnreadCount(BaseModel):
    countUnread: int
