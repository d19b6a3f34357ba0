"""The PowerAuth admin API over HTTP, asserting on the stored state, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from clarion.core.platforms import Platform
from clarion.core.services import Services
from clarion.providers.base import ApnsCredentials, FcmCredentials, HmsCredentials
from clarion.store.models import Application, Credential
from tests.support import (
    apns_p8,
    assert_error,
    assert_ok,
    b64,
    envelope,
    key_fragments,
    rsa_pem,
    service_account,
)


async def create_app(client: httpx.AsyncClient, app_id: str = "mobile-app") -> None:
    assert_ok(await client.post("/admin/app/create", json=envelope(appId=app_id)))


def ios_body(app_id: str = "mobile-app", key: bytes | None = None, **changes: object) -> dict:
    fields: dict[str, object] = {
        "appId": app_id,
        "bundle": "com.example.app",
        "keyId": "KEYID12345",
        "teamId": "TEAMID1234",
        "environment": None,
        "privateKeyBase64": b64(key or apns_p8()),
    }
    fields.update(changes)
    return {"requestObject": fields}


async def stored_credential(services: Services, platform: str) -> Credential | None:
    async with services.db.reader() as session:
        return await session.scalar(select(Credential).where(Credential.platform == platform))


async def test_create_application_is_stored_and_listed(
    client: httpx.AsyncClient, services: Services
) -> None:
    data = assert_ok(await client.post("/admin/app/create", json=envelope(appId="mobile-app")))
    assert data["responseObject"] == {"appId": "mobile-app"}
    async with services.db.reader() as session:
        assert (await session.scalars(select(Application.app_id))).all() == ["mobile-app"]
    listed = assert_ok(await client.get("/admin/app/list"))["responseObject"]
    assert listed == {
        "applicationList": [
            {"appId": "mobile-app", "ios": False, "android": False, "huawei": False}
        ]
    }


async def test_duplicate_application_is_a_generic_error(client: httpx.AsyncClient) -> None:
    await create_app(client)
    response = await client.post("/admin/app/create", json=envelope(appId="mobile-app"))
    assert_error(response, "ERROR_GENERIC", contains="already exists")


@pytest.mark.parametrize("app_id", ["ab", "has space", "x" * 256, "slash/app"])
async def test_invalid_application_id_is_refused(client: httpx.AsyncClient, app_id: str) -> None:
    response = await client.post("/admin/app/create", json=envelope(appId=app_id))
    assert_error(response, "ERROR_REQUEST")


async def test_ios_credentials_are_validated_encrypted_and_never_returned(
    client: httpx.AsyncClient, services: Services
) -> None:
    await create_app(client)
    key = apns_p8()
    assert_ok(await client.put("/admin/app/ios/update", json=ios_body(key=key)))

    row = await stored_credential(services, "apns")
    assert row is not None and row.bundle == "com.example.app" and row.key_id == "KEYID12345"
    assert b"PRIVATE KEY" not in row.secret  # encrypted at rest
    assert services.box.open(row.secret).strip() == key.strip()

    detail = await client.post("/admin/app/detail", json=envelope(appId="mobile-app"))
    data = assert_ok(detail)["responseObject"]
    assert data["application"] == {
        "appId": "mobile-app",
        "ios": True,
        "android": False,
        "huawei": False,
    }
    assert data["iosBundle"] == "com.example.app"
    assert data["iosKeyId"] == "KEYID12345" and data["iosTeamId"] == "TEAMID1234"
    for fragment in key_fragments(key):
        assert fragment not in detail.text

    creds = await services.apps.credentials("mobile-app", Platform.APNS)
    assert creds is not None
    apns, version = creds
    assert isinstance(apns, ApnsCredentials) and apns.sandbox is True  # server default
    assert 1 <= version <= 2**30  # a new row's history starts at a random version


async def test_credential_update_bumps_version_and_environment(
    client: httpx.AsyncClient, services: Services
) -> None:
    await create_app(client)
    assert_ok(await client.put("/admin/app/ios/update", json=ios_body()))
    first = await services.apps.credentials("mobile-app", Platform.APNS)
    assert_ok(await client.put("/admin/app/ios/update", json=ios_body(environment="production")))
    creds = await services.apps.credentials("mobile-app", Platform.APNS)
    assert first is not None and creds is not None
    assert isinstance(creds[0], ApnsCredentials) and creds[0].sandbox is False
    assert creds[1] == first[1] + 1


async def test_credentials_removed_and_uploaded_again_get_a_version_never_seen(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A process may still hold a provider built for the removed credentials' version: the
    new row must not start where the old one did."""
    await create_app(client)
    seen = set()
    for _ in range(3):
        assert_ok(await client.put("/admin/app/ios/update", json=ios_body()))
        creds = await services.apps.credentials("mobile-app", Platform.APNS)
        assert creds is not None and creds[1] not in seen
        seen.add(creds[1])
        assert_ok(await client.post("/admin/app/ios/remove", json=envelope(appId="mobile-app")))


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (rsa_pem(), "EC P-256"),
        (apns_p8(ec.SECP384R1()), "EC P-256"),
        (b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", "PEM"),
        (b"just some text", "PEM"),
    ],
)
async def test_bad_apns_key_is_refused_naming_the_problem(
    client: httpx.AsyncClient, services: Services, key: bytes, expected: str
) -> None:
    await create_app(client)
    response = await client.put("/admin/app/ios/update", json=ios_body(key=key))
    assert_error(response, "ERROR_REQUEST", contains=expected)
    assert await stored_credential(services, "apns") is None


