"""Bodies of /push/message/send and /push/message/batch/send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, field_validator, model_validator

from clarion.api.powerauth.body import Body
from clarion.errors import InvalidRequest

# Booleans and numbers are taken only as JSON booleans and numbers: "yes", 1 or "3" for them
# is a wrongly typed field (400), not something to guess at.
Text = Annotated[str, Field(max_length=2048)]
Args = Annotated[list[Annotated[str, Field(max_length=512)]], Field(max_length=32)]
MAX_BATCH = 100_000


class MessageBody(Body):
    """The abstract push payload; each provider maps it to its own wire format."""

    title: Text | None = None
    titleLocKey: Text | None = None
    titleLocArgs: Args | None = None
    body: Text | None = None
    bodyLocKey: Text | None = None
    bodyLocArgs: Args | None = None
    badge: StrictInt | None = Field(default=None, ge=0, le=1_000_000)
    sound: Annotated[str, Field(max_length=255)] | None = None
    icon: Annotated[str, Field(max_length=255)] | None = None
    category: Annotated[str, Field(max_length=255)] | None = None
    collapseKey: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="At most 64 bytes in UTF-8 (APNs' limit for apns-collapse-id)"
    )
    validUntil: datetime | None = Field(
        default=None, description="After this instant the message is dropped, never sent late"
    )
    extras: dict[str, Any] | None = Field(default=None, description="Custom data")

    @field_validator("validUntil")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # a time without an offset is taken as UTC
        try:
            # Stored and compared in UTC: 9999-12-31T23:59-12:00 has no UTC instant.
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError(InvalidRequest("Valid until is out of range.")) from None

    @field_validator("collapseKey")
    @classmethod
    def _collapse_key_bytes(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > 64:
            raise ValueError(InvalidRequest("Collapse key must be at most 64 bytes in UTF-8."))
        return value


class Attributes(Body):
    personal: StrictBool = False
    silent: StrictBool = False


class Message(Body):
    userId: Annotated[str, Field(min_length=1, max_length=255)]
    activationId: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    priority: Literal["HIGH", "NORMAL"] = "HIGH"
    attributes: Attributes | None = None
    body: MessageBody

    @model_validator(mode="before")
    @classmethod
    def _attributes_in_their_place(cls, data: Any) -> Any:
        # Unknown fields are ignored, as upstream does; these two are refused: a "personal"
        # beside userId looked honoured and was not (a blocked device got the push).
        if isinstance(data, dict):
            for name in ("personal", "silent"):
                if name in data:
                    raise ValueError(
                        InvalidRequest(
                            f"{name} belongs in the message's attributes: "
                            f'"attributes": {{"{name}": true}}.'
                        )
                    )
        return data


class SendRequest(Body):
    appId: Annotated[str, Field(min_length=1, max_length=255)]
    mode: Literal["SYNCHRONOUS", "ASYNCHRONOUS"] = "SYNCHRONOUS"
    message: Message


class BatchRequest(Body):
    appId: Annotated[str, Field(min_length=1, max_length=255)]
    mode: Literal["SYNCHRONOUS", "ASYNCHRONOUS"] = "SYNCHRONOUS"
    batch: list[Message] = Field(min_length=1, max_length=MAX_BATCH)


class PlatformResult(BaseModel):
    sent: int
    pending: int
    failed: int
    total: int


class SendResult(BaseModel):
    ios: PlatformResult
    android: PlatformResult
    huawei: PlatformResult


class SendResponse(BaseModel):
    mode: Literal["SYNCHRONOUS", "ASYNCHRONOUS"]
    result: SendResult | None = None
