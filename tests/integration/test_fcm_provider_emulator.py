"""FcmProvider against the FCM emulator over real loopback sockets."""

from collections.abc import AsyncIterator

import pytest

from clarion.emulators.fcm import Faults, FcmEmulator
from clarion.providers.base import FcmCredentials, Notification, OutcomeKind
from clarion.providers.fcm import FcmProvider
from clarion.providers.fcm_payload import fcm_message
from clarion.providers.transport_httpx import HttpxTransport
from tests.integration.fcmhms_support import fcm_token, service_account

PROJECT = "clarion-it"
HELLO = Notification(title="Hello", body="World", extras={"n": 1})


@pytest.fixture
async def emu() -> AsyncIterator[FcmEmulator]:
    async with FcmEmulator() as emulator:
        emulator.register_service_account(service_account(PROJECT))
        yield emulator


def make_provider(
    emu: FcmEmulator,
    info: dict[str, str] | None = None,
    *,
    project: str = PROJECT,
    timeout: float = 10.0,
) -> FcmProvider:
    account = {**(info or service_account(PROJECT)), "token_uri": emu.token_url}
    credentials = FcmCredentials(project, account)
    return FcmProvider(credentials, HttpxTransport(), base_url=emu.url, timeout=timeout)


@pytest.fixture
async def provider(emu: FcmEmulator) -> AsyncIterator[FcmProvider]:
    fcm = make_provider(emu)
    yield fcm
    await fcm.close()


