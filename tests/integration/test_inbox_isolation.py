"""One user can never list, count, see (when named), read or mark another user's messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clarion.app import create_app
from clarion.core.services import Services, open_services
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


@pytest.fixture
async def other_process(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """A second clarion on the same database, with caches of its own (another process)."""
    second = await open_services(services.settings)
    transport = httpx.ASGITransport(app=create_app(second.settings, services=second))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as c:
            yield c
    finally:
        await second.close()


async def post_for(client: httpx.AsyncClient, app_id: str, subject: str) -> httpx.Response:
    body = envelope(
        userId="alice", type="text", subject=subject, summary="s", body="b", applications=[app_id]
    )
    return await client.post("/inbox/messages", json=body)


async def test_an_application_deleted_and_created_again_is_never_confused(
    client: httpx.AsyncClient, other_process: httpx.AsyncClient
) -> None:
    # This process has looked up (and cached) the row id of "gone-app".
    assert_ok(await client.post("/admin/app/create", json=envelope(appId="gone-app")))
    assert_ok(await post_for(client, "gone-app", "old"))
    # Another process deletes it (a WalletConnect tenant is an application too) ...
    assert (await other_process.delete("/tenants/gone-app")).json() == {"success": True}
    # ... so here it is unknown: a clear error, never a 500 or an empty answer.
    assert_error(await post_for(client, "gone-app", "lost"), "ERROR_GENERIC", status=400)
    for path, params in (
        ("/inbox/messages/list", {"userId": "alice", "applications": "gone-app"}),
        ("/inbox/messages/count", {"userId": "alice", "appId": "gone-app"}),
    ):
        assert_error(await client.get(path, params=params), "ERROR_GENERIC", status=400)
    # Another application may now get the deleted one's row id (SQLite reuses them), and the
    # deleted one comes back under a new one.
    assert_ok(await other_process.post("/admin/app/create", json=envelope(appId="other-app")))
    assert_ok(await other_process.post("/admin/app/create", json=envelope(appId="gone-app")))
    assert_ok(await post_for(other_process, "other-app", "for other-app"))
    posted = assert_ok(await post_for(client, "gone-app", "new"))["responseObject"]
    assert posted["applications"] == ["gone-app"]

    def subjects(data: dict[str, Any]) -> list[str]:
        return [m["subject"] for m in data["responseObject"]]

    for reader in (client, other_process):
        mine = assert_ok(
            await reader.get(
                "/inbox/messages/list", params={"userId": "alice", "applications": "gone-app"}
            )
        )
        assert subjects(mine) == ["new"]
        theirs = assert_ok(
            await reader.get(
                "/inbox/messages/list", params={"userId": "alice", "applications": "other-app"}
            )
        )
        assert subjects(theirs) == ["for other-app"]
        count = assert_ok(
            await reader.get(
                "/inbox/messages/count", params={"userId": "alice", "appId": "gone-app"}
            )
        )
        assert count["responseObject"]["countUnread"] == 1
    # Marking all of gone-app's messages read leaves other-app's unread.
    assert_ok(
        await client.put(
            "/inbox/messages/read-all", params={"userId": "alice", "appId": "gone-app"}
        )
    )
    count = assert_ok(
        await client.get("/inbox/messages/count", params={"userId": "alice", "appId": "other-app"})
    )
    assert count["responseObject"]["countUnread"] == 1
