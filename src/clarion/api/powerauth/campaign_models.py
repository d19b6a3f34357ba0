"""Bodies of /push/campaign/..."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field

from clarion.api.powerauth.body import Body
from clarion.api.powerauth.message_models import MessageBody, SendResult
from clarion.errors import InvalidRequest

MAX_USER_ID = 255
MAX_USERS_PER_REQUEST = 1_000_000
MAX_PAGE_SIZE = 10_000


def _user_ids(value: Any) -> Any:
    """A list of 1 to 255 character strings, checked in one pass (a request may carry 10^6)."""
    if value is None:
        raise ValueError(InvalidRequest("Request object must not be null."))
    if not isinstance(value, list):
        raise ValueError(InvalidRequest("Request object must be a list of user IDs."))
    if len(value) > MAX_USERS_PER_REQUEST:
        raise ValueError(
            InvalidRequest(f"At most {MAX_USERS_PER_REQUEST} user IDs can be given at once.")
        )
    for index, user in enumerate(value):
        if not isinstance(user, str) or not 0 < len(user) <= MAX_USER_ID:
            raise ValueError(
                InvalidRequest(
                    f"User ID at position {index} must be a string of 1 to "
                    f"{MAX_USER_ID} characters."
                )
            )
    return value


UserIds = Annotated[list[str], BeforeValidator(_user_ids)]


class CreateCampaignRequest(Body):
    appId: Annotated[str, Field(min_length=1, max_length=255)]
    message: MessageBody | None = None


class CreatedCampaign(BaseModel):
    id: str


class DeletedCampaign(BaseModel):
    deleted: bool


class TestSendRequest(Body):
    userId: Annotated[str, Field(min_length=1, max_length=MAX_USER_ID)]


class TestSendResponse(BaseModel):
    """clarion's extension: what the test send did, per platform (the seed answers OK only)."""

    result: SendResult


class DeviceProgress(BaseModel):
    """clarion's extension: the devices of the live send and where they are."""

    total: int
    sent: int
    failed: int
    pending: int


class CampaignSummary(BaseModel):
    """A campaign as the list shows it (no devices' progress: that is the detail's)."""

    id: str
    appId: str
    sent: bool
    message: dict[str, Any]
    # As the inbox and the service status write times: UTC, milliseconds, "+00:00".
    timestampCreated: str | None = Field(default=None, examples=["2026-12-01T14:12:43.123+00:00"])
    timestampSent: str | None = None
    timestampCompleted: str | None = None


class CampaignDetail(CampaignSummary):
    devices: DeviceProgress | None = None


class CampaignUsers(BaseModel):
    campaignId: str
    users: list[str]


class UserPage(BaseModel):
    status: str = "OK"
    page: int
    size: int
    responseObject: CampaignUsers
