"""The FCM emulator checks messages the way FCM does (spec providers.md section 2.3)."""

from typing import Any

import pytest

from clarion.emulators.fcm import BadMessage, snake, validate_message

TOKEN = "dKq00001:APA91b" + "x" * 40


def test_camel_case_and_snake_case_field_names_are_both_accepted() -> None:
    message = validate_message(
        {
            "token": TOKEN,
            "android": {
                "collapseKey": "c",
                "priority": "high",
                "notification": {"titleLocKey": "K", "body_loc_key": "B"},
            },
        }
    )
    assert message["android"]["collapse_key"] == "c"
    assert message["android"]["notification"] == {"title_loc_key": "K", "body_loc_key": "B"}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({}, "message"),
        ({"token": TOKEN, "topic": "news"}, "message"),
        ({"token": "has space"}, "message.token"),
        ({"token": TOKEN, "data": {"n": 1}}, "message.data[0].value"),
        ({"token": TOKEN, "data": {"google.sent": "x"}}, "message.data[0].key"),
        ({"token": TOKEN, "android": {"ttl": "3600"}}, "message.android.ttl"),
        ({"token": TOKEN, "android": {"ttl": "9999999s"}}, "message.android.ttl"),
        ({"token": TOKEN, "android": {"priority": "URGENT"}}, "message.android.priority"),
        (
            {"token": TOKEN, "android": {"notification": {"badge": 1}}},
            "message.android.notification",
        ),
        ({"token": TOKEN, "bogus": 1}, "message"),
        ({"token": TOKEN, "data": {"big": "x" * 5000}}, "message"),
    ],
)
def test_invalid_messages_are_refused_with_the_offending_field(
    message: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadMessage) as refused:
        validate_message(message)
    assert refused.value.field == field


def test_snake_conversion() -> None:
    assert snake("bodyLocArgs") == "body_loc_args"
    assert snake("ttl") == "ttl"
