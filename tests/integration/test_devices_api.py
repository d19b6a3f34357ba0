"""PowerAuth device registration over HTTP, asserting on the stored state, on both databases."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clarion.core.services import Services
from clarion.store.models import Activation, Device
from tests.support import assert_error, assert_ok, envelope

ACT_1 = "49414e31-f3df-4cea-87e6-f214ca3b8412"
ACT_2 = "c564e700-7e86-4a87-b6c8-a5a0cc89683f"


@pytest.fixture(autouse=True)
async def app(client: httpx.AsyncClient) -> None:
    assert_ok(await client.post("/admin/app/create", json=envelope(appId="mobile-app")))


async def devices(services: Services) -> list[Device]:
    async with services.db.reader() as session:
        return list((await session.scalars(select(Device).order_by(Device.id))).all())


def device_body(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "appId": "mobile-app",
        "token": "a" * 64,
        "platform": "ios",
        "activationId": ACT_1,
    }
    fields.update(changes)
    return {"requestObject": {k: v for k, v in fields.items() if v is not None}}


async def test_create_device_stores_registration(
    client: httpx.AsyncClient, services: Services
) -> None:
    response = await client.post(
        "/push/device/create", json=device_body(environment="production", userId="user-1")
    )
    assert assert_ok(response) == {"status": "OK"}
    [device] = await devices(services)
    assert (device.platform, device.token, device.environment) == ("apns", "a" * 64, "production")
    assert (device.activation_id, device.user_id, device.active) == (ACT_1, "user-1", True)
    async with services.db.reader() as session:
        activation = await session.get(Activation, ACT_1)
    assert activation is not None and activation.user_id == "user-1"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("ios", "apns"),
        ("APNS", "apns"),
        ("Android", "fcm"),
        ("fcm", "fcm"),
        ("huawei", "hms"),
        ("HMS", "hms"),
    ],
)
async def test_platform_spellings_of_both_generations_are_accepted(
    client: httpx.AsyncClient, services: Services, given: str, stored: str
) -> None:
    assert_ok(await client.post("/push/device/create", json=device_body(platform=given)))
    [device] = await devices(services)
    assert device.platform == stored


async def test_unknown_platform_is_a_request_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/push/device/create", json=device_body(platform="windows"))
    assert_error(response, "ERROR_REQUEST", contains="Unknown platform")


async def test_environment_for_android_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/push/device/create", json=device_body(platform="android", environment="production")
    )
    assert_error(response, "ERROR_REQUEST", contains="Environment")


async def test_reregistering_an_activation_replaces_its_token(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert_ok(await client.post("/push/device/create", json=device_body(token="old-token")))
    assert_ok(await client.post("/push/device/create", json=device_body(token="new-token")))
    [device] = await devices(services)
    assert device.token == "new-token"


async def test_a_token_moves_to_the_activation_that_registers_it(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert_ok(await client.post("/push/device/create", json=device_body(activationId=ACT_1)))
    assert_ok(await client.post("/push/device/create", json=device_body(activationId=ACT_2)))
    [device] = await devices(services)
    assert device.activation_id == ACT_2


async def test_user_of_an_activation_known_to_the_local_directory_is_used(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert_ok(await client.post("/push/device/create", json=device_body(userId="user-7")))
    # Registered again without a user: the directory remembers the activation's owner.
    assert_ok(await client.post("/push/device/create", json=device_body(token="b" * 64)))
    [device] = await devices(services)
    assert device.user_id == "user-7"


async def test_device_of_an_unknown_local_activation_has_no_user_but_is_reachable(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert_ok(await client.post("/push/device/create", json=device_body()))
    [device] = await devices(services)
    assert (device.user_id, device.active, device.activation_id) == (None, True, ACT_1)


async def test_removed_activation_is_refused(client: httpx.AsyncClient, services: Services) -> None:
    response = await client.post(
        "/push/device/create", json=device_body(userId="u", activationStatus="REMOVED")
    )
    assert_error(response, "ERROR_GENERIC", contains="removed")
    assert await devices(services) == []


@pytest.mark.parametrize("status", ["BLOCKED", "REMOVED"])
async def test_registering_again_with_only_a_user_keeps_the_activations_status(
    client: httpx.AsyncClient, services: Services, status: str
) -> None:
    # An app refreshing its token sends userId, not the status: that must not bring a blocked
    # or removed activation back to ACTIVE.
    assert_ok(await client.post("/push/device/create", json=device_body(userId="u")))
    body = envelope(activationId=ACT_1, activationStatus=status)
    assert_ok(await client.post("/push/device/status/update", json=body))
    refresh = device_body(userId="u", token="b" * 64)
    response = await client.post("/push/device/create", json=refresh)
    if status == "REMOVED":
        assert_error(response, "ERROR_GENERIC", contains="removed")
        assert [(d.token, d.active) for d in await devices(services)] == [("a" * 64, False)]
    else:
        assert_ok(response)
        assert [(d.token, d.active) for d in await devices(services)] == [("b" * 64, False)]
    # An explicit status still sets it (the local directory's extension).
    again = device_body(userId="u", token="c" * 64, activationStatus="ACTIVE")
    assert_ok(await client.post("/push/device/create", json=again))
    assert [(d.token, d.active) for d in await devices(services)] == [("c" * 64, True)]


async def test_blocked_activation_registers_inactive(
    client: httpx.AsyncClient, services: Services
) -> None:
    response = await client.post(
        "/push/device/create", json=device_body(userId="u", activationStatus="blocked")
    )
    assert_ok(response)
    [device] = await devices(services)
    assert device.active is False


async def test_multi_activation_registration_is_off_by_default(
    client: httpx.AsyncClient, services: Services
) -> None:
    body = device_body(activationIds=[ACT_1, ACT_2])
    del body["requestObject"]["activationId"]
    response = await client.post("/push/device/create/multi", json=body)
    assert_error(response, "ERROR_GENERIC", contains="multiple activations")
    assert await devices(services) == []


class TestMultipleActivationsEnabled:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"multiple_activations": True}

    async def test_one_registration_per_distinct_activation(
        self, client: httpx.AsyncClient, services: Services
    ) -> None:
        body = device_body(activationIds=[ACT_1, ACT_2, ACT_1])
        del body["requestObject"]["activationId"]
        assert_ok(await client.post("/push/device/create/multi", json=body))
        assert_ok(await client.post("/push/device/create/multi", json=body))
        stored = await devices(services)
        assert sorted(d.activation_id or "" for d in stored) == sorted([ACT_1, ACT_2])
        assert {d.token for d in stored} == {"a" * 64}

    async def test_empty_activation_list_is_refused(self, client: httpx.AsyncClient) -> None:
        body = device_body(activationIds=[])
        del body["requestObject"]["activationId"]
        response = await client.post("/push/device/create/multi", json=body)
        assert_error(response, "ERROR_REQUEST", contains="Activation IDs")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/push/device/remove"),
        ("POST", "/push/device/delete"),
        ("DELETE", "/push/device/delete"),
        ("POST", "/push/device/remove"),
    ],
)
async def test_remove_device_in_every_client_form_and_idempotent(
    client: httpx.AsyncClient, services: Services, method: str, path: str
) -> None:
    assert_ok(await client.post("/push/device/create", json=device_body()))
    assert_ok(
        await client.post("/push/device/create", json=device_body(token="keep", activationId=ACT_2))
    )
    body = envelope(appId="mobile-app", token="a" * 64)
    assert_ok(await client.request(method, path, json=body))
    assert [d.token for d in await devices(services)] == ["keep"]
    assert_ok(await client.request(method, path, json=body))  # absent: still OK


async def test_remove_device_of_unknown_app_is_a_generic_error(client: httpx.AsyncClient) -> None:
    body = envelope(appId="nope-app", token="t")
    assert_error(await client.request("DELETE", "/push/device/remove", json=body), "ERROR_GENERIC")


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_status_update_sets_active_on_all_registrations(
    client: httpx.AsyncClient, services: Services, method: str
) -> None:
    assert_ok(await client.post("/push/device/create", json=device_body(userId="u")))
    body = envelope(activationId=ACT_1, activationStatus="BLOCKED")
    assert_ok(await client.request(method, "/push/device/status/update", json=body))
    assert [d.active for d in await devices(services)] == [False]
    body = envelope(activationId=ACT_1, activationStatus="ACTIVE")
    assert_ok(await client.request(method, "/push/device/status/update", json=body))
    assert [d.active for d in await devices(services)] == [True]


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_status_update_takes_the_plain_body_the_java_client_sends(
    client: httpx.AsyncClient, services: Services, method: str
) -> None:
    # The seed's form, and Wultra's PushServerClient.updateDeviceStatus: no requestObject.
    assert_ok(await client.post("/push/device/create", json=device_body(userId="u")))
    body = {"activationId": ACT_1, "activationStatus": "BLOCKED"}
    assert_ok(await client.request(method, "/push/device/status/update", json=body))
    assert [d.active for d in await devices(services)] == [False]
    body = {"activationId": ACT_1, "activationStatus": "ACTIVE"}
    assert_ok(await client.request(method, "/push/device/status/update", json=body))
    assert [d.active for d in await devices(services)] == [True]
    # Its errors are the envelope's: a bad field, or nothing to read.
    response = await client.post(
        "/push/device/status/update", json={"activationId": ACT_1, "activationStatus": "NOPE"}
    )
    assert_error(response, "ERROR_REQUEST", contains="NOPE")
    response = await client.post("/push/device/status/update", json={"activationStatus": "ACTIVE"})
    assert_error(response, "ERROR_REQUEST", contains="Activation ID must not be null.")
    response = await client.post("/push/device/status/update", json={})
    assert_error(response, "ERROR_REQUEST", contains="Request object must not be null.")


async def test_status_update_without_status_asks_the_directory(
    client: httpx.AsyncClient, services: Services
) -> None:
    assert_ok(
        await client.post(
            "/push/device/create", json=device_body(userId="u", activationStatus="BLOCKED")
        )
    )
    # The directory says BLOCKED; a device row forced active is corrected from it.
    async with services.db.transaction() as session:
        for device in (await session.scalars(select(Device))).all():
            device.active = True
    body = envelope(activationId=ACT_1)
    assert_ok(await client.post("/push/device/status/update", json=body))
    assert [d.active for d in await devices(services)] == [False]


async def test_status_update_of_unknown_activation_without_status(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/push/device/status/update", json=envelope(activationId="zzz"))
    assert_error(response, "ERROR_PA_SERVER_COMM", contains="Activation not found")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"appId": None}, "App ID must not be null."),
        ({"activationId": None}, "Activation ID must not be null."),
        ({"platform": None}, "Platform must not be null."),
        ({"token": None}, "Push token must not be null or empty."),
        ({"token": ""}, "Push token must not be null or empty."),
        ({"appId": ""}, "App ID must not be empty."),
    ],
)
async def test_missing_fields_use_upstream_messages(
    client: httpx.AsyncClient, changes: dict[str, Any], message: str
) -> None:
    body = device_body()
    body["requestObject"].update(changes)
    body["requestObject"] = {k: v for k, v in body["requestObject"].items() if v is not None}
    response = await client.post("/push/device/create", json=body)
    assert assert_error(response, "ERROR_REQUEST") == message


async def test_device_of_unknown_app_is_a_generic_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/push/device/create", json=device_body(appId="nope-app"))
    assert_error(response, "ERROR_GENERIC", contains="Application not found")
