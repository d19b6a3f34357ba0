"""Real objects for the delivery tests: a virtual clock and a provider that answers from a script.

The provider is not the code under test here (the delivery layer around it is), so a scripted
``Provider`` subclass stands in for APNs, FCM or HMS.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from clarion.delivery import PoolKey, ProviderPool
from clarion.providers.base import Notification, Outcome, OutcomeKind, Provider

Step = Callable[[str], Outcome]

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """Virtual time: ``sleep`` returns at once and moves time forward to the sleeper's wake time.

    Concurrent sleepers each see at least their own wake time and time never runs backwards.
    """

    def __init__(self, start: datetime = START) -> None:
        self._start = start
        self._t = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._t)

    def advance(self, seconds: float) -> None:
        self._t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake = self._t + seconds
        await asyncio.sleep(0)
        self._t = max(self._t, wake)


def delivered() -> Step:
    return lambda token: Outcome(token, OutcomeKind.DELIVERED, status=200)


def retry(
    after: float | None = None, status: int = 503, reason: str = "ServiceUnavailable"
) -> Step:
    return lambda token: Outcome(token, OutcomeKind.RETRY, reason, after, status)


def dead(reason: str = "Unregistered") -> Step:
    return lambda token: Outcome(token, OutcomeKind.TOKEN_DEAD, reason, status=410)


def rejected(reason: str = "InvalidProviderToken") -> Step:
    return lambda token: Outcome(token, OutcomeKind.CREDENTIALS_REJECTED, reason, status=403)


class ScriptedProvider(Provider):
    """Answers each token from its script (one step per call), then with ``otherwise``."""

    name = "scripted"

    def __init__(
        self,
        script: Mapping[str, Sequence[Step]] | None = None,
        *,
        otherwise: Step | None = None,
        clock: FakeClock | None = None,
        hold: asyncio.Event | None = None,
    ) -> None:
        self._script = {token: list(steps) for token, steps in (script or {}).items()}
        self._otherwise = otherwise or delivered()
        self._clock = clock
        self._hold = hold
        self.calls: list[tuple[float | None, list[str]]] = []
        self.many_calls: list[list[tuple[Notification, list[str]]]] = []  # send_many's parts
        self.received: list[tuple[Notification, str]] = []  # what each send was given
        self.sent: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.closed = False

    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[Outcome]:
        assert not self.closed, "send on a closed provider"
        self.calls.append((self._clock.monotonic() if self._clock else None, list(tokens)))
        self.received.extend((notification, token) for token in tokens)
        self.in_flight += len(tokens)
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self._hold is not None:
                await self._hold.wait()
            await asyncio.sleep(0)  # let other sends interleave
            outcomes = [self._answer(token) for token in tokens]
        finally:
            self.in_flight -= len(tokens)
        for outcome in outcomes:
            self.sent[outcome.token] += 1
            if outcome.kind is OutcomeKind.DELIVERED:
                self.delivered[outcome.token] += 1
        return outcomes

    async def send_many(self, parts: Sequence[tuple[Notification, Sequence[str]]]) -> list[Outcome]:
        self.many_calls.append([(n, list(tokens)) for n, tokens in parts])
        return await super().send_many(parts)  # one ``send`` per part, as providers do by default

    async def close(self) -> None:
        self.closed = True

    def _answer(self, token: str) -> Outcome:
        steps = self._script.get(token)
        if steps:
            return steps.pop(0)(token)
        return self._otherwise(token)


class Factory:
    """A provider factory that builds a given provider per call and counts builds per key."""

    def __init__(self, *providers: Provider) -> None:
        self._next = list(providers)
        self.built: list[tuple[PoolKey, Provider]] = []
        self.entered = 0

    async def __call__(self, key: PoolKey) -> Provider:
        self.entered += 1
        await asyncio.sleep(0)  # a real factory reads the database: give a rival call a chance
        provider = self._next.pop(0)
        self.built.append((key, provider))
        return provider


def pool_of(*providers: Provider, max_in_flight: int = 1000) -> tuple[ProviderPool, Factory]:
    factory = Factory(*providers)
    return ProviderPool(factory, max_in_flight=max_in_flight), factory


KEY = PoolKey("app-1", "ios", "production")
OTHER_KEY = PoolKey("app-2", "ios", "production")
NOTE = Notification(title="Hello", body="World")
