"""Delivery metrics, recorded once around every provider (never inside one).

Module-level objects in prometheus-client's default registry, so ``/metrics`` exposes them with
``prometheus_client.make_asgi_app()`` or ``generate_latest()`` and nothing else to wire.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

from clarion.providers.base import Outcome, OutcomeKind

# 1 ms (a local emulator) to 10 s (a provider's timeout), roughly x2.5 apart.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PUSH_OUTCOMES = Counter(
    "clarion_push_outcomes_total",
    "Per-token outcomes of each attempt ('retry' means another attempt was scheduled).",
    ("provider", "outcome"),
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
    outcomes: dict[OutcomeKind, Counter] = field(default_factory=dict)

    def count(self, outcomes: Iterable[Outcome]) -> None:
        """Add one to ``clarion_push_outcomes_total`` per outcome."""
        for kind, n in Tally(outcome.kind for outcome in outcomes).items():
            self.outcomes[kind].inc(n)


@cache
def meters(provider: str) -> ProviderMeters:
    """The meters of ``provider`` (a provider name, or a platform before one was built)."""
    return ProviderMeters(
        attempts=PUSH_ATTEMPTS.labels(provider),
        latency=PROVIDER_LATENCY.labels(provider),
        in_flight=IN_FLIGHT.labels(provider),
        outcomes={kind: PUSH_OUTCOMES.labels(provider, kind.value) for kind in OutcomeKind},
    )
