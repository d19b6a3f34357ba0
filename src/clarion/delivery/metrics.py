"""Delivery metrics, recorded once around every provider (never inside one).

Module-level objects in prometheus-client's default registry, so ``/metrics`` exposes them with
``prometheus_client.make_asgi_app()`` or ``generate_latest()`` and nothing else to wire.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from clarion.delivery.retry import BACKING_OFF
from clarion.providers.base import Outcome, OutcomeKind

# 1 ms (a local emulator) to 10 s (a provider's timeout), roughly x2.5 apart.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PUSH_OUTCOMES = Counter(
    "clarion_push_outcomes_total",
    "Per-token outcomes of each attempt ('retry' means another attempt was scheduled).",
    ("provider", "outcome"),
)
PUSH_HELD = Counter(
    "clarion_push_held_total",
    "Tokens answered 'retry' without reaching the provider: its Retry-After or a backoff was "
    "still in force for their app and platform (not attempts, not in the outcomes).",
    ("provider",),
)
PUSH_ATTEMPTS = Counter(
    "clarion_push_attempts_total",
    "Tokens handed to a provider, counted once per attempt.",
    ("provider",),
)
PROVIDER_LATENCY = Histogram(
    "clarion_provider_latency_seconds",
    "Duration of one provider call (one batch of tokens).",
    ("provider",),
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "clarion_push_in_flight",
    "Tokens currently inside a provider call.",
    ("provider",),
)


@dataclass(frozen=True, slots=True)
class ProviderMeters:
    """The metric children of one provider label, looked up once (``labels()`` takes a lock)."""

    attempts: Counter
    latency: Histogram
    in_flight: Gauge
    held: Counter
    outcomes: dict[OutcomeKind, Counter] = field(default_factory=dict)

    def count(self, outcomes: Sequence[Outcome]) -> None:
        """Add one to ``clarion_push_outcomes_total`` per outcome; a token held back by a
        gate (``BACKING_OFF``) goes to ``clarion_push_held_total`` instead: counted as a retry
        outcome each time a job looked again, it inflated "retry" 57-fold under a 429 storm."""
        tally = Tally(outcome.kind for outcome in outcomes)
        if tally[OutcomeKind.RETRY]:
            held = sum(
                1 for o in outcomes if o.kind is OutcomeKind.RETRY and o.reason == BACKING_OFF
            )
            if held:
                tally[OutcomeKind.RETRY] -= held
                self.held.inc(held)
        for kind, n in tally.items():
            if n:
                self.outcomes[kind].inc(n)


@cache
def meters(provider: str) -> ProviderMeters:
    """The meters of ``provider`` (a provider name, or a platform before one was built)."""
    return ProviderMeters(
        attempts=PUSH_ATTEMPTS.labels(provider),
        latency=PROVIDER_LATENCY.labels(provider),
        in_flight=IN_FLIGHT.labels(provider),
        held=PUSH_HELD.labels(provider),
        outcomes={kind: PUSH_OUTCOMES.labels(provider, kind.value) for kind in OutcomeKind},
    )