async def test_apns_key_that_is_not_base64_is_refused(client: httpx.AsyncClient) -> None:
    await create_app(client)
    body = ios_body()
    body["requestObject"]["privateKeyBase64"] = "***not base64***"
    assert_error(
        await client.put("/admin/app/ios/update", json=body), "ERROR_REQUEST", contains="base64"
    )


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("bundle", "Bundle must not be empty."),
        ("keyId", "Key ID must not be empty."),
        ("teamId", "Team ID must not be empty."),
        ("privateKeyBase64", "Private key must not be empty."),
    ],
)
async def test_empty_ios_field_uses_upstream_message(
    client: httpx.AsyncClient, field: str, message: str
) -> None:
    await create_app(client)
    response = await client.put("/admin/app/ios/update", json=ios_body(**{field: ""}))
    assert assert_error(response, "ERROR_REQUEST") == message


async def test_unknown_apns_environment_is_refused(client: httpx.AsyncClient) -> None:
    await create_app(client)
    response = await client.put("/admin/app/ios/update", json=ios_body(environment="staging"))
    assert_error(response, "ERROR_REQUEST", contains="environment")


async def test_android_service_account_is_validated_and_stored(
    client: httpx.AsyncClient, services: Services
) -> None:
    await create_app(client)
    account = service_account("demo-project")
    body = envelope(appId="mobile-app", projectId="demo-project", privateKeyBase64=b64(account))
    response = await client.put("/admin/app/android/update", json=body)
    assert_ok(response)
    creds = await services.apps.credentials("mobile-app", Platform.FCM)
    assert creds is not None and isinstance(creds[0], FcmCredentials)
    assert creds[0].project_id == "demo-project"
    assert creds[0].service_account["client_email"] == account["client_email"]
    row = await stored_credential(services, "fcm")
    assert row is not None and b"client_email" not in row.secret
    detail = await client.post("/admin/app/detail", json=envelope(appId="mobile-app"))
    assert assert_ok(detail)["responseObject"]["androidProjectId"] == "demo-project"
    assert "private_key" not in detail.text


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        (service_account(client_email=None), "client_email"),
        (service_account(token_uri=None, private_key=None), "private_key, token_uri"),
        (service_account(type="authorized_user"), "type service_account"),
        (service_account(private_key=apns_p8().decode()), "RSA"),
        (service_account(private_key="garbage"), "PEM"),
        ("not json", "JSON"),
        ([1, 2, 3], "JSON object"),
    ],
)
async def test_bad_service_account_is_refused_naming_the_problem(
    client: httpx.AsyncClient, services: Services, account: object, expected: str
) -> None:
    await create_app(client)
    raw = account if isinstance(account, str) else json.dumps(account)
    body = envelope(appId="mobile-app", projectId="demo-project", privateKeyBase64=b64(raw))
    response = await client.put("/admin/app/android/update", json=body)
    assert_error(response, "ERROR_REQUEST", contains=expected)
    assert await stored_credential(services, "fcm") is None


