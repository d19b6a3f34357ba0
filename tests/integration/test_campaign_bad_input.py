"""Bad input to the campaign API gets the PowerAuth error body, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import assert_error, assert_ok, envelope

UNKNOWN = "Campaign with entered ID does not exist"


@pytest.fixture
async def campaign(client: httpx.AsyncClient) -> str:
    assert_ok(await client.post("/admin/app/create", json=envelope(appId="mobile-app")))
    body = envelope(appId="mobile-app", message={"title": "Hello", "body": "World"})
    data = assert_ok(await client.post("/push/campaign/create", json=body))
    campaign_id: str = data["responseObject"]["id"]
    return campaign_id


@pytest.mark.parametrize(
    "campaign_id", ["999", "abc", "0", "-1", "99999999999999999999", "1.5", "\u0661"]
)
async def test_unknown_campaign_id_is_a_generic_error_everywhere(
    client: httpx.AsyncClient, campaign: str, campaign_id: str
) -> None:
    users = {"requestObject": ["alice"]}
    calls = [
        client.get(f"/push/campaign/{campaign_id}/detail"),
        client.put(f"/push/campaign/{campaign_id}/user/add", json=users),
        client.get(f"/push/campaign/{campaign_id}/user/list"),
        client.request("DELETE", f"/push/campaign/{campaign_id}/user/delete", json=users),
        client.post(f"/push/campaign/send/test/{campaign_id}", json=envelope(userId="alice")),
        client.post(f"/push/campaign/send/live/{campaign_id}"),
    ]
    for call in calls:
        assert_error(await call, "ERROR_GENERIC", contains=UNKNOWN)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"requestObject": "alice"}, "list of user IDs"),
        ({"requestObject": {"users": ["alice"]}}, "list of user IDs"),
        ({"requestObject": ["alice", 7]}, "User ID at position 1"),
        ({"requestObject": ["alice", None]}, "User ID at position 1"),
        ({"requestObject": [""]}, "User ID at position 0"),
        ({"requestObject": ["x" * 256]}, "User ID at position 0"),
        ({"requestObject": ["ali\x00ce"]}, "NUL"),
        ({"requestObject": None}, "Request object must not be null."),
        ({}, "Request object must not be null."),
        ([], "requestObject"),
    ],
)
async def test_malformed_user_list_is_a_request_error(
    client: httpx.AsyncClient, campaign: str, body: Any, expected: str
) -> None:
    for method in ("PUT", "POST"):
        response = await client.request(method, f"/push/campaign/{campaign}/user/add", json=body)
        assert_error(response, "ERROR_REQUEST", contains=expected)
    response = await client.request("DELETE", f"/push/campaign/{campaign}/user/delete", json=body)
    assert_error(response, "ERROR_REQUEST", contains=expected)


async def test_user_list_that_is_not_json_is_a_request_error(
    client: httpx.AsyncClient, campaign: str
) -> None:
    response = await client.put(
        f"/push/campaign/{campaign}/user/add",
        content=b'{"requestObject": ["alice",',
        headers={"content-type": "application/json"},
    )
    assert_error(response, "ERROR_REQUEST", contains="not valid JSON")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("page=-1", "page"),
        ("size=0", "size"),
        ("size=100001", "size"),
        ("page=x", "page"),
        ("page=10000000000", "page"),
    ],
)
async def test_paging_out_of_range_is_a_request_error(
    client: httpx.AsyncClient, campaign: str, query: str, expected: str
) -> None:
    response = await client.get(f"/push/campaign/{campaign}/user/list?{query}")
    assert_error(response, "ERROR_REQUEST", contains=expected)


async def test_sending_an_empty_campaign_is_refused_and_leaves_it_unsent(
    client: httpx.AsyncClient, campaign: str
) -> None:
    response = await client.post(f"/push/campaign/send/live/{campaign}")
    assert_error(response, "ERROR_GENERIC", contains="no users")
    found = assert_ok(await client.get(f"/push/campaign/{campaign}/detail"))["responseObject"]
    assert found["sent"] is False


@pytest.mark.parametrize(
    ("body", "code", "expected"),
    [
        (envelope(appId="mobile-app"), "ERROR_REQUEST", "push campaign message payload"),
        (envelope(appId="mobile-app", message=None), "ERROR_REQUEST", "message payload"),
        (envelope(message={"title": "x"}), "ERROR_REQUEST", "App ID must not be null."),
        (envelope(appId="mobile-app", message={"badge": -3}), "ERROR_REQUEST", "badge"),
        (envelope(appId="mobile-app", message="hello"), "ERROR_REQUEST", "message"),
        (envelope(appId="other-app", message={"title": "x"}), "ERROR_GENERIC", "not found"),
        (
            envelope(appId="mobile-app", message={"title": "a\x00b"}),
            "ERROR_REQUEST",
            "NUL",
        ),
    ],
)
async def test_bad_campaign_is_refused_with_a_clear_error(
    client: httpx.AsyncClient, campaign: str, body: dict[str, Any], code: str, expected: str
) -> None:
    response = await client.post("/push/campaign/create", json=body)
    assert_error(response, code, contains=expected)


async def test_bad_test_send_and_list_flag_are_request_errors(
    client: httpx.AsyncClient, campaign: str
) -> None:
    response = await client.post(f"/push/campaign/send/test/{campaign}", json=envelope())
    assert_error(response, "ERROR_REQUEST", contains="User ID must not be null.")
    response = await client.get("/push/campaign/list?all=maybe")
    assert_error(response, "ERROR_REQUEST", contains="all")
