"""The APNs emulator answers raw HTTP/2 requests the way Apple documents."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from apns_fixtures import BUNDLE, KEY_ID, TEAM_ID, TeamKey, device
from cryptography.hazmat.primitives import serialization

from clarion.emulators.apns import ApnsEmulator
from clarion.providers.apns_jwt import sign_provider_token
from clarion.providers.transport import HttpResponse, Transport, create_transport


@pytest.fixture
async def transport(emulator: ApnsEmulator) -> AsyncIterator[Transport]:
    t = create_transport(ca_file=emulator.ca_file, http2_only=True)
    yield t
    await t.close()


def _jwt(team_key: TeamKey, issued_at: float | None = None, team_id: str = TEAM_ID) -> str:
    key = serialization.load_pem_private_key(team_key.private_pem, None)
    return sign_provider_token(
        key,  # type: ignore[arg-type]
        key_id=KEY_ID,
        team_id=team_id,
        issued_at=int(time.time() if issued_at is None else issued_at),
    )


class Client:
    def __init__(self, transport: Transport, emulator: ApnsEmulator, team_key: TeamKey) -> None:
        self.transport, self.emulator, self.team_key = transport, emulator, team_key
        self.jwt = _jwt(team_key)

    async def post(
        self,
        token: str = device(1),
        body: bytes = b'{"aps":{"alert":"hi"}}',
        path: str | None = None,
        **headers: str,
    ) -> HttpResponse:
        sent = {"apns-topic": BUNDLE, "authorization": f"bearer {self.jwt}"}
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        sent = {k: v for k, v in sent.items() if v != ""}
        url = self.emulator.url + (path if path is not None else f"/3/device/{token}")
        return await self.transport.post(url, sent, body)


@pytest.fixture
def client(transport: Transport, emulator: ApnsEmulator, team_key: TeamKey) -> Client:
    return Client(transport, emulator, team_key)


def _reason(response: HttpResponse) -> str:
    return str(json.loads(response.body)["reason"])


async def test_good_request_is_200_with_the_echoed_apns_id(client: Client) -> None:
    apns_id = "6f1a3c2e-0b8d-4c1e-9f3a-2d4b5c6e7f80"
    response = await client.post(apns_id=apns_id)
    assert response.status == 200
    assert response.headers["apns-id"] == apns_id
    assert response.body == b""


async def test_missing_apns_id_is_generated(client: Client) -> None:
    response = await client.post()
    assert len(response.headers["apns-id"]) == 36


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({"authorization": ""}, 403, "MissingProviderToken"),
        ({"authorization": "bearer not.a.jwt"}, 403, "InvalidProviderToken"),
        ({"apns_topic": ""}, 400, "MissingTopic"),
        ({"apns_topic": "com.unknown.app"}, 400, "TopicDisallowed"),
        ({"apns_push_type": "shout"}, 400, "InvalidPushType"),
        ({"apns_priority": "7"}, 400, "BadPriority"),
        ({"apns_push_type": "background", "apns_priority": "10"}, 400, "BadPriority"),
        ({"apns_id": "not-a-uuid"}, 400, "BadMessageId"),
        ({"apns_expiration": "tomorrow"}, 400, "BadExpirationDate"),
        ({"apns_collapse_id": "c" * 65}, 400, "BadCollapseId"),
    ],
)
async def test_bad_headers_get_apples_reason(
    client: Client, headers: dict[str, str], status: int, reason: str
) -> None:
    response = await client.post(**headers)
    assert (response.status, _reason(response)) == (status, reason)


async def test_suffixed_topic_of_a_registered_bundle_is_allowed(client: Client) -> None:
    response = await client.post(apns_topic=BUNDLE + ".voip", apns_push_type="voip")
    assert response.status == 200


async def test_token_older_than_an_hour_is_expired(client: Client, team_key: TeamKey) -> None:
    client.jwt = _jwt(team_key, issued_at=time.time() - 3601)
    response = await client.post()
    assert (response.status, _reason(response)) == (403, "ExpiredProviderToken")


async def test_token_renewed_too_soon_on_a_connection_is_throttled(
    client: Client, team_key: TeamKey
) -> None:
    client.jwt = _jwt(team_key, issued_at=time.time() - 60)
    assert (await client.post()).status == 200
    client.jwt = _jwt(team_key)
    response = await client.post()
    assert (response.status, _reason(response)) == (429, "TooManyProviderTokenUpdates")


async def test_payload_over_4096_bytes_is_413(client: Client) -> None:
    body = json.dumps({"aps": {}, "pad": "x" * 4096}).encode()
    response = await client.post(body=body)
    assert (response.status, _reason(response)) == (413, "PayloadTooLarge")


async def test_empty_payload_is_rejected(client: Client) -> None:
    response = await client.post(body=b"")
    assert (response.status, _reason(response)) == (400, "PayloadEmpty")


async def test_non_hex_token_is_bad_device_token(client: Client) -> None:
    response = await client.post(token="zz-not-hex")
    assert (response.status, _reason(response)) == (400, "BadDeviceToken")


async def test_wrong_path_is_404(client: Client) -> None:
    response = await client.post(path="/2/device/abc")
    assert (response.status, _reason(response)) == (404, "BadPath")


async def test_unregistered_token_is_410_with_a_timestamp(
    client: Client, emulator: ApnsEmulator
) -> None:
    emulator.unregister_device(device(9), timestamp_ms=1_700_000_000_000)
    response = await client.post(token=device(9))
    assert response.status == 410
    assert json.loads(response.body) == {"reason": "Unregistered", "timestamp": 1_700_000_000_000}


async def test_expired_device_token_is_410(client: Client, emulator: ApnsEmulator) -> None:
    emulator.expire_device(device(8))
    response = await client.post(token=device(8))
    assert (response.status, _reason(response)) == (410, "ExpiredToken")


async def test_injected_429_carries_retry_after(client: Client, emulator: ApnsEmulator) -> None:
    emulator.faults.too_many_requests_rate = 1.0
    emulator.faults.retry_after = 12
    response = await client.post()
    assert (response.status, _reason(response)) == (429, "TooManyRequests")
    assert response.headers["retry-after"] == "12"


async def test_requests_are_recorded_with_their_answer(
    client: Client, emulator: ApnsEmulator
) -> None:
    await client.post(token=device(5), apns_priority="5")
    [record] = emulator.received
    assert record.token == device(5)
    assert record.payload == {"aps": {"alert": "hi"}}
    assert record.headers["apns-priority"] == "5"
    assert (record.status, record.reason) == (200, None)


async def test_sandbox_answers_carry_a_unique_id(team_key: TeamKey) -> None:
    async with ApnsEmulator(sandbox=True) as emu:
        emu.register_key(TEAM_ID, KEY_ID, team_key.public_key)
        emu.register_bundle(BUNDLE)
        t = create_transport(ca_file=emu.ca_file, http2_only=True)
        try:
            response = await Client(t, emu, team_key).post()
        finally:
            await t.close()
    assert response.status == 200
    assert "apns-unique-id" in response.headers


async def test_created_team_key_signs_accepted_tokens_and_pushes_are_reported(
    emulator: ApnsEmulator,
) -> None:
    from clarion.providers.apns import create_apns_provider
    from clarion.providers.base import ApnsCredentials, Notification, OutcomeKind

    private_pem = emulator.create_team_key("DEVTEAM001", "DEVKEY0001")
    emulator.register_bundle("com.example.dev")
    shown: list[str] = []
    emulator.on_receive = lambda push: shown.append(f"{push.token} {push.status}")
    credentials = ApnsCredentials(
        bundle="com.example.dev",
        sandbox=True,
        key_id="DEVKEY0001",
        team_id="DEVTEAM001",
        private_key_pem=private_pem,
    )
    provider = create_apns_provider(credentials, base_url=emulator.url, ca_file=emulator.ca_file)
    try:
        [outcome] = await provider.send(Notification(body="hello"), [device(1)])
    finally:
        await provider.close()
    assert outcome.kind is OutcomeKind.DELIVERED
    assert shown == [f"{device(1)} 200"]


async def test_default_transport_negotiates_http2_and_shares_one_connection(
    emulator: ApnsEmulator, team_key: TeamKey
) -> None:
    import asyncio

    t = create_transport(ca_file=emulator.ca_file)  # ALPN, not prior knowledge
    client = Client(t, emulator, team_key)
    try:
        responses = await asyncio.gather(*(client.post(token=device(i)) for i in range(50)))
    finally:
        await t.close()
    assert {r.status for r in responses} == {200}
    assert emulator.connection_count == 1
