"""The pure retry functions: backoff curve, expiry, retry planning, outcome bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clarion.delivery.retry import (
    EXPIRED,
    RETRIES_EXHAUSTED,
    LostOutcome,
    OutcomeBook,
    RetryPolicy,
    backoff_delay,
    is_expired,
    plan_retry,
    seconds_until,
)
from clarion.providers.base import Outcome, OutcomeKind

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=4, backoff_base=1.0, backoff_cap=60.0, max_wait=None)


def test_backoff_doubles_per_attempt_at_full_jitter() -> None:
    delays = [backoff_delay(n, 0.5, 100.0, lambda: 1.0) for n in range(1, 6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_is_capped() -> None:
    assert backoff_delay(10, 1.0, 30.0, lambda: 1.0) == 30.0


def test_backoff_scales_the_ceiling_by_the_jitter() -> None:
    assert backoff_delay(3, 1.0, 60.0, lambda: 0.25) == 1.0
    assert backoff_delay(3, 1.0, 60.0, lambda: 0.0) == 0.0


def test_backoff_of_a_huge_attempt_number_does_not_overflow() -> None:
    assert backoff_delay(100_000, 1.0, 60.0, lambda: 0.5) == 30.0


def test_expiry_is_reached_at_the_instant_itself() -> None:
    assert is_expired(NOW, NOW)
    assert is_expired(NOW - timedelta(seconds=1), NOW)
    assert not is_expired(NOW + timedelta(seconds=1), NOW)
    assert not is_expired(None, NOW)


def test_a_naive_expiry_is_read_as_utc() -> None:
    assert seconds_until(datetime(2026, 1, 1, 12, 0, 30), NOW) == 30.0


def test_a_service_wait_is_kept_as_the_retry_delay() -> None:
    answer = Outcome("t", OutcomeKind.RETRY, "TooManyRequests", retry_after=7.0, status=429)
    planned = plan_retry(
        answer, attempt=1, policy=POLICY, backoff=0.3, expires_in=None, deadline_in=None
    )
    assert planned == answer


def test_a_retry_without_a_service_wait_gets_the_backoff() -> None:
    answer = Outcome("t", OutcomeKind.RETRY, "InternalServerError", status=500)
    planned = plan_retry(
        answer, attempt=2, policy=POLICY, backoff=0.3, expires_in=None, deadline_in=None
    )
    assert planned.kind is OutcomeKind.RETRY
    assert planned.retry_after == 0.3
    assert planned.reason == "InternalServerError"


def test_the_last_attempt_fails_with_the_last_reason() -> None:
    answer = Outcome("t", OutcomeKind.RETRY, "InternalServerError", status=500)
    planned = plan_retry(
        answer, attempt=4, policy=POLICY, backoff=0.3, expires_in=None, deadline_in=None
    )
    assert planned == Outcome("t", OutcomeKind.FAILED, "InternalServerError", status=500)


def test_the_last_attempt_without_a_reason_says_retries_exhausted() -> None:
    planned = plan_retry(
        Outcome("t", OutcomeKind.RETRY),
        attempt=4,
        policy=POLICY,
        backoff=0.3,
        expires_in=None,
        deadline_in=None,
    )
    assert planned.reason == RETRIES_EXHAUSTED


def test_a_retry_that_would_land_after_expiry_fails_as_expired() -> None:
    answer = Outcome("t", OutcomeKind.RETRY, retry_after=5.0, status=429)
    planned = plan_retry(
        answer, attempt=1, policy=POLICY, backoff=0.0, expires_in=5.0, deadline_in=None
    )
    assert (planned.kind, planned.reason) == (OutcomeKind.FAILED, EXPIRED)


def test_a_retry_past_the_deadline_fails_with_the_last_reason() -> None:
    answer = Outcome("t", OutcomeKind.RETRY, "QUOTA_EXCEEDED", retry_after=60.0, status=429)
    planned = plan_retry(
        answer, attempt=1, policy=POLICY, backoff=0.0, expires_in=None, deadline_in=59.0
    )
    assert (planned.kind, planned.reason, planned.status) == (
        OutcomeKind.FAILED,
        "QUOTA_EXCEEDED",
        429,
    )


@pytest.mark.parametrize(
    "kind",
    [
        OutcomeKind.DELIVERED,
        OutcomeKind.TOKEN_DEAD,
        OutcomeKind.FAILED,
        OutcomeKind.CREDENTIALS_REJECTED,
    ],
)
def test_final_outcomes_pass_through_unchanged(kind: OutcomeKind) -> None:
    answer = Outcome("t", kind, "why", status=400)
    assert (
        plan_retry(answer, attempt=1, policy=POLICY, backoff=1.0, expires_in=0.0, deadline_in=0.0)
        is answer
    )


def test_policy_refuses_zero_attempts() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_book_returns_outcomes_in_input_order_whatever_the_settling_order() -> None:
    book = OutcomeBook(["a", "b", "c"])
    book.settle(2, Outcome("c", OutcomeKind.FAILED))
    book.settle(0, Outcome("a", OutcomeKind.DELIVERED))
    assert book.pending == 1
    book.settle(1, Outcome("b", OutcomeKind.TOKEN_DEAD))
    assert [o.token for o in book.results()] == ["a", "b", "c"]
    assert book.pending == 0


def test_book_refuses_to_settle_a_token_twice() -> None:
    book = OutcomeBook(["a"])
    book.settle(0, Outcome("a", OutcomeKind.DELIVERED))
    with pytest.raises(LostOutcome, match="twice"):
        book.settle(0, Outcome("a", OutcomeKind.FAILED))


def test_book_refuses_an_outcome_for_another_token() -> None:
    book = OutcomeBook(["a", "b"])
    with pytest.raises(LostOutcome):
        book.settle(0, Outcome("b", OutcomeKind.DELIVERED))


def test_book_with_an_unsettled_token_raises_instead_of_losing_it() -> None:
    book = OutcomeBook(["a", "b"])
    book.settle(0, Outcome("a", OutcomeKind.DELIVERED))
    with pytest.raises(LostOutcome, match="1 of 2"):
        book.results()


def test_duplicate_tokens_are_settled_per_position() -> None:
    book = OutcomeBook(["a", "a"])
    book.settle(1, Outcome("a", OutcomeKind.FAILED))
    book.settle(0, Outcome("a", OutcomeKind.DELIVERED))
    assert [o.kind for o in book.results()] == [OutcomeKind.DELIVERED, OutcomeKind.FAILED]
