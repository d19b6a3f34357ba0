"""Each HMS Push Kit result code classified per token (spec providers.md section 3)."""

import json

import pytest

from clarion.providers.base import OutcomeKind
from clarion.providers.hms import classify_hms_response, illegal_tokens, is_access_token_rejection
from clarion.providers.transport import HttpResponse

TOKENS = ["a", "b", "c"]


def answer(
    status: int, code: str, msg: str = "m", headers: dict[str, str] | None = None
) -> HttpResponse:
    body = json.dumps({"code": code, "msg": msg, "requestId": "1"}).encode()
    return HttpResponse(status, headers or {}, body)


def kinds(response: HttpResponse) -> list[OutcomeKind]:
    return [outcome.kind for outcome in classify_hms_response(TOKENS, response)]


def test_success_delivers_every_token() -> None:
    assert kinds(answer(200, "80000000", "Success")) == [OutcomeKind.DELIVERED] * 3


def test_partial_success_kills_only_the_illegal_tokens() -> None:
    msg = json.dumps({"success": 2, "failure": 1, "illegal_tokens": ["b"]})
    assert kinds(answer(200, "80100000", msg)) == [
        OutcomeKind.DELIVERED,
        OutcomeKind.TOKEN_DEAD,
        OutcomeKind.DELIVERED,
    ]


def test_partial_success_reads_the_v3_grouped_shape() -> None:
    msg = json.dumps({"illegalTokens": {"tokenFormatError": ["a"], "noRight": ["c"]}})
    assert illegal_tokens(msg) == {"a", "c"}


def test_unparseable_partial_success_message_kills_nothing() -> None:
    assert illegal_tokens("not json") == set()
    assert kinds(answer(200, "80100000", "garbage")) == [OutcomeKind.DELIVERED] * 3


def test_all_tokens_invalid_kills_every_token() -> None:
    assert kinds(answer(400, "80300007")) == [OutcomeKind.TOKEN_DEAD] * 3


@pytest.mark.parametrize("code", ["80200001", "80200003"])
def test_access_token_errors_are_worth_a_refresh_then_reject_credentials(code: str) -> None:
    response = answer(401, code)
    assert is_access_token_rejection(response)
    assert kinds(response) == [OutcomeKind.CREDENTIALS_REJECTED] * 3


def test_bare_http_401_is_an_access_token_problem() -> None:
    assert is_access_token_rejection(HttpResponse(401, {}, b""))


def test_push_kit_not_enabled_rejects_credentials() -> None:
    assert kinds(answer(403, "80300002")) == [OutcomeKind.CREDENTIALS_REJECTED] * 3


@pytest.mark.parametrize(("status", "code"), [(500, "81000001"), (500, "80100017"), (503, "x")])
def test_busy_and_server_errors_retry(status: int, code: str) -> None:
    assert kinds(answer(status, code)) == [OutcomeKind.RETRY] * 3


def test_traffic_control_retry_after_is_kept() -> None:
    outcomes = classify_hms_response(TOKENS, answer(503, "81000001", headers={"retry-after": "7"}))
    assert {outcome.retry_after for outcome in outcomes} == {7.0}


def test_malformed_message_fails_with_code_and_msg() -> None:
    outcomes = classify_hms_response(TOKENS, answer(400, "80100003", "Illegal payload"))
    assert {(o.kind, o.reason) for o in outcomes} == {
        (OutcomeKind.FAILED, "80100003: Illegal payload")
    }


def test_html_gateway_error_retries() -> None:
    assert kinds(HttpResponse(502, {}, b"<html></html>")) == [OutcomeKind.RETRY] * 3
