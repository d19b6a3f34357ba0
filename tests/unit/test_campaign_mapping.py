"""Pure pieces of campaigns: ids from paths, and a message body through storage and back."""

from __future__ import annotations

import pytest

from clarion.api.powerauth.campaigns import message_body
from clarion.api.powerauth.message_models import MessageBody
from clarion.api.powerauth.messages import to_notification
from clarion.core import notification as notification_json
from clarion.core.campaigns import parse_id
from clarion.errors import NotFound


@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("0042", 42), ("2147483647", 2**31 - 1)])
def test_campaign_id_is_parsed_from_its_digits(text: str, expected: int) -> None:
    assert parse_id(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "0", "-1", "1e3", "2147483648", "99999999999", "\u0661", " 1", "1\n", "1 "],
)
def test_anything_else_is_an_unknown_campaign(text: str) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        parse_id(text)


def test_message_body_survives_storage_unchanged() -> None:
    given = {
        "title": "Balance update",
        "titleLocKey": "balance.update.title",
        "titleLocArgs": ["a", "b"],
        "body": "Your balance is now $745.00",
        "bodyLocKey": "balance.update.body",
        "bodyLocArgs": ["c"],
        "badge": 3,
        "sound": "default",
        "icon": "custom-icon",
        "category": "balance-update",
        "collapseKey": "balance-update",
        "validUntil": "2016-10-12T11:20:04+00:00",
        "extras": {"_comment": "Any custom data.", "n": [1, 2]},
    }
    stored = notification_json.to_json(to_notification(MessageBody.model_validate(given)))
    assert message_body(notification_json.from_json(stored)) == given


def test_unset_fields_are_left_out_of_the_body() -> None:
    notification = to_notification(MessageBody.model_validate({"title": "Only a title"}))
    assert message_body(notification) == {"title": "Only a title"}
