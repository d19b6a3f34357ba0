"""Bodies no JSON parser reads as a document: invalid UTF-8, nesting deeper than the parser
goes, a broken multipart form. Each dialect answers them as bad input in its own format, with
or without the hot routes, never with a 500 or a bare HTTP error."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clarion.core.services import Services
from tests.conftest import app_for
from tests.wc_support import register_body

DEEP = b'{"requestObject": ' + b"[" * 5000 + b"]" * 5000 + b"}"
NOT_UTF8 = b'{"requestObject": {"appId": "\xff\xfe"}}'
JSON = {"content-type": "application/json"}

POWERAUTH_PATHS = [
    "/push/device/create",
    "/push/message/send",
    "/push/message/batch/send",
    "/inbox/messages",
    "/inbox/messages/read",
    "/admin/app/create",
    "/push/campaign/create",
]


@pytest.fixture(params=[True, False], ids=["hot", "full"])
async def api(
    request: pytest.FixtureRequest, services: Services
) -> AsyncIterator[httpx.AsyncClient]:
    settings = services.settings.model_copy(update={"hot_routes": request.param})
    transport = httpx.ASGITransport(app=app_for(services, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


def powerauth_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.text)
    data = response.json()
    assert data["status"] == "ERROR", data
    error: dict[str, Any] = data["responseObject"]
    return error


@pytest.mark.parametrize("path", POWERAUTH_PATHS)
@pytest.mark.parametrize("body", [DEEP, NOT_UTF8], ids=["deep", "not-utf8"])
async def test_powerauth_answers_unreadable_json_as_a_bad_request(
    api: httpx.AsyncClient, path: str, body: bytes
) -> None:
    error = powerauth_error(await api.post(path, content=body, headers=JSON))
    assert error == {"code": "ERROR_REQUEST", "message": "Request body is not valid JSON."}


@pytest.mark.parametrize("path", POWERAUTH_PATHS)
@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        (
            "application/x-www-form-urlencoded",
            "(this request's is application/x-www-form-urlencoded).",
        ),
        ("text/plain; charset=utf-8", "(this request's is text/plain)."),
        (None, "(this request has none)."),
    ],
    ids=["curl-default", "text", "none"],
)
async def test_powerauth_json_sent_as_another_type_names_the_content_type(
    api: httpx.AsyncClient, path: str, content_type: str | None, named: str
) -> None:
    body = b'{"requestObject": {"appId": "mobile-app"}}'
    headers = {"content-type": content_type} if content_type else {}
    error = powerauth_error(await api.post(path, content=body, headers=headers))
    assert error == {
        "code": "ERROR_REQUEST",
        "message": f"Request body must be JSON sent with Content-Type: application/json {named}",
    }


async def test_powerauth_empty_body_without_a_type_is_named_empty(api: httpx.AsyncClient) -> None:
    error = powerauth_error(await api.post("/push/device/create"))
    assert error["message"] == "Request body must not be empty."


def wc_body_failure(response: httpx.Response) -> str:
    assert response.status_code == 400, (response.status_code, response.text)
    data = response.json()
    assert data["status"] == "FAILED", data
    [field] = data["fields"]
    assert field["field"] == "body" and field["location"] == "body", field
    description: str = field["description"]
    return description


@pytest.mark.parametrize("path", ["/clients", "/clients/wallet", "/tenants"])
@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, NOT_UTF8], ids=["deep", "not-utf8"])
async def test_walletconnect_answers_unreadable_json_in_its_format(
    api: httpx.AsyncClient, path: str, body: bytes
) -> None:
    response = await api.post(path, content=body, headers=JSON)
    assert "not valid JSON" in wc_body_failure(response)


async def test_walletconnect_answers_a_broken_form_in_its_format(api: httpx.AsyncClient) -> None:
    assert (await api.post("/tenants", json={"id": "tenant-a"})).status_code == 200
    response = await api.post(
        "/tenants/tenant-a/apns",
        content=b"--x\r\nnot a part",
        headers={"content-type": "multipart/form-data"},  # no boundary
    )
    assert "multipart form" in wc_body_failure(response)
    assert "boundary" in wc_body_failure(response)


async def test_a_cleartext_blob_nested_too_deeply_is_a_json_error(api: httpx.AsyncClient) -> None:
    assert (await api.post("/clients", json=register_body("wallet", "noop-token"))).status_code
    blob = base64.b64encode(b"[" * 3000).decode()
    push = {"id": "m-1", "payload": {"topic": "t" * 64, "flags": 0, "blob": blob}}
    response = await api.post("/clients/wallet", json=push)
    assert response.status_code == 202, response.text
    assert response.json()["errors"][0]["name"] == "json"


async def test_a_service_account_nested_too_deeply_is_refused(api: httpx.AsyncClient) -> None:
    assert (await api.post("/tenants", json={"id": "tenant-a"})).status_code == 200
    files = {"credentials": ("sa.json", b"[" * 5000, "application/json")}
    response = await api.post("/tenants/tenant-a/fcm_v1", files=files)
    assert response.status_code == 400, response.text
    assert response.json()["status"] == "FAILED"


NAN_SEND = (
    b'{"requestObject": {"appId": "mobile-app", "mode": "ASYNCHRONOUS", "message": '
    b'{"userId": "alice", "body": {"title": "x", "extras": {"n": NaN, "i": Infinity}}}}}'
)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/push/message/send", NAN_SEND),
        ("/push/message/send", NAN_SEND.replace(b"NaN", b"-Infinity")),
        ("/push/campaign/create", b'{"requestObject": {"appId": "mobile-app", "message": NaN}}'),
        # Valid JSON, but beyond a float: it was sent to APNs as Infinity, stored as null
        ("/push/message/send", NAN_SEND.replace(b"NaN", b"1e400").replace(b"Infinity", b"1")),
        (
            "/push/campaign/create",
            b'{"requestObject": {"appId": "mobile-app", "message": {"title": "x", '
            b'"extras": {"n": -1e400}}}}',
        ),
    ],
)
async def test_powerauth_refuses_nan_and_infinity(
    api: httpx.AsyncClient, path: str, body: bytes
) -> None:
    """Not JSON: PostgreSQL's json type refuses them and providers' payloads would carry them."""
    assert await api.post("/admin/app/create", json={"requestObject": {"appId": "mobile-app"}})
    error = powerauth_error(await api.post(path, content=body, headers=JSON))
    assert error == {"code": "ERROR_REQUEST", "message": "Request body is not valid JSON."}


async def test_walletconnect_refuses_nan(api: httpx.AsyncClient) -> None:
    body = b'{"id": "m-1", "payload": {"topic": "t", "flags": NaN, "blob": "x"}}'
    response = await api.post("/clients/wallet", content=body, headers=JSON)
    assert "not valid JSON" in wc_body_failure(response)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_body_bytes": 100_000}


def chunks(total: int) -> Any:
    """A body without Content-Length (chunked), ``total`` bytes of a JSON string."""

    async def generate() -> AsyncIterator[bytes]:
        yield b'{"requestObject": {"appId": "'
        for _ in range(total // 10_000):
            yield b"a" * 10_000
        yield b'"}}'

    return generate()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_powerauth_body_over_the_limit_is_413_never_read_whole(
    api: httpx.AsyncClient, declared: bool
) -> None:
    body: Any = b'{"requestObject": {"appId": "' + b"a" * 200_000 + b'"}}'
    response = await api.post(
        "/admin/app/create", content=body if declared else chunks(200_000), headers=JSON
    )
    assert response.status_code == 413, response.text
    assert response.json() == {
        "status": "ERROR",
        "responseObject": {
            "code": "ERROR_REQUEST",
            "message": "Request body is larger than 100000 bytes.",
        },
    }
    # Just under the limit is read and judged as usual (an app id that long is a 400).
    under = b'{"requestObject": {"appId": "' + b"a" * 90_000 + b'"}}'
    assert (await api.post("/admin/app/create", content=under, headers=JSON)).status_code == 400


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/clients/wallet", "/tenants"])
async def test_walletconnect_body_over_its_limit_is_413_in_its_format(
    api: httpx.AsyncClient, path: str, declared: bool
) -> None:
    body: Any = b"{" + b" " * 100_001 + b"}" if declared else chunks(100_001)
    response = await api.post(path, content=body, headers=JSON)
    assert response.status_code == 413, response.text
    assert response.json() == {
        "status": "FAILED",
        "fields": [
            {
                "field": "body",
                "description": "The request body is larger than 100000 bytes.",
                "location": "body",
            }
        ],
    }
