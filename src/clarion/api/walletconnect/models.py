"""Request and response bodies of the WalletConnect dialect.

Lengths match the store's columns (and the providers' payload limits), NUL characters are
refused, and numbers and booleans are strict (no ``"5"`` for 5): a wrong value is a 400 naming
the field, never a database error.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

NO_NUL = r"^[^\x00]*$"
MAX_BLOB = 4096  # APNs and FCM refuse payloads over 4 KB: a larger blob cannot be delivered

Id = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_NUL)]
U32 = Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RegisterClient(Body):
    client_id: Id = Field(description="The relay pairing id; a leading did:key: is stripped.")
    type: Annotated[str, Field(min_length=1, max_length=32, pattern=NO_NUL)] = Field(
        description="apns, apns-sandbox, fcm, fcm_v1 or noop (case-insensitive)"
    )
    token: Annotated[str, Field(min_length=1, max_length=512, pattern=NO_NUL)]
    # null is taken as absent, as the Rust server's Option<bool> takes it.
    always_raw: Annotated[bool | None, Field(strict=True)] = False


class SeedPayload(Body):
    """``{topic, flags, blob}``: encrypted (flag 1) blobs are opaque, cleartext is base64 JSON."""

    topic: Id
    flags: U32
    blob: Annotated[str, Field(min_length=1, max_length=MAX_BLOB, pattern=NO_NUL)]


class RawPayload(Body):
    """``{topic, tag, message}``: upstream's raw form, passed through."""

    topic: Id
    tag: U32
    message: Annotated[str, Field(min_length=1, max_length=MAX_BLOB, pattern=NO_NUL)]


# Fields only the raw form has: a body with one of them and none of the seed form's is read
# as raw, so a raw push missing its message is told so (not that it lacks id and payload).
_RAW_ONLY = ("message", "tag")


def _payload_form(value: Any) -> str:
    if (
        isinstance(value, dict)
        and any(k in value for k in _RAW_ONLY)
        and "blob" not in value
        and "flags" not in value
    ):
        return "raw"
    if isinstance(value, BaseModel):
        return "raw" if isinstance(value, RawPayload | RawPush) else "seed"
    return "seed"


Payload = Annotated[
    Annotated[SeedPayload, Tag("seed")] | Annotated[RawPayload, Tag("raw")],
    Discriminator(_payload_form),
]


class SeedPush(Body):
    id: Id = Field(description="The relay's message id: a second push with it sends nothing.")
    payload: Payload


class RawPush(RawPayload):
    """The raw form at the top level; without an ``id`` the message's hash deduplicates it."""

    id: Id | None = None


def _push_form(value: Any) -> str:
    if isinstance(value, dict) and "payload" not in value and any(k in value for k in _RAW_ONLY):
        return "raw"
    return _payload_form(value) if isinstance(value, BaseModel) else "seed"


PushRequest = Annotated[
    Annotated[SeedPush, Tag("seed")] | Annotated[RawPush, Tag("raw")],
    Discriminator(_push_form),
]


class CreateTenant(Body):
    id: Id


class TenantCreated(BaseModel):
    url: str


class TenantDetail(BaseModel):
    url: str
    enabled_providers: list[str]
    apns_topic: str | None = None
    apns_type: str | None = None
    suspended: bool
    suspended_reason: str | None = None


class Deleted(BaseModel):
    success: bool = True
