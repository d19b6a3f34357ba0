import json
from datetime import UTC, datetime

from clarion.providers.apns_payload import (
    build_headers,
    build_payload,
    encode_payload,
    local_rejection,
)
from clarion.providers.base import Notification, Priority


def test_visible_notification_maps_every_field() -> None:
    n = Notification(
        title="Hi",
        title_loc_key="T_KEY",
        title_loc_args=("a", "b"),
        body="There",
        body_loc_key="B_KEY",
        body_loc_args=("c",),
        badge=3,
        sound="ping.aiff",
        category="MSG",
        collapse_key="thread-1",
        extras={"orderId": 42, "nested": {"x": [1]}},
    )
    assert build_payload(n) == {
        "aps": {
            "alert": {
                "title": "Hi",
                "title-loc-key": "T_KEY",
                "title-loc-args": ["a", "b"],
                "body": "There",
                "loc-key": "B_KEY",
                "loc-args": ["c"],
            },
            "badge": 3,
            "sound": "ping.aiff",
            "category": "MSG",
            "thread-id": "thread-1",
        },
        "orderId": 42,
        "nested": {"x": [1]},
    }


def test_empty_notification_is_an_empty_aps() -> None:
    assert build_payload(Notification()) == {"aps": {}}


def test_badge_zero_is_kept_to_clear_the_badge() -> None:
    assert build_payload(Notification(badge=0)) == {"aps": {"badge": 0}}


def test_silent_notification_is_content_available_without_alert_sound_or_badge() -> None:
    n = Notification(title="x", body="y", badge=1, sound="s", silent=True, extras={"k": "v"})
    assert build_payload(n) == {"aps": {"content-available": 1}, "k": "v"}


def test_extras_cannot_replace_aps() -> None:
    assert build_payload(Notification(body="b", extras={"aps": {"badge": 9}, "k": 1})) == {
        "aps": {"alert": {"body": "b"}},
        "k": 1,
    }


def test_encrypted_walletconnect_blob_gets_the_generic_mutable_alert() -> None:
    n = Notification(topic="abc123", blob="ZW5jcnlwdGVk")
    assert build_payload(n) == {
        "aps": {
            "alert": {"title": "You have new notifications. Open to view"},
            "mutable-content": 1,
            "content-available": 1,
        },
        "topic": "abc123",
        "blob": "ZW5jcnlwdGVk",
    }


def test_cleartext_walletconnect_blob_shows_its_title_and_body() -> None:
    n = Notification(title="Gm", body="New message", topic="t", blob="eyJ0aXRsZSI6IkdtIn0=")
    assert build_payload(n) == {
        "aps": {
            "alert": {"title": "Gm", "body": "New message"},
            "mutable-content": 1,
            "content-available": 1,
        },
        "topic": "t",
        "blob": "eyJ0aXRsZSI6IkdtIn0=",
    }


def test_payload_is_compact_utf8_json() -> None:
    body = encode_payload(Notification(title="Grüße"))
    assert body == '{"aps":{"alert":{"title":"Grüße"}}}'.encode()
    assert json.loads(body) == {"aps": {"alert": {"title": "Grüße"}}}


def test_alert_headers_are_priority_10_by_default() -> None:
    assert build_headers(Notification(body="b"), topic="com.example.app") == {
        "apns-topic": "com.example.app",
        "apns-push-type": "alert",
        "apns-priority": "10",
    }


def test_normal_priority_is_5() -> None:
    headers = build_headers(Notification(priority=Priority.NORMAL), topic="t")
    assert headers["apns-priority"] == "5"


def test_silent_is_background_with_priority_5_even_when_high() -> None:
    headers = build_headers(Notification(silent=True, priority=Priority.HIGH), topic="t")
    assert headers["apns-push-type"] == "background"
    assert headers["apns-priority"] == "5"


def test_expiry_and_collapse_key_become_headers() -> None:
    n = Notification(expires_at=datetime(2030, 1, 1, tzinfo=UTC), collapse_key="c1")
    headers = build_headers(n, topic="t")
    assert headers["apns-expiration"] == "1893456000"
    assert headers["apns-collapse-id"] == "c1"


def test_an_empty_collapse_key_is_none() -> None:
    # An empty apns-collapse-id header (and thread-id) went out; APNs refuses the header.
    n = Notification(title="t", collapse_key="")
    assert "apns-collapse-id" not in build_headers(n, topic="t")
    assert json.loads(encode_payload(n)) == {"aps": {"alert": {"title": "t"}}}


def test_payload_over_4096_bytes_is_rejected_locally() -> None:
    n = Notification(body="x" * 4096)
    assert local_rejection(n, encode_payload(n)) == "PayloadTooLarge"


def test_payload_of_exactly_4096_bytes_may_go() -> None:
    overhead = len(encode_payload(Notification(body="")))
    n = Notification(body="x" * (4096 - overhead))
    body = encode_payload(n)
    assert len(body) == 4096
    assert local_rejection(n, body) is None


def test_collapse_id_over_64_bytes_is_rejected_locally() -> None:
    n = Notification(collapse_key="é" * 33)  # 66 bytes in UTF-8
    assert local_rejection(n, encode_payload(n)) == "BadCollapseId"
