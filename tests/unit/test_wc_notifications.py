"""From a WalletConnect payload to a provider-neutral notification; push types; rate limit."""

from __future__ import annotations

import base64
import json

import pytest

from clarion.api.walletconnect.guards import RateLimiter
from clarion.core.notification import from_json, to_json
from clarion.core.walletconnect import (
    BadBlob,
    Payload,
    ProviderNotAvailable,
    PushType,
    RawPayload,
    build_notification,
    cleartext,
    normalise_client_id,
    parse_push_type,
    raw_message_id,
)
from clarion.providers.apns_payload import WALLETCONNECT_GENERIC_TITLE, build_payload


def b64json(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def test_encrypted_payload_is_opaque_with_flags_carried_through() -> None:
    n = build_notification(Payload("topic", 1 | 2 | 1 << 31, "blob=="), always_raw=False)
    assert (n.topic, n.blob, n.title, n.body) == ("topic", "blob==", None, None)
    assert dict(n.extras) == {"flags": 1 | 2 | 1 << 31}


def test_cleartext_payload_shows_title_and_body() -> None:
    blob = b64json({"title": "T", "body": "B", "image": "https://i", "url": "https://u"})
    n = build_notification(Payload("topic", 16, blob), always_raw=False)
    assert (n.title, n.body, n.topic, n.blob) == ("T", "B", "topic", blob)


def test_always_raw_client_gets_cleartext_payload_opaque() -> None:
    n = build_notification(Payload("topic", 0, "whatever"), always_raw=True)
    assert n.blob == "whatever" and n.title is None


def test_raw_payload_passes_tag_and_message() -> None:
    n = build_notification(RawPayload("topic", 4002, "msg"), always_raw=False)
    assert n.topic == "topic" and n.blob is None
    assert dict(n.extras) == {"tag": 4002, "message": "msg"}


def test_raw_payload_reaches_apns_for_the_wallets_extension_to_rewrite() -> None:
    """As an opaque blob does: the generic title, mutable-content and content-available, and
    the raw form's keys beside ``aps`` (an empty ``aps`` would show nothing and wake nothing)."""
    n = build_notification(RawPayload("topic", 4002, "msg"), always_raw=False)
    assert build_payload(n) == {
        "aps": {
            "alert": {"title": WALLETCONNECT_GENERIC_TITLE},
            "mutable-content": 1,
            "content-available": 1,
        },
        "topic": "topic",
        "tag": 4002,
        "message": "msg",
    }
    assert to_json(n)["rewritable"] is True and from_json(to_json(n)) == n


@pytest.mark.parametrize(
    "blob",
    [
        "!!",
        base64.b64encode(b"\xff\xfe").decode(),
        b64json([1]),
        b64json({"title": 1, "body": "x"}),
    ],
)
def test_unusable_cleartext_blobs_are_refused(blob: str) -> None:
    with pytest.raises(BadBlob):
        cleartext(blob)


def test_cleartext_blob_without_padding_is_accepted() -> None:
    blob = b64json({"title": "a", "body": "bc"}).rstrip("=")
    assert cleartext(blob) == ("a", "bc")


@pytest.mark.parametrize(
    ("spelling", "expected", "platform", "environment"),
    [
        ("APNS", PushType.APNS, "apns", "production"),
        ("apns-sandbox", PushType.APNS_SANDBOX, "apns", "development"),
        ("FCM", PushType.FCM, "fcm", None),
        ("fcm_v1", PushType.FCM_V1, "fcm", None),
        (" noop ", PushType.NOOP, "noop", None),
    ],
)
def test_push_types(
    spelling: str, expected: PushType, platform: str, environment: str | None
) -> None:
    parsed = parse_push_type(spelling)
    assert parsed is expected and parsed.platform == platform and parsed.environment == environment


def test_unknown_push_type_names_the_type_field() -> None:
    with pytest.raises(ProviderNotAvailable) as caught:
        parse_push_type("gcm")
    assert caught.value.field == "type" and caught.value.name == "provider_not_available"


def test_did_key_prefix_is_stripped_once() -> None:
    assert normalise_client_id("did:key:z6Mk") == "z6Mk"
    assert normalise_client_id("z6Mk") == "z6Mk"


def test_raw_message_id_depends_on_every_part() -> None:
    ids = {
        raw_message_id(RawPayload("t", 1, "m")),
        raw_message_id(RawPayload("t", 2, "m")),
        raw_message_id(RawPayload("u", 1, "m")),
        raw_message_id(RawPayload("t", 1, "n")),
    }
    assert len(ids) == 4


def test_rate_limiter_allows_a_burst_then_refills_over_time() -> None:
    limiter = RateLimiter(60)  # one a second
    assert all(limiter.check("a", 0.0) is None for _ in range(60))
    wait = limiter.check("a", 0.0)
    assert wait is not None and 0.9 <= wait <= 1.0
    assert limiter.check("b", 0.0) is None  # another address has its own bucket
    assert limiter.check("a", 1.0) is None
    assert limiter.check("a", 1.0) is not None