async def test_push_is_delivered_and_the_emulator_receives_the_exact_message(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    token = fcm_token(1)
    outcomes = await provider.send(HELLO, [token])
    assert [(o.token, o.kind, o.status) for o in outcomes] == [(token, OutcomeKind.DELIVERED, 200)]
    assert emu.messages_to(token) == [
        {
            "android": {"priority": "HIGH", "notification": {"title": "Hello", "body": "World"}},
            "data": {"n": "1"},
            "token": token,
        }
    ]


async def test_outcomes_come_back_one_per_token_in_order(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    tokens = [fcm_token(n) for n in range(30)]
    emu.faults.token_errors[tokens[7]] = "UNREGISTERED"
    outcomes = await provider.send(HELLO, tokens)
    assert [o.token for o in outcomes] == tokens
    assert [o.kind for o in outcomes].count(OutcomeKind.DELIVERED) == 29
    assert outcomes[7].kind is OutcomeKind.TOKEN_DEAD


async def test_unregistered_and_malformed_tokens_are_dead(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    emu.faults.token_errors[fcm_token(2)] = "UNREGISTERED"
    emu.faults.token_errors[fcm_token(3)] = "SENDER_ID_MISMATCH"
    outcomes = await provider.send(HELLO, [fcm_token(2), fcm_token(3), "not a token!"])
    assert [(o.kind, o.status) for o in outcomes] == [
        (OutcomeKind.TOKEN_DEAD, 404),
        (OutcomeKind.TOKEN_DEAD, 403),
        (OutcomeKind.TOKEN_DEAD, 400),
    ]
    assert emu.received == []


async def test_a_bad_payload_fails_without_killing_the_token(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    outcomes = await provider.send(Notification(body="x", extras={"n": "x" * 5000}), [fcm_token(4)])
    assert outcomes[0].kind is OutcomeKind.FAILED
    assert outcomes[0].reason is not None and "INVALID_ARGUMENT" in outcomes[0].reason
    assert (emu.send_requests, emu.received) == (1, [])  # FCM itself refused it


@pytest.mark.parametrize("key", ["from", "message_type", "google.x", "gcm.notification.x"])
async def test_a_reserved_data_key_fails_every_token_without_a_request(
    emu: FcmEmulator, provider: FcmProvider, key: str
) -> None:
    tokens = [fcm_token(5), fcm_token(6)]
    outcomes = await provider.send(Notification(body="x", extras={key: "1"}), tokens)
    assert [(o.token, o.kind) for o in outcomes] == [(t, OutcomeKind.FAILED) for t in tokens]
    assert outcomes[0].reason == f"INVALID_ARGUMENT: data key {key!r} is reserved by FCM"
    assert emu.send_requests == 0
    # Sent anyway (the per-token request, past the local check), FCM refuses it too: the local
    # refusal is no stricter than the service.
    message = fcm_message(Notification(body="x", extras={key: "1"}))
    access = await provider.access_tokens.get()
    answer = await provider._send_one(message, tokens[0], access)
    assert answer.kind is OutcomeKind.FAILED and "INVALID_ARGUMENT" in (answer.reason or "")


async def test_unknown_key_is_refused_by_the_token_endpoint(emu: FcmEmulator) -> None:
    impostor = {
        **service_account(PROJECT, variant=1),
        "client_email": service_account(PROJECT)["client_email"],
    }
    fcm = make_provider(emu, impostor)
    try:
        outcomes = await fcm.send(HELLO, [fcm_token(5), fcm_token(6)])
    finally:
        await fcm.close()
    assert {(o.kind, o.status) for o in outcomes} == {(OutcomeKind.CREDENTIALS_REJECTED, 400)}
    assert {o.reason for o in outcomes} == {
        "token endpoint HTTP 400: invalid_grant: Invalid JWT Signature."
    }
    assert emu.send_requests == 0


async def test_service_account_of_another_project_is_rejected(emu: FcmEmulator) -> None:
    fcm = make_provider(emu, project="someone-else")
    try:
        outcomes = await fcm.send(HELLO, [fcm_token(7)])
    finally:
        await fcm.close()
    assert (outcomes[0].kind, outcomes[0].reason) == (
        OutcomeKind.CREDENTIALS_REJECTED,
        "PERMISSION_DENIED",
    )


async def test_expired_access_token_is_refreshed_once_for_all_concurrent_sends(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    await provider.send(HELLO, [fcm_token(8)])
    emu.expire_access_tokens()
    outcomes = await provider.send(HELLO, [fcm_token(n) for n in range(20)])
    assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
    assert emu.tokens_issued == 2


async def test_access_token_refused_twice_rejects_credentials(emu: FcmEmulator) -> None:
    emu.token_lifetime = 0  # every token is dead on arrival
    fcm = make_provider(emu)
    try:
        outcomes = await fcm.send(HELLO, [fcm_token(9)])
    finally:
        await fcm.close()
    assert (outcomes[0].kind, outcomes[0].status) == (OutcomeKind.CREDENTIALS_REJECTED, 401)
    assert emu.tokens_issued == 2
    assert emu.send_requests == 2


async def test_one_access_token_serves_many_sends(emu: FcmEmulator, provider: FcmProvider) -> None:
    for batch in range(5):
        outcomes = await provider.send(HELLO, [fcm_token(batch * 40 + n) for n in range(40)])
        assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
    assert emu.tokens_issued == 1
    assert len(emu.received) == emu.accepted == 200


async def test_quota_exceeded_retries_after_the_servers_delay(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    emu.faults.rate_limit_ratio = 1.0
    emu.faults.retry_after = 42
    outcomes = await provider.send(HELLO, [fcm_token(10)])
    assert (outcomes[0].kind, outcomes[0].retry_after, outcomes[0].status) == (
        OutcomeKind.RETRY,
        42.0,
        429,
    )


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_burst_is_retried_then_delivered(
    emu: FcmEmulator, provider: FcmProvider, status: int
) -> None:
    emu.faults.error_burst = 1
    emu.faults.error_burst_status = status
    first = await provider.send(HELLO, [fcm_token(11)])
    second = await provider.send(HELLO, [fcm_token(11)])
    assert (first[0].kind, first[0].status) == (OutcomeKind.RETRY, status)
    assert second[0].kind is OutcomeKind.DELIVERED


async def test_dropped_connection_is_retried(emu: FcmEmulator, provider: FcmProvider) -> None:
    emu.faults.drop_next = 1
    outcomes = await provider.send(HELLO, [fcm_token(12)])
    assert outcomes[0].kind is OutcomeKind.RETRY
    assert outcomes[0].reason is not None and outcomes[0].reason.startswith("transport:")


async def test_slow_answer_times_out_into_a_retry(emu: FcmEmulator) -> None:
    emu.faults.delay = 1.0
    fcm = make_provider(emu, timeout=0.2)
    try:
        await fcm.access_tokens.get()
        outcomes = await fcm.send(HELLO, [fcm_token(13)])
    finally:
        await fcm.close()
    assert outcomes[0].kind is OutcomeKind.RETRY


async def test_token_endpoint_outage_is_retried(emu: FcmEmulator, provider: FcmProvider) -> None:
    emu.faults.token_endpoint_status = 503
    outcomes = await provider.send(HELLO, [fcm_token(14)])
    assert outcomes[0].kind is OutcomeKind.RETRY
    emu.faults.token_endpoint_status = None
    assert (await provider.send(HELLO, [fcm_token(14)]))[0].kind is OutcomeKind.DELIVERED


async def test_random_faults_leave_every_token_with_exactly_one_outcome(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    emu.faults = Faults(drop_ratio=0.04, rate_limit_ratio=0.03, seed=7)
    emu.faults.error_burst = 5
    tokens = [fcm_token(n) for n in range(400)]
    outcomes = await provider.send(HELLO, tokens)
    assert [o.token for o in outcomes] == tokens
    kinds = [o.kind for o in outcomes]
    assert set(kinds) == {OutcomeKind.DELIVERED, OutcomeKind.RETRY}
    assert kinds.count(OutcomeKind.DELIVERED) == emu.accepted
    assert kinds.count(OutcomeKind.RETRY) >= 5


async def test_no_tokens_means_no_requests(emu: FcmEmulator, provider: FcmProvider) -> None:
    assert await provider.send(HELLO, []) == []
    assert (emu.tokens_issued, emu.send_requests) == (0, 0)


async def test_project_quota_refuses_the_excess_until_the_minute_has_passed(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    emu.quota_per_minute = 5
    outcomes = await provider.send(HELLO, [fcm_token(n) for n in range(8)])
    kinds = [o.kind for o in outcomes]
    assert kinds.count(OutcomeKind.DELIVERED) == 5
    retries = [o for o in outcomes if o.kind is OutcomeKind.RETRY]
    assert len(retries) == 3
    assert all(o.reason == "QUOTA_EXCEEDED" and o.retry_after == 60.0 for o in retries)


async def test_send_many_gives_each_token_its_own_message(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    other = Notification(title="Other", body="Text")
    tokens = [fcm_token(i) for i in (31, 32, 33)]
    outcomes = await provider.send_many([(HELLO, tokens[:2]), (other, tokens[2:])])
    assert [(o.token, o.kind) for o in outcomes] == [(t, OutcomeKind.DELIVERED) for t in tokens]
    titles = {
        t: [m["android"]["notification"]["title"] for m in emu.messages_to(t)] for t in tokens
    }
    assert titles == {tokens[0]: ["Hello"], tokens[1]: ["Hello"], tokens[2]: ["Other"]}


async def test_non_ascii_text_is_counted_in_utf8_bytes(
    emu: FcmEmulator, provider: FcmProvider
) -> None:
    # 1,500 Cyrillic letters: 3,000 bytes as sent, under FCM's 4,096; escaped they were 9,000.
    title = "ж" * 1500
    [ok] = await provider.send(Notification(title=title), [fcm_token(40)])
    assert ok.kind is OutcomeKind.DELIVERED
    assert emu.messages_to(fcm_token(40))[0]["android"]["notification"]["title"] == title
    [big] = await provider.send(Notification(title="ж" * 2100), [fcm_token(41)])
    assert big.kind is OutcomeKind.FAILED
    # The field violation's description is kept: the generic message says nothing useful.
    assert big.reason == (
        "INVALID_ARGUMENT: Request contains an invalid argument. (message: Message is too big)"
    )
