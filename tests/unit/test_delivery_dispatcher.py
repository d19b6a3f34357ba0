"""The dispatcher's behaviour around a scripted provider, on a virtual clock (no real sleeping)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from datetime import timedelta

from prometheus_client import REGISTRY

from clarion.delivery import (
    CredentialsRejected,
    CredentialsUnusable,
    Dispatcher,
    PoolKey,
    ProviderPool,
    RetryPolicy,
)
from clarion.providers.base import Notification, Outcome, OutcomeKind, Provider
from tests.unit.delivery_fixtures import (
    KEY,
    NOTE,
    OTHER_KEY,
    FakeClock,
    ScriptedProvider,
    dead,
    delivered,
    pool_of,
    rejected,
    retry,
)

FAST = RetryPolicy(max_attempts=5, backoff_base=0.1, backoff_cap=1.0, max_wait=None)


def dispatcher_for(
    *providers: Provider,
    clock: FakeClock,
    policy: RetryPolicy = FAST,
    max_in_flight: int = 1000,
    batch_size: int = 500,
    jitter: float = 1.0,
) -> Dispatcher:
    pool, _ = pool_of(*providers, max_in_flight=max_in_flight)
    return Dispatcher(
        pool, policy=policy, clock=clock, batch_size=batch_size, jitter=lambda: jitter
    )


async def test_retry_after_is_honoured_then_delivered() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(
        {"a": [retry(0.05, 429, "TooManyRequests"), retry(0.05, 429, "TooManyRequests")]},
        clock=clock,
    )
    outcomes = await dispatcher_for(provider, clock=clock).send(KEY, 1, NOTE, ["a"])
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED]
    assert [t for t, _ in provider.calls] == [0.0, 0.05, 0.1]


async def test_retry_after_is_honoured_on_the_real_clock() -> None:
    provider = ScriptedProvider({"a": [retry(0.05, 429), retry(0.05, 429)]})
    pool, _ = pool_of(provider)
    started = time.monotonic()
    outcomes = await Dispatcher(pool, policy=FAST).send(KEY, 1, NOTE, ["a"])
    elapsed = time.monotonic() - started
    assert outcomes[0].kind is OutcomeKind.DELIVERED
    assert 0.1 <= elapsed < 1.0


async def test_server_errors_back_off_exponentially_then_fail_with_the_last_reason() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(otherwise=retry(None, 500, "InternalServerError"), clock=clock)
    policy = replace(FAST, max_attempts=4, backoff_base=0.1, backoff_cap=0.25)
    outcomes = await dispatcher_for(provider, clock=clock, policy=policy).send(KEY, 1, NOTE, ["a"])
    assert outcomes == [Outcome("a", OutcomeKind.FAILED, "InternalServerError", status=500)]
    assert len(provider.calls) == 4
    assert clock.sleeps == [0.1, 0.2, 0.25]


async def test_an_expired_message_is_never_sent() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(clock=clock)
    pool, factory = pool_of(provider)
    note = replace(NOTE, expires_at=clock.now() - timedelta(seconds=1))
    outcomes = await Dispatcher(pool, clock=clock).send(KEY, 1, note, ["a", "b"])
    assert [(o.kind, o.reason) for o in outcomes] == [(OutcomeKind.FAILED, "Expired")] * 2
    assert provider.calls == []
    assert factory.built == [], "no provider is even built for an expired message"


async def test_a_retry_that_would_arrive_after_expiry_is_dropped_not_sent_late() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(otherwise=retry(0.6, 429), clock=clock)
    note = replace(NOTE, expires_at=clock.now() + timedelta(seconds=1))
    outcomes = await dispatcher_for(provider, clock=clock).send(KEY, 1, note, ["a"])
    assert [(o.kind, o.reason) for o in outcomes] == [(OutcomeKind.FAILED, "Expired")]
    assert [t for t, _ in provider.calls] == [0.0, 0.6]


async def test_a_message_expiring_while_its_key_backs_off_is_dropped() -> None:
    clock = FakeClock()
    provider = ScriptedProvider({"a": [retry(10.0, 429, "QUOTA_EXCEEDED")]}, clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock)
    await dispatcher.send_once(KEY, 1, NOTE, ["a"])
    note = replace(NOTE, expires_at=clock.now() + timedelta(seconds=5))
    outcomes = await dispatcher.send_once(KEY, 1, note, ["b"])
    assert [(o.kind, o.reason) for o in outcomes] == [(OutcomeKind.FAILED, "Expired")]
    assert len(provider.calls) == 1


async def test_a_key_backing_off_makes_its_other_sends_wait_but_not_other_keys() -> None:
    clock = FakeClock()
    first, second = (
        ScriptedProvider({"a": [retry(1.0, 429, "QUOTA_EXCEEDED")]}, clock=clock),
        ScriptedProvider(clock=clock),
    )
    dispatcher = dispatcher_for(first, second, clock=clock)

    answer = await dispatcher.send_once(KEY, 1, NOTE, ["a"])
    assert (answer[0].kind, answer[0].retry_after) == (OutcomeKind.RETRY, 1.0)

    other = await dispatcher.send_once(OTHER_KEY, 1, NOTE, ["c"])
    assert other[0].kind is OutcomeKind.DELIVERED
    assert second.calls == [(0.0, ["c"])], "another key is not held back"

    same = await dispatcher.send_once(KEY, 1, NOTE, ["b"])
    assert same[0].kind is OutcomeKind.DELIVERED
    assert first.calls[-1] == (1.0, ["b"]), "the same key waited out the Retry-After"


async def test_send_once_returns_the_retry_delay_instead_of_sleeping() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(otherwise=retry(None, 503), clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock, jitter=0.5)
    first = await dispatcher.send_once(KEY, 1, NOTE, ["a"], attempt=1)
    third = await dispatcher.send_once(KEY, 1, NOTE, ["a"], attempt=3)
    last = await dispatcher.send_once(KEY, 1, NOTE, ["a"], attempt=5)
    assert (first[0].kind, first[0].retry_after) == (OutcomeKind.RETRY, 0.05)
    assert (third[0].kind, third[0].retry_after) == (OutcomeKind.RETRY, 0.2)
    assert (last[0].kind, last[0].reason) == (OutcomeKind.FAILED, "ServiceUnavailable")
    assert clock.sleeps == []


async def test_rejected_credentials_suspend_the_key_until_the_version_changes() -> None:
    clock = FakeClock()
    bad = ScriptedProvider(otherwise=rejected("InvalidProviderToken"), clock=clock)
    good = ScriptedProvider(clock=clock)
    pool, factory = pool_of(bad, good)
    reports: list[CredentialsRejected] = []

    async def report(event: CredentialsRejected) -> None:
        reports.append(event)

    dispatcher = Dispatcher(pool, clock=clock, on_credentials_rejected=report)

    first = await dispatcher.send(KEY, "v1", NOTE, ["a", "b"])
    assert [o.kind for o in first] == [OutcomeKind.CREDENTIALS_REJECTED] * 2
    assert reports == [CredentialsRejected(KEY, "v1", "InvalidProviderToken", 403)]
    assert dispatcher.suspended(KEY, "v1")

    again = await dispatcher.send(KEY, "v1", NOTE, ["c"])
    assert [(o.kind, o.reason) for o in again] == [
        (OutcomeKind.CREDENTIALS_REJECTED, "InvalidProviderToken")
    ]
    assert len(bad.calls) == 1, "a suspended key does not call its provider"
    assert len(reports) == 1, "reported once, not per send"

    fixed = await dispatcher.send(KEY, "v2", NOTE, ["c"])
    assert [o.kind for o in fixed] == [OutcomeKind.DELIVERED]
    assert not dispatcher.suspended(KEY, "v2")
    assert bad.closed
    assert len(factory.built) == 2


async def test_unusable_credentials_from_the_factory_suspend_the_key() -> None:
    reports: list[CredentialsRejected] = []

    async def report(event: CredentialsRejected) -> None:
        reports.append(event)

    async def factory(key: PoolKey) -> Provider:
        raise CredentialsUnusable("the APNs key is not a PEM EC private key")

    dispatcher = Dispatcher(
        ProviderPool(factory), clock=FakeClock(), on_credentials_rejected=report
    )
    outcomes = await dispatcher.send(KEY, 1, NOTE, ["a"])
    assert [(o.kind, o.reason) for o in outcomes] == [
        (OutcomeKind.CREDENTIALS_REJECTED, "CredentialsUnusable")
    ]
    assert [event.key for event in reports] == [KEY]


async def test_a_failing_callback_does_not_lose_outcomes() -> None:
    async def broken(event: CredentialsRejected) -> None:
        raise RuntimeError("database down")

    clock = FakeClock()
    pool, _ = pool_of(ScriptedProvider(otherwise=rejected()))
    dispatcher = Dispatcher(pool, clock=clock, on_credentials_rejected=broken)
    outcomes = await dispatcher.send(KEY, 1, NOTE, ["a"])
    assert outcomes[0].kind is OutcomeKind.CREDENTIALS_REJECTED


async def test_dead_tokens_and_failures_are_final_at_once() -> None:
    clock = FakeClock()
    provider = ScriptedProvider({"dead": [dead()]}, clock=clock)
    outcomes = await dispatcher_for(provider, clock=clock).send(KEY, 1, NOTE, ["ok", "dead"])
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED, OutcomeKind.TOKEN_DEAD]
    assert len(provider.calls) == 1


async def test_a_provider_exception_is_retried_then_failed_with_its_name() -> None:
    class Exploding(ScriptedProvider):
        async def send(self, notification: Notification, tokens: object) -> list[Outcome]:
            raise ConnectionResetError("peer reset")

    clock = FakeClock()
    outcomes = await dispatcher_for(Exploding(), clock=clock).send(KEY, 1, NOTE, ["a", "b"])
    assert [(o.kind, o.reason) for o in outcomes] == [
        (OutcomeKind.FAILED, "ConnectionResetError")
    ] * 2
    assert len(clock.sleeps) == FAST.max_attempts - 1


async def test_a_provider_answering_the_wrong_number_of_outcomes_is_not_trusted() -> None:
    class Short(ScriptedProvider):
        async def send(self, notification: Notification, tokens: object) -> list[Outcome]:
            return [Outcome("a", OutcomeKind.DELIVERED)]

    policy = replace(FAST, max_attempts=1)
    outcomes = await dispatcher_for(Short(), clock=FakeClock(), policy=policy).send(
        KEY, 1, NOTE, ["a", "b"]
    )
    assert [(o.token, o.kind, o.reason) for o in outcomes] == [
        ("a", OutcomeKind.FAILED, "InvalidProviderAnswer"),
        ("b", OutcomeKind.FAILED, "InvalidProviderAnswer"),
    ]


async def test_the_concurrency_limit_per_key_is_never_exceeded() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock, max_in_flight=8, batch_size=3)
    batches = [[f"t{n}-{i}" for i in range(n % 7 + 1)] for n in range(60)]
    results = await asyncio.gather(*(dispatcher.send(KEY, 1, NOTE, b) for b in batches))
    assert [[o.token for o in r] for r in results] == batches
    assert provider.peak_in_flight <= 8
    assert provider.peak_in_flight >= 6, "sends did run concurrently"
    assert dispatcher.pool.limiter(KEY).in_use == 0


async def test_ten_thousand_tokens_with_random_faults_are_each_classified_once() -> None:
    clock = FakeClock()
    rng = random.Random(4)

    def flaky(token: str) -> Outcome:
        roll = rng.random()
        if roll < 0.04:
            return retry(None, 503, "ServiceUnavailable")(token)
        if roll < 0.07:
            return retry(None, 500, "InternalServerError")(token)
        if roll < 0.10:
            return retry(0.5, 429, "TooManyRequests")(token)
        return delivered()(token)

    provider = ScriptedProvider(otherwise=flaky, clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock, jitter=0.5)
    tokens = [f"token-{i:05d}" for i in range(10_000)]
    outcomes = await dispatcher.send(KEY, 1, NOTE, tokens)

    assert [o.token for o in outcomes] == tokens
    kinds = {o.kind for o in outcomes}
    assert kinds <= {OutcomeKind.DELIVERED, OutcomeKind.FAILED}
    delivered_tokens = {o.token for o in outcomes if o.kind is OutcomeKind.DELIVERED}
    assert set(provider.delivered) == delivered_tokens
    assert max(provider.delivered.values()) == 1, "nothing is delivered twice"
    assert len(delivered_tokens) >= 9_990
    assert sum(provider.sent.values()) > 10_900, "about 10% were retried"
    for outcome in outcomes:
        if outcome.kind is OutcomeKind.FAILED:
            assert provider.sent[outcome.token] == FAST.max_attempts


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_attempts_outcomes_latency_and_in_flight() -> None:
    class Metered(ScriptedProvider):
        name = "metered-test"

    clock = FakeClock()
    provider = Metered({"a": [retry(None, 503)], "gone": [dead()]}, clock=clock)
    before_delivered = sample(
        "clarion_push_outcomes_total", provider="metered-test", outcome="delivered"
    )
    before_retry = sample("clarion_push_outcomes_total", provider="metered-test", outcome="retry")
    before_dead = sample(
        "clarion_push_outcomes_total", provider="metered-test", outcome="token_dead"
    )
    before_attempts = sample("clarion_push_attempts_total", provider="metered-test")
    before_calls = sample("clarion_provider_latency_seconds_count", provider="metered-test")

    await dispatcher_for(provider, clock=clock).send(KEY, 1, NOTE, ["a", "b", "gone"])

    assert (
        sample("clarion_push_outcomes_total", provider="metered-test", outcome="delivered")
        == before_delivered + 2
    )
    assert (
        sample("clarion_push_outcomes_total", provider="metered-test", outcome="retry")
        == before_retry + 1
    )
    assert (
        sample("clarion_push_outcomes_total", provider="metered-test", outcome="token_dead")
        == before_dead + 1
    )
    assert sample("clarion_push_attempts_total", provider="metered-test") == before_attempts + 4
    assert (
        sample("clarion_provider_latency_seconds_count", provider="metered-test")
        == before_calls + 2
    )
    assert sample("clarion_push_in_flight", provider="metered-test") == 0.0


async def test_a_rejection_answered_for_replaced_credentials_does_not_suspend_the_new_ones() -> (
    None
):
    clock = FakeClock()
    hold = asyncio.Event()
    stale = ScriptedProvider(otherwise=rejected(), clock=clock, hold=hold)
    fresh = ScriptedProvider(clock=clock)
    pool, _ = pool_of(stale, fresh)
    reports: list[CredentialsRejected] = []

    async def report(event: CredentialsRejected) -> None:
        reports.append(event)

    dispatcher = Dispatcher(pool, clock=clock, on_credentials_rejected=report)
    old_send = asyncio.create_task(dispatcher.send(KEY, "v1", NOTE, ["a"]))
    await asyncio.sleep(0.01)
    assert stale.in_flight == 1
    assert (await dispatcher.send(KEY, "v2", NOTE, ["b"]))[0].kind is OutcomeKind.DELIVERED
    hold.set()
    assert (await old_send)[0].kind is OutcomeKind.CREDENTIALS_REJECTED
    assert reports == []
    assert not dispatcher.suspended(KEY, "v2")
    assert (await dispatcher.send(KEY, "v2", NOTE, ["c"]))[0].kind is OutcomeKind.DELIVERED


async def test_batches_rejected_together_report_the_key_once() -> None:
    reports: list[CredentialsRejected] = []

    async def report(event: CredentialsRejected) -> None:
        reports.append(event)

    clock = FakeClock()
    provider = ScriptedProvider(otherwise=rejected(), clock=clock)
    pool, _ = pool_of(provider)
    dispatcher = Dispatcher(pool, clock=clock, batch_size=1, on_credentials_rejected=report)
    outcomes = await dispatcher.send(KEY, 1, NOTE, ["a", "b", "c"])
    assert [o.kind for o in outcomes] == [OutcomeKind.CREDENTIALS_REJECTED] * 3
    assert len(provider.calls) == 3, "the batches were in flight together"
    assert len(reports) == 1


async def test_a_send_queued_for_a_slot_still_waits_out_a_retry_after_that_arrived_meanwhile() -> (
    None
):
    clock = FakeClock()
    hold = asyncio.Event()
    provider = ScriptedProvider({"a": [retry(1.0, 429, "QUOTA_EXCEEDED")]}, clock=clock, hold=hold)
    dispatcher = dispatcher_for(provider, clock=clock, max_in_flight=1)
    first = asyncio.create_task(dispatcher.send_once(KEY, 1, NOTE, ["a"]))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(dispatcher.send_once(KEY, 1, NOTE, ["b"]))
    await asyncio.sleep(0.01)
    assert provider.calls == [(0.0, ["a"])], "b queues for the only slot"
    hold.set()
    assert (await first)[0].kind is OutcomeKind.RETRY
    assert (await second)[0].kind is OutcomeKind.DELIVERED
    assert provider.calls[-1] == (1.0, ["b"])


async def test_after_close_sends_come_back_unsent_as_retry_without_waiting() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock)
    await dispatcher.send(KEY, 1, NOTE, ["a"])
    await dispatcher.close()
    outcomes = await dispatcher.send(KEY, 1, NOTE, ["b", "c"])
    assert [(o.kind, o.reason) for o in outcomes] == [(OutcomeKind.RETRY, "ShuttingDown")] * 2
    assert provider.closed
    assert len(provider.calls) == 1
    assert clock.sleeps == []


async def test_send_gives_up_with_the_last_reason_when_its_wait_budget_runs_out() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(otherwise=retry(3.0, 429, "TooManyRequests"), clock=clock)
    policy = replace(FAST, max_attempts=10, max_wait=5.0)
    outcomes = await dispatcher_for(provider, clock=clock, policy=policy).send(KEY, 1, NOTE, ["a"])
    assert outcomes == [Outcome("a", OutcomeKind.FAILED, "TooManyRequests", status=429)]
    assert [t for t, _ in provider.calls] == [0.0, 3.0]


async def test_a_key_held_back_past_the_callers_deadline_fails_as_backing_off() -> None:
    clock = FakeClock()
    provider = ScriptedProvider({"a": [retry(60.0, 429, "QUOTA_EXCEEDED")]}, clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock)
    await dispatcher.send_once(KEY, 1, NOTE, ["a"])
    outcomes = await dispatcher.send_once(KEY, 1, NOTE, ["b"], deadline=clock.monotonic() + 10)
    assert [(o.kind, o.reason) for o in outcomes] == [(OutcomeKind.FAILED, "BackingOff")]
    assert len(provider.calls) == 1
    assert clock.sleeps == []


async def test_without_waiting_a_held_key_answers_retry_at_once_with_the_time_left() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(
        {"a": [retry(30.0, 429, "TooManyRequests")]}, otherwise=delivered(), clock=clock
    )
    other_provider = ScriptedProvider({}, otherwise=delivered(), clock=clock)
    dispatcher = dispatcher_for(provider, other_provider, clock=clock)
    [first] = await dispatcher.send_once(KEY, 1, NOTE, ["a"], wait=False)
    assert first.kind is OutcomeKind.RETRY and first.retry_after == 30.0
    clock.advance(10.0)
    [held] = await dispatcher.send_once(KEY, 1, NOTE, ["b"], wait=False)
    assert held.kind is OutcomeKind.RETRY and held.reason == "BackingOff"
    assert held.retry_after is not None and abs(held.retry_after - 20.0) < 1e-6
    assert [token for _, tokens in provider.calls for token in tokens] == ["a"]  # b never sent
    [other] = await dispatcher.send_once(OTHER_KEY, 1, NOTE, ["c"], wait=False)
    assert other.kind is OutcomeKind.DELIVERED  # other keys are not held


async def test_a_held_token_is_counted_held_not_as_a_retry_outcome() -> None:
    class Held(ScriptedProvider):
        name = "held-test"

    clock = FakeClock()
    provider = Held({"a": [retry(30.0, 429, "TooManyRequests")]}, clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock)
    labels = {"provider": "held-test"}
    retries = {**labels, "outcome": "retry"}
    before = sample("clarion_push_outcomes_total", **retries)
    await dispatcher.send_once(KEY, 1, NOTE, ["a"], wait=False)  # the 429: one retry outcome
    for _ in range(5):  # a job looking again while the key is held: no attempt, no outcome
        await dispatcher.send_once(KEY, 1, NOTE, ["b", "c"], wait=False)
    assert sample("clarion_push_outcomes_total", **retries) == before + 1
    assert sample("clarion_push_held_total", **labels) == 10
    assert sample("clarion_push_attempts_total", **labels) == 1


# --- send_many: several notifications to one key in one provider call ----------------------


def _note(
    text: str, *, expires_in: float | None = None, clock: FakeClock | None = None
) -> Notification:
    expires = None
    if expires_in is not None and clock is not None:
        expires = clock.now() + timedelta(seconds=expires_in)
    return Notification(title=text, body=text, expires_at=expires)


def _flat(outcomes: list[Outcome]) -> list[tuple[str, OutcomeKind, str | None]]:
    return [(o.token, o.kind, o.reason) for o in outcomes]


async def test_send_many_answers_every_part_in_order_from_one_provider_call() -> None:
    clock = FakeClock()
    provider = ScriptedProvider({"c": [dead()]}, clock=clock)
    one, two, three = _note("one"), _note("two"), _note("three")
    outcomes = await dispatcher_for(provider, clock=clock).send_many(
        KEY, 1, [(one, ["a", "b"]), (two, ["c"]), (three, ["d", "e"])]
    )
    assert _flat(outcomes) == [
        ("a", OutcomeKind.DELIVERED, None),
        ("b", OutcomeKind.DELIVERED, None),
        ("c", OutcomeKind.TOKEN_DEAD, "Unregistered"),
        ("d", OutcomeKind.DELIVERED, None),
        ("e", OutcomeKind.DELIVERED, None),
    ]
    assert provider.many_calls == [[(one, ["a", "b"]), (two, ["c"]), (three, ["d", "e"])]]


async def test_send_many_drops_only_the_expired_parts() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(clock=clock)
    fresh, stale = _note("fresh"), _note("stale", expires_in=-1, clock=clock)
    outcomes = await dispatcher_for(provider, clock=clock).send_many(
        KEY, 1, [(fresh, ["a"]), (stale, ["b", "c"]), (fresh, ["d"])]
    )
    assert _flat(outcomes) == [
        ("a", OutcomeKind.DELIVERED, None),
        ("b", OutcomeKind.FAILED, "Expired"),
        ("c", OutcomeKind.FAILED, "Expired"),
        ("d", OutcomeKind.DELIVERED, None),
    ]
    assert provider.many_calls == [[(fresh, ["a"]), (fresh, ["d"])]]
    assert provider.sent == {"a": 1, "d": 1}


async def test_send_many_plans_each_parts_retry_against_its_own_expiry() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(otherwise=retry(None, 503), clock=clock)
    soon, later = _note("soon", expires_in=0.05, clock=clock), _note("later")
    outcomes = await dispatcher_for(provider, clock=clock, jitter=1.0).send_many(
        KEY, 1, [(soon, ["a"]), (later, ["b"])]
    )
    # The backoff of attempt 1 is 0.1 s: past the first part's expiry, not the second's.
    assert [(o.kind, o.reason, o.retry_after) for o in outcomes] == [
        (OutcomeKind.FAILED, "Expired", None),
        (OutcomeKind.RETRY, "ServiceUnavailable", 0.1),
    ]


async def test_send_many_splits_big_sends_into_batches_within_the_limit() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock, max_in_flight=4, batch_size=3)
    parts = [(_note(f"n{n}"), [f"t{n}-{i}" for i in range(n)]) for n in range(1, 6)]
    outcomes = await dispatcher.send_many(KEY, 1, parts)
    assert [o.token for o in outcomes] == [t for _, tokens in parts for t in tokens]
    assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
    assert max(len(tokens) for _, tokens in provider.calls) <= 3
    assert provider.peak_in_flight <= 4
    # Every token went with its own notification, even where a part was split.
    assert sorted((t, n.title) for n, t in provider.received) == sorted(
        (t, n.title) for n, tokens in parts for t in tokens
    )
    assert any(len(call) > 1 for call in provider.many_calls), "parts shared a provider call"
    assert dispatcher.pool.limiter(KEY).in_use == 0


async def test_send_many_on_a_held_key_answers_retry_for_every_part_at_once() -> None:
    clock = FakeClock()
    provider = ScriptedProvider({"a": [retry(30.0, 429, "TooManyRequests")]}, clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock)
    await dispatcher.send_once(KEY, 1, NOTE, ["a"], wait=False)
    stale = _note("stale", expires_in=10, clock=clock)
    outcomes = await dispatcher.send_many(
        KEY, 1, [(_note("x"), ["b"]), (stale, ["c"]), (_note("y"), ["d"])], wait=False
    )
    assert [(o.token, o.kind, o.reason, o.retry_after) for o in outcomes] == [
        ("b", OutcomeKind.RETRY, "BackingOff", 30.0),
        ("c", OutcomeKind.FAILED, "Expired", None),  # it would expire before the key opens
        ("d", OutcomeKind.RETRY, "BackingOff", 30.0),
    ]
    assert provider.many_calls == [] and [t for _, ts in provider.calls for t in ts] == ["a"]
    assert clock.sleeps == []


async def test_send_many_after_a_rejection_sends_nothing_until_the_credentials_change() -> None:
    clock = FakeClock()
    provider = ScriptedProvider({"a": [rejected()]}, clock=clock)
    renewed = ScriptedProvider(clock=clock)  # built for the new credentials
    dispatcher = dispatcher_for(provider, renewed, clock=clock)
    await dispatcher.send_once(KEY, 1, NOTE, ["a"])
    outcomes = await dispatcher.send_many(KEY, 1, [(_note("x"), ["b"]), (_note("y"), ["c"])])
    assert {(o.kind, o.reason) for o in outcomes} == {
        (OutcomeKind.CREDENTIALS_REJECTED, "InvalidProviderToken")
    }
    assert provider.many_calls == []
    again = await dispatcher.send_many(KEY, 2, [(_note("x"), ["b"]), (_note("y"), ["c"])])
    assert {o.kind for o in again} == {OutcomeKind.DELIVERED}
    assert [[t for _, ts in call for t in ts] for call in renewed.many_calls] == [["b", "c"]]


def bad_token(reason: str = "BadDeviceToken") -> Outcome:
    return Outcome("x", OutcomeKind.TOKEN_DEAD, reason, status=400)


async def test_a_wrong_environment_does_not_pass_for_a_thousand_dead_tokens() -> None:
    """Every token of the other APNs environment is a BadDeviceToken: believed one by one,
    a campaign would delete every iOS device of the app."""
    clock = FakeClock()
    provider = ScriptedProvider(otherwise=lambda t: replace(bad_token(), token=t), clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock)
    tokens = [f"t{i}" for i in range(1000)]
    outcomes = await dispatcher.send(KEY, 1, NOTE, tokens)
    kinds = [o.kind for o in outcomes]
    # The first answers are believed until there are too many to (SUSPECT_MIN of them).
    assert kinds.count(OutcomeKind.TOKEN_DEAD) < 20
    assert kinds.count(OutcomeKind.FAILED) > 980
    failed = next(o for o in outcomes if o.kind is OutcomeKind.FAILED)
    assert failed.reason is not None and failed.reason.startswith("BadDeviceToken (not deleted")


async def test_a_few_bad_tokens_among_deliveries_are_dead_and_unregistered_always() -> None:
    clock = FakeClock()
    script = {f"bad{i}": [lambda t: replace(bad_token(), token=t)] for i in range(30)}
    provider = ScriptedProvider(script, clock=clock)
    dispatcher = dispatcher_for(provider, clock=clock)
    tokens = [f"ok{i}" for i in range(170)] + [f"bad{i}" for i in range(30)]
    outcomes = await dispatcher.send(KEY, 1, NOTE, tokens)
    assert [o.kind for o in outcomes].count(OutcomeKind.TOKEN_DEAD) == 30  # 15 %: believed
    # 410 Unregistered is believed however many there are.
    gone = ScriptedProvider(otherwise=dead("Unregistered"), clock=clock)
    outcomes = await dispatcher_for(gone, clock=clock).send(KEY, 1, NOTE, tokens)
    assert all(o.kind is OutcomeKind.TOKEN_DEAD for o in outcomes)


async def test_the_guard_lifts_once_deliveries_come_back() -> None:
    clock = FakeClock()
    answers = {"mode": "bad"}

    def step(token: str) -> Outcome:
        if answers["mode"] == "bad" or token == "really-bad":
            return replace(bad_token("DeviceTokenNotForTopic"), token=token)
        return Outcome(token, OutcomeKind.DELIVERED, status=200)

    dispatcher = dispatcher_for(ScriptedProvider(otherwise=step, clock=clock), clock=clock)
    await dispatcher.send(KEY, 1, NOTE, [f"a{i}" for i in range(100)])
    [guarded] = await dispatcher.send(KEY, 1, NOTE, ["really-bad"])
    assert guarded.kind is OutcomeKind.FAILED
    answers["mode"] = "fixed"  # the operator fixed the topic
    await dispatcher.send(KEY, 1, NOTE, [f"b{i}" for i in range(200)])
    [believed] = await dispatcher.send(KEY, 1, NOTE, ["really-bad"])
    assert believed.kind is OutcomeKind.TOKEN_DEAD
