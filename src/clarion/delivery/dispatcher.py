"""The thin layer around every provider: gates, retries, back-pressure, suspension and metrics.

Two ways in:

* ``Dispatcher.send`` retries in-process until every token has a final outcome (DELIVERED,
  TOKEN_DEAD, CREDENTIALS_REJECTED or FAILED). Use it where a caller waits for the answer: a
  synchronous API send, the embedded worker, tools.
* ``Dispatcher.send_once`` makes one attempt and returns RETRY outcomes with the delay to wait
  (``retry_after``, always set) instead of sleeping. Use it in durable job workers::

      outcomes = await dispatcher.send_once(key, version, note, tokens, attempt=job.attempt)
      again = [o for o in outcomes if o.kind is OutcomeKind.RETRY]
      # record the others; requeue each of ``again`` at now + retry_after, attempt + 1

  ``Dispatcher.send_many`` is ``send_once`` for several notifications to one key (a job's
  distinct messages), in one provider call.

Both wait at the same gates: a suspended key (credentials rejected) answers at once without a
provider call; a key backing off makes every send to it wait (other keys are not blocked); a key's
in-flight token limit is never exceeded; an expired message is never sent.

Dead tokens are forgotten by the callers, so a misconfiguration must not pass for dead tokens:
APNs answers ``BadDeviceToken`` to every token of the other environment and
``DeviceTokenNotForTopic`` to every token of another app, FCM ``SENDER_ID_MISMATCH`` to every
token of another project. Only ``Unregistered`` / ``ExpiredToken`` / ``UNREGISTERED`` are
trusted alone. The other dead-token answers are counted per key over its last
``SUSPECT_WINDOW`` outcomes: when at least ``SUSPECT_MIN`` of them, and half, are such answers,
they are reported FAILED (the device is kept) with the reason saying why, and a warning is
logged, until deliveries outnumber them again (the token-hygiene guard of spec §1.7).

Provider contract: set ``Outcome.retry_after`` only when the service said how long to wait
(``Retry-After``, a quota): it holds back the whole key for that long. Leave it ``None`` for a
plain transient error and the policy's jittered backoff applies to that token alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from clarion.delivery import metrics
from clarion.delivery.clock import Clock, SystemClock
from clarion.delivery.pool import CredentialsUnusable, PoolClosed, PoolKey, ProviderPool
from clarion.delivery.retry import (
    BACKING_OFF,
    EXPIRED,
    OutcomeBook,
    RetryPolicy,
    backoff_delay,
    is_expired,
    plan_retry,
    same_outcome,
    seconds_until,
)
from clarion.providers.base import Notification, Outcome, OutcomeKind, Part, Provider
from clarion.providers.transport import TransportError

log = logging.getLogger(__name__)

# Dead-token answers that are final on their own: the service says the token was unregistered.
TRUSTED_DEATHS = frozenset({"Unregistered", "ExpiredToken", "UNREGISTERED"})
SUSPECT_WINDOW = 200
SUSPECT_MIN = 20

SHUTTING_DOWN = "ShuttingDown"  # the pool closed under a send; the token was not sent
PROVIDER_UNAVAILABLE = "ProviderUnavailable"  # the factory failed to build a provider
INVALID_PROVIDER_ANSWER = "InvalidProviderAnswer"  # a provider broke the one-outcome-per-token rule


@dataclass(frozen=True, slots=True)
class CredentialsRejected:
    """Reported once when a key's credentials are rejected; sends stay suspended until
    the credentials version changes."""

    key: PoolKey
    version: Hashable
    reason: str | None
    status: int | None


OnCredentialsRejected = Callable[[CredentialsRejected], Awaitable[None]]


@dataclass(eq=False)
class _KeyState:
    version: Hashable
    label: str  # metrics label: the provider's name once one was built, else the platform
    gate_until: float = float("-inf")  # monotonic time until which the service asked us to wait
    rejected: CredentialsRejected | None = None
    # The key's last SUSPECT_WINDOW final answers: True for an untrusted dead-token answer.
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=SUSPECT_WINDOW))
    suspects: int = 0  # how many True in ``recent``
    guarding: bool = False  # untrusted dead-token answers are being reported FAILED

    def observe(self, answers: Sequence[Outcome]) -> bool:
        """Count the answers; True if untrusted dead-token answers are too many to believe."""
        for answer in answers:
            if answer.kind is OutcomeKind.RETRY:
                continue
            suspect = answer.kind is OutcomeKind.TOKEN_DEAD and answer.reason not in TRUSTED_DEATHS
            if len(self.recent) == self.recent.maxlen and self.recent[0]:
                self.suspects -= 1
            self.recent.append(suspect)
            self.suspects += suspect
        return self.suspects >= SUSPECT_MIN and 2 * self.suspects >= len(self.recent)

    def rejection_for(self, version: Hashable) -> CredentialsRejected | None:
        if self.rejected is not None and self.rejected.version == version:
            return self.rejected
        return None


class Dispatcher:
    """Sends notifications through a ``ProviderPool`` with retries, back-pressure and metrics."""

    def __init__(
        self,
        pool: ProviderPool,
        *,
        policy: RetryPolicy | None = None,
        batch_size: int = 500,
        on_credentials_rejected: OnCredentialsRejected | None = None,
        clock: Clock | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.pool = pool
        self.policy = policy or RetryPolicy()
        self.clock: Clock = clock or SystemClock()
        self._batch_size = min(batch_size, pool.max_in_flight)
        self._on_rejected = on_credentials_rejected
        self._jitter = jitter
        self._keys: dict[PoolKey, _KeyState] = {}

    def suspended(self, key: PoolKey, version: Hashable) -> bool:
        """True while ``key``'s credentials at ``version`` stand rejected."""
        state = self._keys.get(key)
        return state is not None and state.rejection_for(version) is not None

    async def close(self, grace: float = 10.0) -> None:
        """Close every provider; sends still in flight get up to ``grace`` seconds."""
        await self.pool.close_all(grace)

    async def send(
        self, key: PoolKey, version: Hashable, notification: Notification, tokens: Sequence[str]
    ) -> list[Outcome]:
        """Send with in-process retries; return one final outcome per token, in input order.

        Final means DELIVERED, TOKEN_DEAD, CREDENTIALS_REJECTED or FAILED; RETRY only for tokens
        left unsent because the dispatcher was closed meanwhile.
        """
        book = OutcomeBook(tokens)
        deadline = None
        if self.policy.max_wait is not None:
            deadline = self.clock.monotonic() + self.policy.max_wait

        async def attempt(indices: Sequence[int], number: int) -> dict[float, list[int]]:
            """Send the tokens at ``indices``; settle the final ones, group the rest by wait."""
            outcomes = await self.send_once(
                key,
                version,
                notification,
                [tokens[i] for i in indices],
                attempt=number,
                deadline=deadline,
            )
            later: dict[float, list[int]] = {}
            for index, outcome in zip(indices, outcomes, strict=True):
                if outcome.kind is OutcomeKind.RETRY and not self.pool.closed:
                    later.setdefault(outcome.retry_after or 0.0, []).append(index)
                else:
                    book.settle(index, outcome)
            return later

        async def retry(indices: list[int], number: int, wait: float) -> None:
            await self.clock.sleep(wait)
            for next_wait, group in (await attempt(indices, number)).items():
                tasks.create_task(retry(group, number + 1, next_wait))

        # The first attempt runs inline: most sends never retry, and a task group costs loop turns.
        later = await attempt(range(len(tokens)), 1) if tokens else {}
        if later:
            async with asyncio.TaskGroup() as tasks:
                for wait, group in later.items():
                    tasks.create_task(retry(group, 2, wait))
        return book.results()

    async def send_once(
        self,
        key: PoolKey,
        version: Hashable,
        notification: Notification,
        tokens: Sequence[str],
        *,
        attempt: int = 1,
        deadline: float | None = None,
        wait: bool = True,
    ) -> list[Outcome]:
        """Make attempt number ``attempt``; return one outcome per token, in input order.

        ``wait=False``: a key backing off after a Retry-After answers RETRY at once, with the
        seconds left as ``retry_after``, instead of holding the caller (a job reschedules, a
        relay push answers "retry later").

        RETRY outcomes carry the seconds to wait before attempt ``attempt + 1``; the last allowed
        attempt, a retry past the expiry, or one past ``deadline`` (on ``self.clock.monotonic()``)
        turn into FAILED. Waits at the key's gates but never sleeps for a retry.
        """
        return await self.send_many(
            key, version, ((notification, tokens),), attempt=attempt, deadline=deadline, wait=wait
        )

    async def send_many(
        self,
        key: PoolKey,
        version: Hashable,
        parts: Sequence[Part],
        *,
        attempt: int = 1,
        deadline: float | None = None,
        wait: bool = True,
    ) -> list[Outcome]:
        """``send_once`` for several notifications to one key, each to its own tokens (a job's
        distinct messages): one provider call for all of them instead of one per message.

        Returns one outcome per token, the parts' tokens one after the other, in order. Each
        part keeps its own expiry; everything else (the key's gates, the in-flight limit, the
        attempt number) is shared.
        """
        count = sum(len(tokens) for _, tokens in parts)
        if not count:
            return []
        state = self._state(key, version)
        size = self._batch_size
        if count <= size:
            outcomes = await self._send_batch(
                key, version, state, parts, count, attempt, deadline, wait
            )
        else:
            async with asyncio.TaskGroup() as group:
                batches = [
                    group.create_task(
                        self._send_batch(key, version, state, chunk, total, attempt, deadline, wait)
                    )
                    for chunk, total in _chunks(parts, size)
                ]
            outcomes = [outcome for batch in batches for outcome in batch.result()]
        metrics.meters(state.label).count(outcomes)
        return outcomes

    def _state(self, key: PoolKey, version: Hashable) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState(version, key.platform)
        elif state.version != version:
            state.version = version
            if state.rejected is not None and state.rejected.version != version:
                log.info("credentials of %s changed: sending again", key)
                state.rejected = None
        return state

    async def _send_batch(
        self,
        key: PoolKey,
        version: Hashable,
        state: _KeyState,
        parts: Sequence[Part],
        count: int,
        attempt: int,
        deadline: float | None,
        wait: bool = True,
    ) -> list[Outcome]:
        """Send at most one batch's tokens (``count`` of them) after the gates; the outcomes of
        every part, flattened in order."""
        settled: list[list[Outcome] | None] = [None] * len(parts)
        sent: list[int] = []  # the parts given to the provider
        answers: list[Outcome] = []
        while True:
            delay = self._gate(state, version, parts, settled, deadline)
            if all(s is not None for s in settled):
                break
            if delay > 0 and not wait:
                for i, (_, tokens) in enumerate(parts):
                    if settled[i] is None:
                        settled[i] = [
                            Outcome(t, OutcomeKind.RETRY, BACKING_OFF, delay) for t in tokens
                        ]
                break
            if delay > 0:
                await self.clock.sleep(delay)
                continue
            async with self.pool.slots(key, count):
                # Waiting for a slot takes time: the gates may have closed meanwhile.
                if self._gate(state, version, parts, settled, deadline) > 0:
                    continue
                sent = [i for i, s in enumerate(settled) if s is None]
                if sent:
                    answers = await self._call(key, version, state, [parts[i] for i in sent])
                break
        if sent:
            planned = await self._settle(
                key, version, state, [parts[i] for i in sent], answers, attempt, deadline
            )
            at = 0
            for i in sent:
                end = at + len(parts[i][1])
                settled[i] = planned[at:end]
                at = end
        return [outcome for part in settled if part is not None for outcome in part]

    def _gate(
        self,
        state: _KeyState,
        version: Hashable,
        parts: Sequence[Part],
        settled: list[list[Outcome] | None],
        deadline: float | None,
    ) -> float:
        """Settle the parts that must not be sent (expired, rejected credentials, or a wait
        past their expiry or the deadline); return the seconds to wait before sending the
        others (0: go)."""
        rejected = state.rejection_for(version)
        monotonic = self.clock.monotonic()
        wait = state.gate_until - monotonic
        if rejected is None and wait <= 0 and all(n.expires_at is None for n, _ in parts):
            return 0.0  # the usual case: nothing to settle, nothing to wait for
        now = self.clock.now()
        for i, (notification, tokens) in enumerate(parts):
            if settled[i] is not None:
                continue
            if is_expired(notification.expires_at, now):
                settled[i] = same_outcome(tokens, OutcomeKind.FAILED, EXPIRED)
            elif rejected is not None:
                settled[i] = [
                    Outcome(
                        token,
                        OutcomeKind.CREDENTIALS_REJECTED,
                        rejected.reason,
                        None,
                        rejected.status,
                    )
                    for token in tokens
                ]
            elif wait > 0:
                expires_in = seconds_until(notification.expires_at, now)
                if expires_in is not None and wait >= expires_in:
                    settled[i] = same_outcome(tokens, OutcomeKind.FAILED, EXPIRED)
                elif deadline is not None and monotonic + wait > deadline:
                    settled[i] = same_outcome(tokens, OutcomeKind.FAILED, BACKING_OFF)
        return max(wait, 0.0)

    async def _call(
        self, key: PoolKey, version: Hashable, state: _KeyState, parts: Sequence[Part]
    ) -> list[Outcome]:
        try:
            async with self.pool.provider(key, version) as provider:
                state.label = provider.name
                return await self._timed_send(key, provider, parts)
        except CredentialsUnusable as exc:
            log.warning("credentials of %s unusable: %s", key, exc.message)
            return same_outcome(
                _tokens(parts), OutcomeKind.CREDENTIALS_REJECTED, "CredentialsUnusable"
            )
        except PoolClosed:
            return same_outcome(_tokens(parts), OutcomeKind.RETRY, SHUTTING_DOWN)
        except Exception:
            log.exception("building the provider for %s failed", key)
            return same_outcome(_tokens(parts), OutcomeKind.RETRY, PROVIDER_UNAVAILABLE)

    async def _timed_send(
        self, key: PoolKey, provider: Provider, parts: Sequence[Part]
    ) -> list[Outcome]:
        label = provider.name
        tokens = _tokens(parts)
        count = len(tokens)
        meters = metrics.meters(label)
        meters.attempts.inc(count)
        meters.in_flight.inc(count)
        started = time.perf_counter()
        try:
            if len(parts) == 1:
                answers = await provider.send(*parts[0])
            else:
                answers = await provider.send_many(parts)
        except TransportError as exc:
            log.warning("%s send for %s got no answer: %s", label, key, exc)
            return same_outcome(tokens, OutcomeKind.RETRY, type(exc).__name__)
        except Exception as exc:
            log.exception("%s send for %s raised", label, key)
            return same_outcome(tokens, OutcomeKind.RETRY, type(exc).__name__)
        finally:
            meters.latency.observe(time.perf_counter() - started)
            meters.in_flight.dec(count)
        return _checked(label, tokens, answers)

    async def _settle(
        self,
        key: PoolKey,
        version: Hashable,
        state: _KeyState,
        parts: Sequence[Part],
        answers: list[Outcome],
        attempt: int,
        deadline: float | None,
    ) -> list[Outcome]:
        """Apply the provider's answers to the key's state and plan each retry."""
        monotonic = self.clock.monotonic()
        waits = [a.retry_after for a in answers if a.kind is OutcomeKind.RETRY and a.retry_after]
        if waits:
            state.gate_until = max(state.gate_until, monotonic + max(waits))
        rejected = next((a for a in answers if a.kind is OutcomeKind.CREDENTIALS_REJECTED), None)
        if rejected is not None:
            await self._suspend(key, version, state, rejected)
        answers = self._guard_tokens(key, state, answers)
        if not any(a.kind is OutcomeKind.RETRY for a in answers):
            return answers  # nothing to plan: every other outcome is final as it is
        backoff = backoff_delay(
            attempt, self.policy.backoff_base, self.policy.backoff_cap, self._jitter
        )
        now = self.clock.now()
        deadline_in = None if deadline is None else deadline - monotonic
        planned: list[Outcome] = []
        at = 0
        for notification, tokens in parts:
            expires_in = seconds_until(notification.expires_at, now)
            end = at + len(tokens)
            planned.extend(
                plan_retry(
                    answer,
                    attempt=attempt,
                    policy=self.policy,
                    backoff=backoff,
                    expires_in=expires_in,
                    deadline_in=deadline_in,
                )
                for answer in answers[at:end]
            )
            at = end
        return planned

    def _guard_tokens(
        self, key: PoolKey, state: _KeyState, answers: list[Outcome]
    ) -> list[Outcome]:
        """Untrusted dead-token answers as FAILED (the device kept) while they are too many."""
        guarding = state.observe(answers)
        if guarding != state.guarding:
            state.guarding = guarding
            if guarding:
                log.warning(
                    "%s: %d of the last %d answers call the token bad (%s): a wrong "
                    "environment, topic or project? Devices are kept, these sends FAILED",
                    key,
                    state.suspects,
                    len(state.recent),
                    next((a.reason for a in answers if _untrusted_death(a)), None),
                )
            else:
                log.info("%s: dead-token answers are believed again", key)
        if not guarding:
            return answers
        return [
            replace(a, kind=OutcomeKind.FAILED, reason=f"{a.reason} ({MISCONFIGURED})")
            if _untrusted_death(a)
            else a
            for a in answers
        ]

    async def _suspend(
        self, key: PoolKey, version: Hashable, state: _KeyState, answer: Outcome
    ) -> None:
        if state.version != version or state.rejection_for(version) is not None:
            return  # a stale version's answer, or already reported
        event = CredentialsRejected(key, version, answer.reason, answer.status)
        state.rejected = event
        log.warning("credentials of %s rejected (%s): sends suspended", key, answer.reason)
        if self._on_rejected is None:
            return
        try:
            await self._on_rejected(event)
        except Exception:
            log.exception("the credentials-rejected callback failed for %s", key)


