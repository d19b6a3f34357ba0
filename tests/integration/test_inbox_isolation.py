"""One user can never list, count, see (when named), read or mark another user's messages."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import assert_error, assert_ok, envelope

APP = "mobile-app"


@pytest.fixture
async def alice_message(client: httpx.AsyncClient) -> dict[str, Any]:
    assert_ok(await client.post("/admin/app/create", json=envelope(appId=APP)))
    body = envelope(
        userId="alice",
        type="text",
        subject="For Alice only",
        summary="private",
        body="Alice's secret",
        applications=[APP],
    )
    message: dict[str, Any] = assert_ok(await client.post("/inbox/messages", json=body))[
        "responseObject"
    ]
    return message


async def alice_is_unread(client: httpx.AsyncClient, message_id: str) -> bool:
    detail = assert_ok(await client.get("/inbox/messages/detail", params={"id": message_id}))
    return detail["responseObject"]["read"] is False


async def test_another_user_lists_nothing_of_alices(
    client: httpx.AsyncClient, alice_message: dict[str, Any]
) -> None:
    for params in ({"userId": "bob"}, {"userId": "bob", "applications": APP}, {"userId": "ALICE"}):
        data = assert_ok(await client.get("/inbox/messages/list", params=params))
        assert data["responseObject"] == [], params
    mine = assert_ok(await client.get("/inbox/messages/list", params={"userId": "alice"}))
    assert [m["id"] for m in mine["responseObject"]] == [alice_message["id"]]


async def test_another_user_counts_none_of_alices(
    client: httpx.AsyncClient, alice_message: dict[str, Any]
) -> None:
    async def unread(user: str) -> int:
        data = assert_ok(
            await client.get("/inbox/messages/count", params={"userId": user, "appId": APP})
        )
        value: int = data["responseObject"]["countUnread"]
        return value

    assert (await unread("bob"), await unread("alice")) == (0, 1)


async def test_detail_for_another_named_user_is_not_found(
    client: httpx.AsyncClient, alice_message: dict[str, Any]
) -> None:
    response = await client.get(
        "/inbox/messages/detail", params={"messageId": alice_message["id"], "userId": "bob"}
    )
    assert_error(response, "ERROR_MESSAGE_NOT_FOUND")
    assert "secret" not in response.text
    own = await client.get(
        "/inbox/messages/detail", params={"messageId": alice_message["id"], "userId": "alice"}
    )
    assert assert_ok(own)["responseObject"]["body"] == "Alice's secret"


async def test_another_user_cannot_mark_alices_message_read(
    client: httpx.AsyncClient, alice_message: dict[str, Any]
) -> None:
    message_id = alice_message["id"]
    response = await client.put(
        "/inbox/messages/read", params={"userId": "bob", "messageId": message_id}
    )
    assert_error(response, "ERROR_MESSAGE_NOT_FOUND")
    assert "secret" not in response.text
    by_body = await client.post(
        "/inbox/messages/read", json=envelope(inboxId=message_id, userId="bob")
    )
    assert_error(by_body, "ERROR_MESSAGE_NOT_FOUND")
    assert await alice_is_unread(client, message_id)


async def test_read_all_of_another_user_leaves_alices_messages_unread(
    client: httpx.AsyncClient, alice_message: dict[str, Any]
) -> None:
    assert_ok(await client.put("/inbox/messages/read-all", params={"userId": "bob", "appId": APP}))
    assert_ok(await client.post("/inbox/messages/read-all", json=envelope(userId="bob", appId=APP)))
    assert await alice_is_unread(client, alice_message["id"])