async def test_huawei_credentials_are_stored_and_secret_hidden(
    client: httpx.AsyncClient, services: Services
) -> None:
    await create_app(client)
    body = envelope(
        appId="mobile-app",
        projectId="HMS123",
        clientId="107946611",
        clientSecret="s3cr3t-hms-value",
    )
    assert_ok(await client.put("/admin/app/huawei/update", json=body))
    creds = await services.apps.credentials("mobile-app", Platform.HMS)
    assert creds is not None and isinstance(creds[0], HmsCredentials)
    assert creds[0].client_secret == "s3cr3t-hms-value"
    detail = await client.post("/admin/app/detail", json=envelope(appId="mobile-app"))
    data = assert_ok(detail)["responseObject"]
    assert data["huaweiProjectId"] == "HMS123"
    assert "s3cr3t-hms-value" not in detail.text
    assert "s3cr3t-hms-value" not in repr(creds[0])


async def test_missing_huawei_client_id_is_refused(client: httpx.AsyncClient) -> None:
    await create_app(client)
    body = envelope(appId="mobile-app", projectId="HMS123", clientSecret="x")
    message = assert_error(await client.put("/admin/app/huawei/update", json=body), "ERROR_REQUEST")
    assert message == "Client ID must not be null."


async def test_unconfigured_list_shows_only_apps_without_platforms(
    client: httpx.AsyncClient,
) -> None:
    await create_app(client, "configured")
    await create_app(client, "bare-app")
    assert_ok(await client.put("/admin/app/ios/update", json=ios_body("configured")))
    data = assert_ok(await client.get("/admin/app/unconfigured/list"))["responseObject"]
    assert data == {
        "applicationList": [{"appId": "bare-app", "ios": None, "android": None, "huawei": None}]
    }


async def test_detail_can_leave_platforms_out(client: httpx.AsyncClient) -> None:
    await create_app(client)
    assert_ok(await client.put("/admin/app/ios/update", json=ios_body()))
    body = envelope(appId="mobile-app", includeIos=False)
    data = assert_ok(await client.post("/admin/app/detail", json=body))["responseObject"]
    assert data["application"]["ios"] is True
    assert "iosBundle" not in data


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("DELETE", "/admin/app/ios/remove", False),
        ("POST", "/admin/app/ios/remove", False),
        ("DELETE", "/admin/app/apns", True),
    ],
)
async def test_ios_remove_in_every_client_form(
    client: httpx.AsyncClient, services: Services, method: str, path: str, query: bool
) -> None:
    await create_app(client)
    assert_ok(await client.put("/admin/app/ios/update", json=ios_body()))
    if query:
        response = await client.request(method, path, params={"appId": "mobile-app"})
    else:
        response = await client.request(method, path, json=envelope(appId="mobile-app"))
    assert_ok(response)
    assert await stored_credential(services, "apns") is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/admin/app/ios/update"),
        ("PUT", "/admin/app/apns"),
        ("POST", "/admin/app/apns"),
    ],
)
async def test_ios_update_in_official_client_forms(
    client: httpx.AsyncClient, services: Services, method: str, path: str
) -> None:
    await create_app(client)
    assert_ok(await client.request(method, path, json=ios_body()))
    assert await stored_credential(services, "apns") is not None


