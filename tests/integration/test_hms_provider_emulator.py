"""HmsProvider against the HMS emulator over real loopback sockets."""

import json
from collections.abc import AsyncIterator

import pytest

from clarion.emulators.hms import INVALID, HmsEmulator
from clarion.providers.base import HmsCredentials, Notification, OutcomeKind
from clarion.providers.hms import HmsProvider
from clarion.providers.transport_httpx import HttpxTransport

PROJECT, CLIENT, SECRET = "388421841221", "10001", "s+cr/t=="
HELLO = Notification(title="Hello", body="World", extras={"n": 1})


def hms_token(n: int) -> str:
    return f"0866{n:06d}" + "A" * 120


@pytest.fixture
async def emu() -> AsyncIterator[HmsEmulator]:
    async with HmsEmulator() as emulator:
        emulator.register_client(CLIENT, SECRET, project_id=PROJECT)
        yield emulator


def make_provider(
    emu: HmsEmulator, *, secret: str = SECRET, project: str = PROJECT, timeout: float = 10.0
) -> HmsProvider:
    credentials = HmsCredentials(project, CLIENT, secret)
    return HmsProvider(
        credentials, HttpxTransport(), base_url=emu.url, token_url=emu.token_url, timeout=timeout
    )


@pytest.fixture
async def provider(emu: HmsEmulator) -> AsyncIterator[HmsProvider]:
    hms = make_provider(emu)
    yield hms
    await hms.close()


async def test_push_is_delivered_through_the_v2_project_api(
    emu: HmsEmulator, provider: HmsProvider
) -> None:
    outcomes = await provider.send(HELLO, [hms_token(1), hms_token(2)])
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 2
    [received] = emu.received
    assert (received.version, received.target_id) == ("v2", PROJECT)
    assert received.message == {
        "android": {
            "urgency": "HIGH",
            "notification": {"title": "Hello", "body": "World", "click_action": {"type": 3}},
        },
        "data": json.dumps({"n": 1}, separators=(",", ":")),
        "token": [hms_token(1), hms_token(2)],
    }


async def test_without_a_project_id_the_v1_app_api_is_used(emu: HmsEmulator) -> None:
    hms = make_provider(emu, project="")
    try:
        outcomes = await hms.send(HELLO, [hms_token(3)])
    finally:
        await hms.close()
    assert outcomes[0].kind is OutcomeKind.DELIVERED
    assert (emu.received[0].version, emu.received[0].target_id) == ("v1", CLIENT)


async def test_partial_success_kills_only_the_illegal_tokens(
    emu: HmsEmulator, provider: HmsProvider
) -> None:
    emu.faults.token_errors[hms_token(5)] = INVALID
    outcomes = await provider.send(HELLO, [hms_token(4), hms_token(5), hms_token(6)])
    assert [o.kind for o in outcomes] == [
        OutcomeKind.DELIVERED,
        OutcomeKind.TOKEN_DEAD,
        OutcomeKind.DELIVERED,
    ]
    assert emu.tokens_delivered() == [hms_token(4), hms_token(6)]


async def test_all_tokens_invalid_kills_them_all(emu: HmsEmulator, provider: HmsProvider) -> None:
    emu.faults.token_errors[hms_token(7)] = INVALID
    outcomes = await provider.send(HELLO, [hms_token(7), "bad token!"])
    assert {(o.kind, o.reason) for o in outcomes} == {
        (OutcomeKind.TOKEN_DEAD, "80300007: All the tokens are invalid")
    }


async def test_wrong_client_secret_rejects_credentials(emu: HmsEmulator) -> None:
    hms = make_provider(emu, secret="wrong")
    try:
        outcomes = await hms.send(HELLO, [hms_token(8)])
    finally:
        await hms.close()
    assert outcomes[0].kind is OutcomeKind.CREDENTIALS_REJECTED
    assert "invalid client" in str(outcomes[0].reason)
    assert "wrong" not in str(outcomes[0].reason)
    assert emu.send_requests == 0


async def test_expired_access_token_is_refreshed_once(
    emu: HmsEmulator, provider: HmsProvider
) -> None:
    await provider.send(HELLO, [hms_token(9)])
    emu.expire_access_tokens()
    outcomes = await provider.send(HELLO, [hms_token(10)])
    assert outcomes[0].kind is OutcomeKind.DELIVERED
    assert emu.tokens_issued == 2


