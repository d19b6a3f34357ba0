"""The delivery layer around the real FcmProvider and the FCM emulator, over loopback sockets.

The dispatcher's waits run on a virtual clock (no real sleeping); the HTTP is real.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from clarion.delivery import (
    CredentialsRejected,
    Dispatcher,
    PoolKey,
    ProviderPool,
    RetryPolicy,
)
from clarion.emulators.fcm import Faults, FcmEmulator
from clarion.providers.base import FcmCredentials, Notification, OutcomeKind, Provider
from clarion.providers.fcm import FcmProvider
from clarion.providers.transport_httpx import HttpxTransport
from tests.integration.fcmhms_support import fcm_token, service_account
from tests.unit.delivery_fixtures import FakeClock

PROJECT = "clarion-it"
KEY = PoolKey("app-1", "android", "production")
HELLO = Notification(title="Hello", body="World")
POLICY = RetryPolicy(max_attempts=6, backoff_base=0.5, backoff_cap=8.0, max_wait=None)


class Credentials:
    """What the core's factory would read from the database: the current credentials."""

    def __init__(self, emu: FcmEmulator, account: Mapping[str, Any]) -> None:
        self.emu = emu
        self.account = dict(account)
        self.builds = 0

    async def build(self, key: PoolKey) -> Provider:
        self.builds += 1
        info = {**self.account, "token_uri": self.emu.token_url}
        return FcmProvider(FcmCredentials(PROJECT, info), HttpxTransport(), base_url=self.emu.url)


@pytest.fixture
async def emu() -> AsyncIterator[FcmEmulator]:
    async with FcmEmulator() as emulator:
        emulator.register_service_account(service_account(PROJECT))
        yield emulator


async def test_random_faults_end_with_every_token_classified_once_and_none_sent_twice(
    emu: FcmEmulator,
) -> None:
    emu.faults = Faults(drop_ratio=0.04, rate_limit_ratio=0.03, seed=11)
    emu.faults.error_burst = 3
    tokens = [fcm_token(n) for n in range(500)]
    for token in tokens[::50]:
        emu.faults.token_errors[token] = "UNREGISTERED"
    clock = FakeClock()
    dispatcher = Dispatcher(
        ProviderPool(Credentials(emu, service_account(PROJECT)).build), policy=POLICY, clock=clock
    )
    try:
        outcomes = await dispatcher.send(KEY, 1, HELLO, tokens)
    finally:
        await dispatcher.close()

    assert [o.token for o in outcomes] == tokens
    kinds = Counter(o.kind for o in outcomes)
    assert kinds[OutcomeKind.TOKEN_DEAD] == 10
    assert kinds[OutcomeKind.DELIVERED] == emu.accepted == 490
    received = Counter(r.token for r in emu.received)
    assert max(received.values()) == 1, "a delivered token was sent again"
    assert emu.send_requests > 525, "faults were injected and retried"
    assert 1.0 in clock.sleeps, "the Retry-After of the refusals was waited out"


async def test_retry_after_from_fcm_holds_the_key_then_delivers(emu: FcmEmulator) -> None:
    emu.faults.rate_limit_ratio = 1.0
    emu.faults.retry_after = 30

    class Clock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            emu.faults.rate_limit_ratio = 0.0  # the quota refills while we wait
            await super().sleep(seconds)

    clock = Clock()
    dispatcher = Dispatcher(
        ProviderPool(Credentials(emu, service_account(PROJECT)).build), policy=POLICY, clock=clock
    )
    try:
        outcomes = await dispatcher.send(KEY, 1, HELLO, [fcm_token(1)])
    finally:
        await dispatcher.close()
    assert outcomes[0].kind is OutcomeKind.DELIVERED
    assert clock.sleeps == [30.0]
    assert emu.send_requests == 2


async def test_a_rejected_service_account_suspends_until_new_credentials_arrive(
    emu: FcmEmulator,
) -> None:
    unknown = service_account(PROJECT, variant=1)  # never registered with the emulator
    credentials = Credentials(emu, unknown)
    reports: list[CredentialsRejected] = []

    async def report(event: CredentialsRejected) -> None:
        reports.append(event)

    dispatcher = Dispatcher(
        ProviderPool(credentials.build),
        policy=POLICY,
        clock=FakeClock(),
        on_credentials_rejected=report,
    )
    try:
        first = await dispatcher.send(KEY, "v1", HELLO, [fcm_token(1), fcm_token(2)])
        again = await dispatcher.send(KEY, "v1", HELLO, [fcm_token(3)])
        credentials.account = dict(service_account(PROJECT))
        fixed = await dispatcher.send(KEY, "v2", HELLO, [fcm_token(3)])
    finally:
        await dispatcher.close()

    assert {o.kind for o in first} == {OutcomeKind.CREDENTIALS_REJECTED}
    assert [(r.key, r.version) for r in reports] == [(KEY, "v1")]
    assert again[0].kind is OutcomeKind.CREDENTIALS_REJECTED
    assert credentials.builds == 2, "one provider per credentials version"
    assert fixed[0].kind is OutcomeKind.DELIVERED
    assert [r.token for r in emu.received] == [fcm_token(3)]