async def test_android_and_huawei_remove(client: httpx.AsyncClient, services: Services) -> None:
    await create_app(client)
    account = b64(service_account())
    android = envelope(appId="mobile-app", projectId="demo-project", privateKeyBase64=account)
    huawei = envelope(appId="mobile-app", projectId="P", clientId="C", clientSecret="S")
    assert_ok(await client.post("/admin/app/fcm", json=android))
    assert_ok(await client.post("/admin/app/hms", json=huawei))
    assert_ok(
        await client.request(
            "DELETE", "/admin/app/android/remove", json=envelope(appId="mobile-app")
        )
    )
    assert await stored_credential(services, "fcm") is None
    assert_ok(await client.delete("/admin/app/hms", params={"appId": "mobile-app"}))
    assert await stored_credential(services, "hms") is None


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/admin/app/detail", envelope(appId="nope-app")),
        ("PUT", "/admin/app/ios/update", ios_body("nope-app")),
        ("DELETE", "/admin/app/ios/remove", envelope(appId="nope-app")),
        (
            "PUT",
            "/admin/app/huawei/update",
            envelope(appId="nope-app", projectId="P", clientId="C", clientSecret="S"),
        ),
    ],
)
async def test_unknown_application_is_a_generic_error(
    client: httpx.AsyncClient, method: str, path: str, payload: dict
) -> None:
    response = await client.request(method, path, json=payload)
    assert_error(response, "ERROR_GENERIC", contains="Application not found: nope-app")


async def test_unknown_application_in_query_form(client: httpx.AsyncClient) -> None:
    response = await client.delete("/admin/app/fcm", params={"appId": "nope-app"})
    assert_error(response, "ERROR_GENERIC", contains="nope-app")


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/admin/app/apns"), ("GET", "/inbox/messages/count")],
)
async def test_a_query_parameter_given_twice_is_refused(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    # The last value was taken: a DELETE naming two applications removed the second's keys.
    assert_ok(await client.post("/admin/app/create", json=envelope(appId="mobile-app")))
    params = [("appId", "other-app"), ("userId", "alice"), ("appId", "mobile-app")]
    message = assert_error(await client.request(method, path, params=params), "ERROR_REQUEST")
    assert message == "Query parameter appId is given more than once."


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("bundle", "com.example.app\r\nX-Evil: 1", "Bundle"),
        ("bundle", "com example", "Bundle"),
        ("keyId", "KEY\n12345", "Key ID"),
        ("teamId", "TEAM/12345", "Team ID"),
    ],
)
async def test_ios_identifiers_that_could_not_go_into_a_request_are_refused(
    client: httpx.AsyncClient, services: Services, field: str, value: str, named: str
) -> None:
    await create_app(client)
    response = await client.put("/admin/app/ios/update", json=ios_body(**{field: value}))
    assert_error(response, "ERROR_REQUEST", contains=named)
    assert await stored_credential(services, "apns") is None


async def test_project_ids_that_would_change_the_send_url_are_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    await create_app(client)
    android = envelope(
        appId="mobile-app", projectId="../evil", privateKeyBase64=b64(service_account())
    )
    response = await client.put("/admin/app/android/update", json=android)
    assert_error(response, "ERROR_REQUEST", contains="Project ID")
    huawei = envelope(
        appId="mobile-app", projectId="p/1", clientId="c", clientSecret="secret-value"
    )
    response = await client.put("/admin/app/huawei/update", json=huawei)
    assert_error(response, "ERROR_REQUEST", contains="Project ID")
    assert await stored_credential(services, "fcm") is None
    assert await stored_credential(services, "hms") is None


@pytest.mark.parametrize("app_id", ["mobile-app\n", "abc\n", " mobile-app", "mobile app"])
async def test_an_app_id_is_the_whole_string(client: httpx.AsyncClient, app_id: str) -> None:
    """'$' also matches before a final newline: "mobile-app\\n" made a look-alike app."""
    response = await client.post("/admin/app/create", json=envelope(appId=app_id))
    assert_error(response, "ERROR_REQUEST")
    listed = assert_ok(await client.get("/admin/app/list"))["responseObject"]
    assert listed["applicationList"] == []
