"""HMS Push Kit message JSON for each notification field, compared as exact payloads."""

import json
from datetime import UTC, datetime, timedelta

from clarion.providers.base import Notification, Priority
from clarion.providers.hms_payload import hms_collapse_key, hms_message, hms_request_body

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def test_full_notification_maps_every_field() -> None:
    notification = Notification(
        title="Payment",
        title_loc_key="PAY_TITLE",
        title_loc_args=("Alice",),
        body="You received 10 EUR",
        body_loc_key="PAY_BODY",
        body_loc_args=("10", "EUR"),
        badge=3,
        sound="chime",
        icon="ic_pay",
        category="payments",
        collapse_key="7",
        expires_at=NOW + timedelta(hours=1),
        priority=Priority.NORMAL,
        extras={"order": "42", "count": 2},
    )
    assert hms_message(notification, now=NOW) == {
        "android": {
            "urgency": "NORMAL",
            "ttl": "3600s",
            "collapse_key": 7,
            "notification": {
                "title": "Payment",
                "body": "You received 10 EUR",
                "title_loc_key": "PAY_TITLE",
                "title_loc_args": ["Alice"],
                "body_loc_key": "PAY_BODY",
                "body_loc_args": ["10", "EUR"],
                "icon": "ic_pay",
                "tag": "payments",
                "sound": "chime",
                "default_sound": False,
                "click_action": {"type": 3},
            },
        },
        "data": '{"order":"42","count":2}',
    }


def test_default_sound_uses_the_system_sound() -> None:
    message = hms_message(Notification(title="Hi", sound="default"), now=NOW)
    assert message == {
        "android": {
            "urgency": "HIGH",
            "notification": {"title": "Hi", "default_sound": True, "click_action": {"type": 3}},
        }
    }


def test_silent_notification_is_data_only() -> None:
    message = hms_message(Notification(title="x", silent=True, extras={"k": "v"}), now=NOW)
    assert message == {"android": {"urgency": "HIGH"}, "data": '{"k":"v"}'}


def test_walletconnect_blob_is_a_data_message_json_string() -> None:
    message = hms_message(Notification(topic="a1b2", blob="ZW5j"), now=NOW)
    assert message == {"android": {"urgency": "HIGH"}, "data": '{"topic":"a1b2","blob":"ZW5j"}'}


def test_ttl_is_capped_at_fifteen_days() -> None:
    message = hms_message(Notification(body="x", expires_at=NOW + timedelta(days=30)), now=NOW)
    assert message["android"]["ttl"] == "1296000s"


def test_collapse_key_only_survives_as_an_integer_group() -> None:
    assert hms_collapse_key("-1") == -1
    assert hms_collapse_key("100") == 100
    assert hms_collapse_key("101") is None
    assert hms_collapse_key("balance") is None
    assert hms_collapse_key(None) is None


def test_request_body_lists_tokens() -> None:
    body = hms_request_body({"android": {"urgency": "HIGH"}}, ["a", "b"])
    assert json.loads(body) == {
        "validate_only": False,
        "message": {"android": {"urgency": "HIGH"}, "token": ["a", "b"]},
    }


def test_text_goes_as_utf8_not_escaped() -> None:
    # HMS counts the body's bytes; its data is a JSON string inside the JSON: escaped, "ж"
    # grew to 7 bytes ("\\u0436") instead of 2.
    note = Notification(title="ж" * 10, extras={"k": "ж"})
    body = hms_request_body(hms_message(note, now=NOW), ["a"])
    assert ("ж" * 10).encode() in body and b"\\u" not in body
    assert json.loads(json.loads(body)["message"]["data"]) == {"k": "ж"}
