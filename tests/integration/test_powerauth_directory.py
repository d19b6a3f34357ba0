"""The `powerauth` activation directory against a fake PowerAuth Server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clarion.core.directory import PowerAuthDirectory
from clarion.core.platforms import ActivationStatus
from clarion.core.services import Services
from clarion.errors import DirectoryError
from clarion.store.models import Device
from tests.fake_powerauth import FakePowerAuth, free_port, running
from tests.support import assert_error, assert_ok, envelope

ACT = "49414e31-f3df-4cea-87e6-f214ca3b8412"


@pytest.fixture
def fake() -> Iterator[FakePowerAuth]:
    server = FakePowerAuth(
        activations={
            ACT: ("ACTIVE", "user-42"),
            "blocked": ("BLOCKED", "user-9"),
            "gone": ("REMOVED", "u"),
        },
        username="push",
        password="pa-pass",
    )
    with running(server):
        yield server


@pytest.fixture
def settings_overrides(fake: FakePowerAuth) -> dict[str, Any]:
    return {
        "activation_directory": "powerauth",
        "powerauth_url": fake.url,
        "powerauth_username": "push",
        "powerauth_password": "pa-pass",
        "powerauth_cache_seconds": 0,
    }


async def stored(services: Services) -> list[Device]:
    async with services.db.reader() as session:
        return list((await session.scalars(select(Device))).all())


async def register(client: httpx.AsyncClient, activation_id: str, **extra: Any) -> httpx.Response:
    body = envelope(
        appId="mobile-app", token="t" * 64, platform="ios", activationId=activation_id, **extra
    )
    return await client.post("/push/device/create", json=body)


@pytest.fixture(autouse=True)
async def app(client: httpx.AsyncClient) -> None:
    assert_ok(await client.post("/admin/app/create", json=envelope(appId="mobile-app")))


async def test_user_and_status_come_from_the_powerauth_server(
    client: httpx.AsyncClient, services: Services, fake: FakePowerAuth
) -> None:
    # A userId in the request is ignored: the PowerAuth Server is the authority.
    assert_ok(await register(client, ACT, userId="someone-else"))
    [device] = await stored(services)
    assert (device.user_id, device.active) == ("user-42", True)
    assert fake.calls == [{"requestObject": {"activationId": ACT}}]


async def test_blocked_activation_registers_inactive(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert_ok(await register(client, "blocked"))
    [device] = await stored(services)
    assert (device.user_id, device.active) == ("user-9", False)


async def test_removed_and_unknown_activations_are_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert_error(await register(client, "gone"), "ERROR_GENERIC", contains="removed")
    assert_error(await register(client, "unknown"), "ERROR_PA_SERVER_COMM", contains="not found")
    assert await stored(services) == []


async def test_status_update_without_status_asks_the_server(
    client: httpx.AsyncClient, services: Services, fake: FakePowerAuth
) -> None:
    assert_ok(await register(client, ACT))
    fake.activations[ACT] = ("BLOCKED", "user-42")
    assert_ok(await client.post("/push/device/status/update", json=envelope(activationId=ACT)))
    [device] = await stored(services)
    assert device.active is False


async def test_wrong_credentials_are_a_directory_error(fake: FakePowerAuth) -> None:
    directory = PowerAuthDirectory(fake.url, username="push", password="wrong")
    with pytest.raises(DirectoryError, match="refused"):
        await directory.status(ACT)
    await directory.close()


async def test_unreachable_server_is_a_directory_error_not_a_500() -> None:
    directory = PowerAuthDirectory(f"http://127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(DirectoryError, match="unreachable"):
        await directory.status(ACT)
    await directory.close()


async def test_answers_are_cached_briefly(fake: FakePowerAuth) -> None:
    directory = PowerAuthDirectory(fake.url, username="push", password="pa-pass", cache_seconds=60)
    first = await directory.status(ACT)
    fake.activations[ACT] = ("BLOCKED", "user-42")
    second = await directory.status(ACT)
    assert first == second and first is not None and first.status is ActivationStatus.ACTIVE
    assert len(fake.calls) == 1
    directory.forget(ACT)
    third = await directory.status(ACT)
    assert third is not None and third.status is ActivationStatus.BLOCKED
    await directory.close()