async def test_access_token_refused_after_a_refresh_rejects_credentials(emu: HmsEmulator) -> None:
    emu.token_lifetime = 0
    hms = make_provider(emu)
    try:
        outcomes = await hms.send(HELLO, [hms_token(11)])
    finally:
        await hms.close()
    assert (outcomes[0].kind, outcomes[0].reason) == (
        OutcomeKind.CREDENTIALS_REJECTED,
        "80200003: Oauth Token expired",
    )
    assert emu.tokens_issued == 2


async def test_large_audiences_go_in_requests_of_1000_tokens(
    emu: HmsEmulator, provider: HmsProvider
) -> None:
    tokens = [hms_token(n) for n in range(2500)]
    outcomes = await provider.send(HELLO, tokens)
    assert [o.token for o in outcomes] == tokens
    assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
    assert sorted(len(r.message["token"]) for r in emu.received) == [500, 1000, 1000]
    assert emu.accepted == 2500
    assert emu.tokens_issued == 1


async def test_traffic_control_retries_after_the_servers_delay(
    emu: HmsEmulator, provider: HmsProvider
) -> None:
    emu.faults.rate_limit_ratio = 1.0
    emu.faults.retry_after = 9
    outcomes = await provider.send(HELLO, [hms_token(12)])
    assert (outcomes[0].kind, outcomes[0].retry_after, outcomes[0].status) == (
        OutcomeKind.RETRY,
        9.0,
        503,
    )


async def test_internal_error_burst_is_retried(emu: HmsEmulator, provider: HmsProvider) -> None:
    emu.faults.error_burst = 1
    emu.faults.error_burst_status = 500
    first = await provider.send(HELLO, [hms_token(13)])
    second = await provider.send(HELLO, [hms_token(13)])
    assert (first[0].kind, first[0].reason) == (
        OutcomeKind.RETRY,
        "81000001: System internal error",
    )
    assert second[0].kind is OutcomeKind.DELIVERED


async def test_dropped_connection_is_retried(emu: HmsEmulator, provider: HmsProvider) -> None:
    emu.faults.drop_next = 1
    outcomes = await provider.send(HELLO, [hms_token(14)])
    assert outcomes[0].kind is OutcomeKind.RETRY


async def test_an_unexpected_result_code_fails_with_code_and_message(
    emu: HmsEmulator, provider: HmsProvider
) -> None:
    emu.faults.token_errors[hms_token(16)] = "80100013"
    outcomes = await provider.send(HELLO, [hms_token(16)])
    assert (outcomes[0].kind, outcomes[0].status, outcomes[0].reason) == (
        OutcomeKind.FAILED,
        400,
        "80100013: The collapse_key message field is invalid",
    )


async def test_numeric_collapse_key_is_accepted_as_a_group(
    emu: HmsEmulator, provider: HmsProvider
) -> None:
    outcomes = await provider.send(Notification(body="x", collapse_key="50"), [hms_token(17)])
    assert outcomes[0].kind is OutcomeKind.DELIVERED
    assert emu.received[0].message["android"]["collapse_key"] == 50


async def test_no_tokens_means_no_requests(emu: HmsEmulator, provider: HmsProvider) -> None:
    assert await provider.send(HELLO, []) == []
    assert (emu.tokens_issued, emu.send_requests) == (0, 0)


async def test_non_ascii_text_is_counted_in_utf8_bytes(
    emu: HmsEmulator, provider: HmsProvider
) -> None:
    # 1,500 Cyrillic letters: 3,000 bytes as sent, under HMS's 4,096; escaped they were 9,000.
    title = "ж" * 1500
    [ok] = await provider.send(Notification(title=title, extras={"k": "ж" * 100}), [hms_token(40)])
    assert ok.kind is OutcomeKind.DELIVERED
    [received] = emu.received
    assert received.message["android"]["notification"]["title"] == title
    assert json.loads(received.message["data"]) == {"k": "ж" * 100}
    [big] = await provider.send(Notification(title="ж" * 2100), [hms_token(41)])
    assert big.kind is OutcomeKind.FAILED and big.reason is not None
    assert big.reason.startswith("80300008")
