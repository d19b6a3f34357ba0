"""The PowerAuth inbox over HTTP, on both databases: shapes, order, paging, filters, read state."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from clarion.core.services import Services
from clarion.store.models import InboxMessage, InboxMessageApplication
from tests.support import assert_error, assert_ok, envelope

APPS = ("mobile-app", "web-app", "other-app")


@pytest.fixture(autouse=True)
async def apps(client: httpx.AsyncClient) -> None:
    for app_id in APPS:
        assert_ok(await client.post("/admin/app/create", json=envelope(appId=app_id)))


async def post(
    client: httpx.AsyncClient,
    user_id: str = "user-001",
    apps: list[str] | None = None,
    **changes: Any,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "userId": user_id,
        "type": "text",
        "subject": "Example subject",
        "summary": "Example summary",
        "body": "Example message body",
        "applications": apps or ["mobile-app"],
    }
    fields.update(changes)
    data = assert_ok(await client.post("/inbox/messages", json=envelope(**fields)))
    message: dict[str, Any] = data["responseObject"]
    return message


async def listed(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    params.setdefault("userId", "user-001")
    return assert_ok(await client.get("/inbox/messages/list", params=params))


async def count(client: httpx.AsyncClient, user_id: str = "user-001", app: str = APPS[0]) -> int:
    params = {"userId": user_id, "appId": app}
    data = assert_ok(await client.get("/inbox/messages/count", params=params))
    value: int = data["responseObject"]["countUnread"]
    return value


async def test_posted_message_is_stored_unread_and_returned_in_the_seed_shape(
    client: httpx.AsyncClient, services: Services
) -> None:
    message = await post(client, apps=["web-app", "mobile-app", "web-app"])
    assert set(message) == {
        "id",
        "userId",
        "type",
        "subject",
        "summary",
        "body",
        "read",
        "timestampCreated",
        "timestampRead",
        "applications",
    }
    assert (message["userId"], message["type"], message["read"]) == ("user-001", "text", False)
    assert message["timestampRead"] is None
    assert sorted(message["applications"]) == ["mobile-app", "web-app"]
    created = datetime.fromisoformat(message["timestampCreated"])
    assert created.utcoffset() is not None
    async with services.db.reader() as session:
        stored = await session.get(InboxMessage, uuid.UUID(message["id"]))
        links = (await session.scalars(select(InboxMessageApplication))).all()
    assert stored is not None and stored.user_id == "user-001" and not stored.read
    assert len(links) == 2


async def test_html_body_is_stored_and_returned_exactly_as_given(
    client: httpx.AsyncClient,
) -> None:
    html = '<html><body><h1>Hi &amp; bye</h1><script>alert("x")</script>\n\tž✓</body></html>'
    message = await post(client, type="HTML", body=html)
    assert (message["type"], message["body"]) == ("html", html)
    detail = assert_ok(await client.get("/inbox/messages/detail", params={"id": message["id"]}))
    assert detail["responseObject"]["body"] == html


async def test_list_is_newest_first_with_page_and_size_at_the_top_level(
    client: httpx.AsyncClient,
) -> None:
    ids = [(await post(client, subject=f"message {n}"))["id"] for n in range(3)]
    data = await listed(client, page=0, size=20)
    assert (data["page"], data["size"]) == (0, 20)
    assert [m["id"] for m in data["responseObject"]] == ids[::-1]
    item = data["responseObject"][0]
    assert set(item) == {"id", "type", "subject", "summary", "read", "timestampCreated"}
    assert item["subject"] == "message 2"


async def test_pages_cover_every_message_once_and_default_size_is_100(
    client: httpx.AsyncClient,
) -> None:
    ids = [(await post(client, subject=f"m{n}"))["id"] for n in range(7)]
    pages = [(await listed(client, page=p, size=3))["responseObject"] for p in range(4)]
    assert [len(p) for p in pages] == [3, 3, 1, 0]
    assert [m["id"] for p in pages for m in p] == ids[::-1]
    default = await listed(client)
    assert (default["page"], default["size"]) == (0, 100)


async def test_only_unread_leaves_read_messages_out(client: httpx.AsyncClient) -> None:
    first, second = await post(client), await post(client)
    assert_ok(
        await client.put(
            "/inbox/messages/read", params={"userId": "user-001", "messageId": first["id"]}
        )
    )
    unread = await listed(client, onlyUnread="true")
    assert [m["id"] for m in unread["responseObject"]] == [second["id"]]
    everything = await listed(client, onlyUnread="false")
    assert [m["read"] for m in everything["responseObject"]] == [False, True]


async def test_applications_filter_takes_comma_separated_ids(client: httpx.AsyncClient) -> None:
    mobile = await post(client, apps=["mobile-app"])
    web = await post(client, apps=["web-app"])
    both = await post(client, apps=["mobile-app", "web-app"])
    other = await post(client, apps=["other-app"])

    async def ids(applications: str | None) -> set[str]:
        params = {} if applications is None else {"applications": applications}
        return {m["id"] for m in (await listed(client, **params))["responseObject"]}

    assert await ids("mobile-app") == {mobile["id"], both["id"]}
    assert await ids("web-app") == {web["id"], both["id"]}
    assert await ids("mobile-app,web-app") == {mobile["id"], web["id"], both["id"]}
    assert await ids(" web-app , mobile-app ,") == {mobile["id"], web["id"], both["id"]}
    assert await ids(None) == {mobile["id"], web["id"], both["id"], other["id"]}
    # A message in two of the filtered applications is listed once.
    page = (await listed(client, applications="mobile-app,web-app"))["responseObject"]
    assert len(page) == 3


async def test_count_is_unread_messages_per_application(client: httpx.AsyncClient) -> None:
    await post(client, apps=["mobile-app"])
    both = await post(client, apps=["mobile-app", "web-app"])
    await post(client, apps=["web-app"])
    assert (await count(client, app="mobile-app"), await count(client, app="web-app")) == (2, 2)
    assert await count(client, app="other-app") == 0
    assert_ok(
        await client.put(
            "/inbox/messages/read", params={"userId": "user-001", "messageId": both["id"]}
        )
    )
    assert (await count(client, app="mobile-app"), await count(client, app="web-app")) == (1, 1)


async def test_reading_twice_is_a_no_op_that_keeps_the_first_read_time(
    client: httpx.AsyncClient,
) -> None:
    message = await post(client, apps=["web-app", "mobile-app"])
    params = {"userId": "user-001", "messageId": message["id"]}
    first = assert_ok(await client.put("/inbox/messages/read", params=params))["responseObject"]
    assert first["read"] is True and first["timestampRead"] is not None
    assert first["id"] == message["id"] and first["body"] == message["body"]
    assert first["applications"] == ["mobile-app", "web-app"]
    assert {k: v for k, v in first.items() if k not in ("read", "timestampRead")} == {
        k: v for k, v in message.items() if k not in ("read", "timestampRead")
    }
    again = assert_ok(await client.put("/inbox/messages/read", params=params))["responseObject"]
    assert again == first
    detail = assert_ok(
        await client.get("/inbox/messages/detail", params={"messageId": first["id"]})
    )
    assert detail["responseObject"]["timestampRead"] == first["timestampRead"]


async def test_read_all_marks_every_message_of_that_application_read(
    client: httpx.AsyncClient,
) -> None:
    await post(client, apps=["mobile-app"])
    shared = await post(client, apps=["mobile-app", "web-app"])
    web_only = await post(client, apps=["web-app"])
    response = await client.put(
        "/inbox/messages/read-all", params={"userId": "user-001", "appId": "mobile-app"}
    )
    assert assert_ok(response) == {"status": "OK"}
    assert await count(client, app="mobile-app") == 0
    # Read state belongs to the message: the shared one is now read in web-app too.
    assert await count(client, app="web-app") == 1
    unread = (await listed(client, onlyUnread="true"))["responseObject"]
    assert [m["id"] for m in unread] == [web_only["id"]]
    assert shared["id"] not in {m["id"] for m in unread}


async def test_official_java_client_forms_reach_the_same_handlers(
    client: httpx.AsyncClient,
) -> None:
    first, second = await post(client), await post(client)
    detail = assert_ok(await client.get("/inbox/messages/detail", params={"id": first["id"]}))
    assert detail["responseObject"]["id"] == first["id"]
    read = assert_ok(await client.post("/inbox/messages/read", json=envelope(inboxId=first["id"])))[
        "responseObject"
    ]
    assert read["read"] is True and read["timestampRead"] is not None
    assert await count(client) == 1
    response = await client.post(
        "/inbox/messages/read-all", json=envelope(userId="user-001", appId="mobile-app")
    )
    assert assert_ok(response) == {"status": "OK"}
    assert await count(client) == 0
    assert second["id"] in {m["id"] for m in (await listed(client))["responseObject"]}


async def test_openapi_lists_the_seed_forms_of_read_first(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert list(paths["/inbox/messages/read"]) == ["put", "post"]
    assert list(paths["/inbox/messages/read-all"]) == ["put", "post"]
    assert {"/inbox/messages", "/inbox/messages/list", "/inbox/messages/count"} <= set(paths)


async def test_texts_at_their_length_limits_are_accepted(client: httpx.AsyncClient) -> None:
    message = await post(
        client,
        user_id="u" * 255,
        subject="s" * 255,
        summary="ž" * 255,
        body="b" * 65_536,
    )
    assert (len(message["userId"]), len(message["summary"]), len(message["body"])) == (
        255,
        255,
        65_536,
    )
    assert await count(client, user_id="u" * 255) == 1


async def test_unknown_message_is_message_not_found(client: httpx.AsyncClient) -> None:
    unknown = str(uuid.uuid4())
    assert_error(
        await client.get("/inbox/messages/detail", params={"messageId": unknown}),
        "ERROR_MESSAGE_NOT_FOUND",
    )
