import pytest

from clarion.providers.apns import _error, classify, parse_retry_after
from clarion.providers.base import OutcomeKind

DEAD = OutcomeKind.TOKEN_DEAD
CREDS = OutcomeKind.CREDENTIALS_REJECTED
RETRY = OutcomeKind.RETRY
FAILED = OutcomeKind.FAILED

# Every reason in Apple's table (spec §1.6) and what the caller must do about it.
APPLE_REASONS = [
    (400, "BadCollapseId", FAILED),
    (400, "BadDeviceToken", DEAD),
    (400, "BadExpirationDate", FAILED),
    (400, "BadMessageId", FAILED),
    (400, "BadPriority", FAILED),
    (400, "BadTopic", CREDS),
    (400, "DeviceTokenNotForTopic", DEAD),
    (400, "DuplicateHeaders", FAILED),
    (400, "IdleTimeout", RETRY),
    (400, "InvalidPushType", FAILED),
    (400, "MissingDeviceToken", FAILED),
    (400, "MissingTopic", CREDS),
    (400, "PayloadEmpty", FAILED),
    (400, "TopicDisallowed", CREDS),
    (403, "BadCertificate", CREDS),
    (403, "BadCertificateEnvironment", CREDS),
    (403, "ExpiredProviderToken", CREDS),
    (403, "Forbidden", CREDS),
    (403, "InvalidProviderToken", CREDS),
    (403, "MissingProviderToken", CREDS),
    (403, "UnrelatedKeyIdInToken", CREDS),
    (403, "BadEnvironmentKeyIdInToken", CREDS),
    (404, "BadPath", FAILED),
    (405, "MethodNotAllowed", FAILED),
    (410, "ExpiredToken", DEAD),
    (410, "Unregistered", DEAD),
    (413, "PayloadTooLarge", FAILED),
    (429, "TooManyProviderTokenUpdates", RETRY),
    (429, "TooManyRequests", RETRY),
    (500, "InternalServerError", RETRY),
    (503, "ServiceUnavailable", RETRY),
    (503, "Shutdown", RETRY),
]


@pytest.mark.parametrize(("status", "reason", "kind"), APPLE_REASONS)
def test_every_apple_reason_has_an_outcome(status: int, reason: str, kind: OutcomeKind) -> None:
    outcome = classify("ab", status, reason)
    assert outcome.kind is kind
    assert outcome.reason == reason
    assert outcome.status == status


def test_success_is_delivered() -> None:
    outcome = classify("ab", 200, None)
    assert outcome.kind is OutcomeKind.DELIVERED
    assert outcome.reason is None


@pytest.mark.parametrize(
    ("status", "kind"), [(410, DEAD), (403, CREDS), (429, RETRY), (502, RETRY), (400, FAILED)]
)
def test_unknown_reason_falls_back_on_the_status(status: int, kind: OutcomeKind) -> None:
    outcome = classify("ab", status, "SomethingNew")
    assert outcome.kind is kind


def test_missing_reason_is_named_after_the_status() -> None:
    assert classify("ab", 502, None).reason == "HTTP 502"


def test_retry_after_is_kept_only_for_retries() -> None:
    assert classify("ab", 429, "TooManyRequests", retry_after=7).retry_after == 7
    assert classify("ab", 410, "Unregistered", retry_after=7).retry_after is None


def test_retry_after_in_seconds() -> None:
    assert parse_retry_after("120") == 120.0


def test_retry_after_as_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0


@pytest.mark.parametrize("value", [None, "", "soon"])
def test_unreadable_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"reason":"Unregistered","timestamp":1700000000000}', ("Unregistered", 1_700_000_000.0)),
        (b'{"reason":"Unregistered","timestamp":"1700000000000"}', ("Unregistered", None)),
        (b'{"reason":"Unregistered","timestamp":true}', ("Unregistered", None)),
        (b'{"reason":"Unregistered","timestamp":-5}', ("Unregistered", None)),
        (b'{"reason":"BadDeviceToken"}', ("BadDeviceToken", None)),
        (b"[1]", (None, None)),
        (b"not json", (None, None)),
        (b"", (None, None)),
    ],
)
def test_error_bodies_give_reason_and_timestamp(
    body: bytes, expected: tuple[str | None, float | None]
) -> None:
    assert _error(body) == expected


def test_invalid_since_is_kept_only_for_dead_tokens() -> None:
    dead = classify("t", 410, "Unregistered", invalid_since=1.5)
    assert (dead.kind, dead.invalid_since) == (OutcomeKind.TOKEN_DEAD, 1.5)
    assert classify("t", 500, "InternalServerError", invalid_since=1.5).invalid_since is None
