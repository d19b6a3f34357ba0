"""Each FCM v1 answer classified per the error model (spec providers.md section 2)."""

import json
from typing import Any

import pytest

from clarion.providers.base import OutcomeKind
from clarion.providers.fcm import classify_fcm_response, is_access_token_rejection
from clarion.providers.transport import HttpResponse

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def error(
    status: int, rpc: str, code: str | None = None, message: str = "m", **extra: Any
) -> HttpResponse:
    details: list[dict[str, Any]] = []
    if code:
        details.append({"@type": FCM_ERROR, "errorCode": code})
    details.extend(extra.get("details", []))
    body = {"error": {"code": status, "message": message, "status": rpc, "details": details}}
    return HttpResponse(status, extra.get("headers", {}), json.dumps(body).encode())


def test_success_is_delivered() -> None:
    outcome = classify_fcm_response("t", HttpResponse(200, {}, b'{"name":"projects/p/messages/1"}'))
    assert outcome.kind is OutcomeKind.DELIVERED
    assert outcome.status == 200


def test_unregistered_token_is_dead() -> None:
    outcome = classify_fcm_response("t", error(404, "NOT_FOUND", "UNREGISTERED"))
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TOKEN_DEAD, "UNREGISTERED")


def test_sender_id_mismatch_is_dead_for_this_project() -> None:
    outcome = classify_fcm_response("t", error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"))
    assert outcome.kind is OutcomeKind.TOKEN_DEAD


def test_invalid_argument_about_the_token_field_is_dead() -> None:
    violation = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [
            {"field": "message.token", "description": "Invalid registration token"}
        ],
    }
    response = error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", details=[violation])
    assert classify_fcm_response("t", response).kind is OutcomeKind.TOKEN_DEAD


def test_invalid_argument_naming_the_registration_token_is_dead() -> None:
    message = "The registration token is not a valid FCM registration token"
    response = error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", message=message)
    assert classify_fcm_response("t", response).kind is OutcomeKind.TOKEN_DEAD


def test_invalid_argument_about_the_payload_fails_without_costing_the_token() -> None:
    violation = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.data[0].value", "description": "bad"}],
    }
    response = error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Bad data", details=[violation])
    outcome = classify_fcm_response("t", response)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == "INVALID_ARGUMENT: Bad data (message.data[0].value: bad)"


def test_quota_exceeded_retries_after_the_header() -> None:
    response = error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", headers={"retry-after": "30"})
    outcome = classify_fcm_response("t", response)
    assert (outcome.kind, outcome.retry_after, outcome.reason) == (
        OutcomeKind.RETRY,
        30.0,
        "QUOTA_EXCEEDED",
    )


@pytest.mark.parametrize(("status", "rpc"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
def test_server_errors_retry(status: int, rpc: str) -> None:
    outcome = classify_fcm_response("t", error(status, rpc, rpc))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.retry_after is None


def test_bad_gateway_html_page_retries() -> None:
    response = HttpResponse(502, {"content-type": "text/html"}, b"<html>502</html>")
    outcome = classify_fcm_response("t", response)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "HTTP 502")


def test_permission_denied_without_fcm_code_rejects_credentials() -> None:
    outcome = classify_fcm_response("t", error(403, "PERMISSION_DENIED"))
    assert (outcome.kind, outcome.reason) == (OutcomeKind.CREDENTIALS_REJECTED, "PERMISSION_DENIED")


def test_third_party_auth_error_rejects_credentials_without_refreshing() -> None:
    response = error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")
    assert not is_access_token_rejection(response)
    assert classify_fcm_response("t", response).kind is OutcomeKind.CREDENTIALS_REJECTED


def test_plain_unauthenticated_is_an_access_token_problem() -> None:
    response = error(401, "UNAUTHENTICATED")
    assert is_access_token_rejection(response)
    assert classify_fcm_response("t", response).kind is OutcomeKind.CREDENTIALS_REJECTED


def test_apns_unregistered_relayed_by_fcm_kills_the_token() -> None:
    apns = {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.ApnsError",
        "statusCode": 410,
        "reason": "Unregistered",
    }
    response = error(404, "NOT_FOUND", None, details=[apns])
    outcome = classify_fcm_response("t", response)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.TOKEN_DEAD, "Unregistered")


def test_unknown_status_fails_with_the_status() -> None:
    outcome = classify_fcm_response("t", HttpResponse(418, {}, b""))
    assert (outcome.kind, outcome.reason, outcome.status) == (OutcomeKind.FAILED, "HTTP 418", 418)


def test_quota_exceeded_without_a_header_waits_at_least_a_minute() -> None:
    outcome = classify_fcm_response("t", error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"))
    assert (outcome.kind, outcome.retry_after) == (OutcomeKind.RETRY, 60.0)
