"""Retry policy as pure functions: backoff, expiry, and what a RETRY outcome turns into next.

The stateful parts (gates, suspension, the retry loop) live in ``dispatcher.py``; everything here
is a function of its arguments so it can be tested exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from clarion.providers.base import Outcome, OutcomeKind

EXPIRED = "Expired"  # the message's expiry passed before it could be sent
BACKING_OFF = "BackingOff"  # the service asked us to wait longer than the caller's deadline
RETRIES_EXHAUSTED = "RetriesExhausted"  # a RETRY without a reason ran out of attempts

_MAX_EXPONENT = 64  # 2**64 dwarfs any sane cap; keeps the float from overflowing


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: attempts per token, the backoff curve, and the wait budget of ``send``."""

    max_attempts: int = 5
    backoff_base: float = 1.0  # seconds; the first retry waits up to this long
    backoff_cap: float = 60.0  # seconds; no single backoff waits longer
    max_wait: float | None = 120.0  # seconds ``Dispatcher.send`` may spend waiting in total

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("backoff_base and backoff_cap must not be negative")
        if self.max_wait is not None and self.max_wait < 0:
            raise ValueError("max_wait must not be negative")


def backoff_delay(attempt: int, base: float, cap: float, jitter: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): full jitter.

    ``jitter`` returns a float in [0, 1); the delay is ``jitter() * min(cap, base * 2**(n-1))``.
    """
    exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
    return jitter() * min(cap, base * 2.0**exponent)


def seconds_until(expires_at: datetime | None, now: datetime) -> float | None:
    """Seconds from ``now`` until ``expires_at`` (negative once passed); naive times are UTC."""
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    return (expires_at - now).total_seconds()


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    """True once ``expires_at`` is reached: such a message must never be sent."""
    left = seconds_until(expires_at, now)
    return left is not None and left <= 0


def plan_retry(
    outcome: Outcome,
    *,
    attempt: int,
    policy: RetryPolicy,
    backoff: float,
    expires_in: float | None,
    deadline_in: float | None,
) -> Outcome:
    """Turn a provider's RETRY into the caller's next step; other outcomes pass through.

    The result is RETRY with ``retry_after`` always set (the service's wait if it gave one, else
    ``backoff``), or FAILED: with the last reason once attempts or the deadline run out, with
    ``"Expired"`` if the retry would happen at or after the message's expiry.
    """
    if outcome.kind is not OutcomeKind.RETRY:
        return outcome
    if attempt >= policy.max_attempts:
        return _failed(outcome, outcome.reason or RETRIES_EXHAUSTED)
    delay = max(0.0, outcome.retry_after if outcome.retry_after is not None else backoff)
    if expires_in is not None and delay >= expires_in:
        return _failed(outcome, EXPIRED)
    if deadline_in is not None and delay > deadline_in:
        return _failed(outcome, outcome.reason or RETRIES_EXHAUSTED)
    return replace(outcome, retry_after=delay)


def _failed(outcome: Outcome, reason: str) -> Outcome:
    return Outcome(outcome.token, OutcomeKind.FAILED, reason=reason, status=outcome.status)


def same_outcome(tokens: Sequence[str], kind: OutcomeKind, reason: str | None) -> list[Outcome]:
    """One identical outcome per token, for answers the layer gives without asking a provider."""
    return [Outcome(token, kind, reason=reason) for token in tokens]


class LostOutcome(RuntimeError):
    """A token ended without a final outcome, or got two: a bug in the delivery layer."""


class OutcomeBook:
    """The final outcome of every token of one send, settled exactly once, returned in order."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = tokens
        self._final: list[Outcome | None] = [None] * len(tokens)
        self._pending = len(tokens)

    @property
    def pending(self) -> int:
        return self._pending

    def settle(self, index: int, outcome: Outcome) -> None:
        """Record the final outcome of the token at ``index``."""
        if outcome.token != self._tokens[index]:
            raise LostOutcome(f"outcome for position {index} names another token")
        if self._final[index] is not None:
            raise LostOutcome(f"position {index} settled twice")
        self._final[index] = outcome
        self._pending -= 1

    def results(self) -> list[Outcome]:
        """Every final outcome in input order; raises if any token is still unsettled."""
        final = [outcome for outcome in self._final if outcome is not None]
        if len(final) != len(self._tokens):
            raise LostOutcome(f"{self._pending} of {len(self._tokens)} tokens have no outcome")
        return final
