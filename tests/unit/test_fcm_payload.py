"""FCM HTTP v1 message JSON for each notification field, compared as exact payloads."""

import json
from datetime import UTC, datetime, timedelta

from clarion.providers.base import Notification, Priority
from clarion.providers.fcm_payload import (
    fcm_message,
    fcm_request_body,
    local_rejection,
    ttl_seconds,
)

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def test_full_notification_maps_every_field_to_android_config() -> None:
    notification = Notification(
        title="Payment",
        title_loc_key="PAY_TITLE",
        title_loc_args=("Alice",),
        body="You received 10 EUR",
        body_loc_key="PAY_BODY",
        body_loc_args=("10", "EUR"),
        badge=3,
        sound="chime.mp3",
        icon="ic_pay",
        category="payments",
        collapse_key="balance",
        expires_at=NOW + timedelta(seconds=90),
        priority=Priority.NORMAL,
        extras={"order": "42", "count": 2, "paid": True, "meta": {"a": 1}},
    )
    assert fcm_message(notification, now=NOW) == {
        "android": {
            "priority": "NORMAL",
            "ttl": "90s",
            "collapse_key": "balance",
            "notification": {
                "title": "Payment",
                "body": "You received 10 EUR",
                "title_loc_key": "PAY_TITLE",
                "title_loc_args": ["Alice"],
                "body_loc_key": "PAY_BODY",
                "body_loc_args": ["10", "EUR"],
                "sound": "chime.mp3",
                "icon": "ic_pay",
                "tag": "payments",
            },
        },
        "data": {"order": "42", "count": "2", "paid": "true", "meta": '{"a":1}'},
    }


def test_minimal_notification_has_high_priority_and_no_data() -> None:
    assert fcm_message(Notification(title="Hi"), now=NOW) == {
        "android": {"priority": "HIGH", "notification": {"title": "Hi"}}
    }


def test_silent_notification_is_data_only() -> None:
    notification = Notification(title="ignored", sound="x", silent=True, extras={"k": "v"})
    assert fcm_message(notification, now=NOW) == {
        "android": {"priority": "HIGH"},
        "data": {"k": "v"},
    }


def test_walletconnect_blob_is_a_data_message_with_topic_and_blob() -> None:
    notification = Notification(topic="a1b2", blob="ZW5jcnlwdGVk", extras={"flags": 1})
    assert fcm_message(notification, now=NOW) == {
        "android": {"priority": "HIGH"},
        "data": {"flags": "1", "topic": "a1b2", "blob": "ZW5jcnlwdGVk"},
    }


def test_cleartext_walletconnect_push_shows_title_and_carries_topic_and_blob() -> None:
    notification = Notification(title="Sign", body="Approve?", topic="t", blob="b")
    assert fcm_message(notification, now=NOW) == {
        "android": {"priority": "HIGH"},
        "notification": {"title": "Sign", "body": "Approve?"},
        "data": {"topic": "t", "blob": "b"},
    }


def test_request_body_wraps_message_with_token() -> None:
    body = fcm_request_body(fcm_message(Notification(body="x"), now=NOW), "tok-1")
    assert json.loads(body) == {
        "message": {
            "android": {"priority": "HIGH", "notification": {"body": "x"}},
            "token": "tok-1",
        }
    }


def test_ttl_rounds_up_clamps_at_zero_and_at_the_ceiling() -> None:
    assert ttl_seconds(NOW + timedelta(seconds=1.2), NOW, 100) == 2
    assert ttl_seconds(NOW - timedelta(seconds=5), NOW, 100) == 0
    assert ttl_seconds(NOW + timedelta(days=60), NOW, 2_419_200) == 2_419_200
    assert ttl_seconds(None, NOW, 100) is None


def test_naive_expiry_is_read_as_utc() -> None:
    naive = (NOW + timedelta(seconds=30)).replace(tzinfo=None)
    assert ttl_seconds(naive, NOW, 100) == 30


def test_reserved_data_keys_are_refused_before_sending() -> None:
    assert local_rejection(fcm_message(Notification(body="x", extras={"fromage": "1"}))) is None
    assert local_rejection(fcm_message(Notification(body="x", extras={"Google": "1"}))) is None
    for key in ("from", "message_type", "google", "google.c.a", "gcm", "gcm.n.e"):
        message = fcm_message(Notification(body="x", extras={"ok": "1", key: "1"}))
        assert local_rejection(message) == f"INVALID_ARGUMENT: data key {key!r} is reserved by FCM"


def test_text_goes_as_utf8_not_escaped() -> None:
    # FCM counts the message's bytes: "ж" escaped as \u0436 is 6 of them, in UTF-8 it is 2.
    note = Notification(title="ж" * 10, extras={"k": {"v": "é"}})
    body = fcm_request_body(fcm_message(note, now=NOW), "tok-1")
    assert ("ж" * 10).encode() in body and b"\\u" not in body
    assert json.loads(body)["message"]["data"] == {"k": '{"v":"é"}'}


def test_an_empty_collapse_key_is_none() -> None:
    message = fcm_message(Notification(title="t", collapse_key=""), now=NOW)
    assert "collapse_key" not in message["android"]