MISCONFIGURED = "not deleted: too many tokens refused at once for this app and environment"


def _untrusted_death(answer: Outcome) -> bool:
    return answer.kind is OutcomeKind.TOKEN_DEAD and answer.reason not in TRUSTED_DEATHS


def _tokens(parts: Sequence[Part]) -> list[str]:
    return [token for _, tokens in parts for token in tokens]


def _chunks(parts: Sequence[Part], size: int) -> Iterator[tuple[list[Part], int]]:
    """Split the parts into batches of at most ``size`` tokens (a part may be split), in order;
    each with its number of tokens."""
    chunk: list[Part] = []
    count = 0
    for notification, tokens in parts:
        start = 0
        while start < len(tokens):
            take = min(size - count, len(tokens) - start)
            chunk.append((notification, tokens[start : start + take]))
            count += take
            start += take
            if count == size:
                yield chunk, count
                chunk, count = [], 0
    if chunk:
        yield chunk, count


def _checked(label: str, tokens: Sequence[str], answers: list[Outcome]) -> list[Outcome]:
    """The provider's answers, with a RETRY wherever it broke the one-per-token contract."""
    if len(answers) != len(tokens):
        log.error("%s answered %d outcomes for %d tokens", label, len(answers), len(tokens))
        return same_outcome(tokens, OutcomeKind.RETRY, INVALID_PROVIDER_ANSWER)
    checked = list(answers)
    for i, (token, answer) in enumerate(zip(tokens, answers, strict=True)):
        if answer.token != token:
            log.error("%s answered for another token at position %d", label, i)
            checked[i] = Outcome(token, OutcomeKind.RETRY, INVALID_PROVIDER_ANSWER)
    return checked
