"""Faithfulness: google-auth's own service-account flow gets a token from the FCM emulator."""

import asyncio
from collections.abc import AsyncIterator

import google.auth.exceptions
import google.auth.transport.requests
import httpx
import pytest
import requests
from google.oauth2 import service_account as google_service_account

from clarion.emulators.fcm import FcmEmulator
from tests.integration.fcmhms_support import fcm_token, service_account

PROJECT = "clarion-faithful"
SCOPES = ["https://www.googleapis.com/auth/firebase.messaging"]


@pytest.fixture
async def emu() -> AsyncIterator[FcmEmulator]:
    async with FcmEmulator() as emulator:
        emulator.register_service_account(service_account(PROJECT))
        yield emulator


def loopback_request() -> google.auth.transport.requests.Request:
    session = requests.Session()
    session.trust_env = False  # never route loopback through a proxy from the environment
    return google.auth.transport.requests.Request(session)


def google_credentials(info: dict[str, str]) -> google_service_account.Credentials:
    return google_service_account.Credentials.from_service_account_info(info, scopes=SCOPES)


async def test_google_auth_gets_a_token_that_the_send_endpoint_accepts(emu: FcmEmulator) -> None:
    credentials = google_credentials({**service_account(PROJECT), "token_uri": emu.token_url})
    await asyncio.to_thread(credentials.refresh, loopback_request())
    assert credentials.valid
    assert emu.tokens_issued == 1
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{emu.url}/v1/projects/{PROJECT}/messages:send",
            headers={"authorization": f"Bearer {credentials.token}"},
            json={"message": {"token": fcm_token(1), "data": {"k": "v"}}},
        )
    assert response.status_code == 200
    assert response.json()["name"].startswith(f"projects/{PROJECT}/messages/")


async def test_google_auth_with_an_unregistered_key_is_refused(emu: FcmEmulator) -> None:
    stranger = {**service_account(PROJECT, variant=2), "token_uri": emu.token_url}
    credentials = google_credentials(stranger)
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        await asyncio.to_thread(credentials.refresh, loopback_request())
    assert emu.tokens_issued == 0
