"""The HMS emulator checks send bodies the way Push Kit does (spec providers.md section 3.3)."""

import json
from typing import Any

import pytest

from clarion.emulators.hms import BadMessage, validate_message

NOTE = {"title": "t", "body": "b", "click_action": {"type": 3}}


def body(message: dict[str, Any]) -> bytes:
    return json.dumps({"validate_only": False, "message": message}).encode()


def test_valid_message_returns_its_tokens() -> None:
    message, tokens = validate_message(
        body({"token": ["a", "b"], "data": "{}", "android": {"notification": NOTE}})
    )
    assert tokens == ["a", "b"]
    assert message["data"] == "{}"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"token": []}, "80300010"),
        ({"token": ["x"] * 1001}, "80300010"),
        ({"token": ["a"], "topic": "t"}, "80100001"),
        ({"token": ["a"], "data": {"k": "v"}}, "80100003"),
        ({"token": ["a"], "android": {"collapse_key": "7"}}, "80100013"),
        ({"token": ["a"], "android": {"collapse_key": 101}}, "80100013"),
        ({"token": ["a"], "android": {"urgency": "high"}}, "80100003"),
        ({"token": ["a"], "android": {"ttl": "1296001s"}}, "80100003"),
        ({"token": ["a"], "android": {"notification": {"title": "t"}}}, "80100003"),
        ({"token": ["a"], "data": "x" * 5000}, "80300008"),
    ],
)
def test_invalid_messages_get_push_kit_result_codes(message: dict[str, Any], code: str) -> None:
    with pytest.raises(BadMessage) as refused:
        validate_message(body(message))
    assert refused.value.code == code


def test_a_body_that_is_not_json_is_an_illegal_payload() -> None:
    with pytest.raises(BadMessage) as refused:
        validate_message(b"{nope")
    assert refused.value.code == "80100003"
