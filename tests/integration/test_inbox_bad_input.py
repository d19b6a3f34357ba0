"""Bad input to the inbox gets a clear 400 in the PowerAuth format, never a 500 (both databases)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.support import assert_error, assert_ok, envelope

APP = "mobile-app"
VALID: dict[str, Any] = {
    "userId": "user-001",
    "type": "text",
    "subject": "Example subject",
    "summary": "Example summary",
    "body": "Example message body",
    "applications": [APP],
}


@pytest.fixture(autouse=True)
async def app(client: httpx.AsyncClient) -> None:
    assert_ok(await client.post("/admin/app/create", json=envelope(appId=APP)))


def message(**changes: Any) -> dict[str, Any]:
    fields = {**VALID, **changes}
    return {"requestObject": {k: v for k, v in fields.items() if v is not None}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (message(userId=None), "User ID must not be null."),
        (message(userId=""), "User ID must not be empty."),
        (message(userId=42), "User ID must be a string."),
        (message(userId="u" * 256), "User ID must be at most 255 characters."),
        (message(type=None), "Message type must not be null."),
        (message(type="sms"), "Unknown message type: 'sms'. Use text or html."),
        (message(subject=None), "Subject must not be null."),
        (message(subject="   "), "Subject must not be empty."),
        (message(subject="s" * 256), "Subject must be at most 255 characters."),
        (message(summary=None), "Summary must not be null."),
        (message(summary="s" * 256), "Summary must be at most 255 characters."),
        (message(body=None), "Message body must not be null."),
        (message(body=""), "Message body must not be empty."),
        (message(body="b" * 65_537), "Message body must be at most 65536 characters."),
        (message(applications=None), "Applications must not be null."),
        (message(applications=[]), "Applications must not be empty."),
        (message(applications=APP), "Applications must be a list of application IDs."),
        (message(applications=[7]), "Application ID must be a string."),
        (message(applications=[f"app-{n}" for n in range(101)]), "At most 100 applications"),
        (message(subject="a\x00b"), "NUL characters"),
        ({"requestObject": None}, "Request object must not be null."),
        ({}, "Request object must not be null."),
    ],
)
async def test_bad_message_is_refused_with_a_sentence_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], expected: str
) -> None:
    response = await client.post("/inbox/messages", json=body)
    assert_error(response, "ERROR_REQUEST", contains=expected)


async def test_lone_surrogate_in_a_body_is_refused(client: httpx.AsyncClient) -> None:
    raw = json.dumps(message(body="x"))[:-2].replace('"x"', '"\\ud800"') + "}}"
    response = await client.post(
        "/inbox/messages", content=raw, headers={"content-type": "application/json"}
    )
    assert_error(response, "ERROR_REQUEST", contains="valid Unicode")


async def test_unknown_application_is_a_business_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/inbox/messages", json=message(applications=[APP, "nope"]))
    assert_error(response, "ERROR_GENERIC", contains="Application not found: nope")
    for path, params in (
        ("/inbox/messages/list", {"userId": "u", "applications": f"{APP},nope"}),
        ("/inbox/messages/count", {"userId": "u", "appId": "nope"}),
    ):
        assert_error(await client.get(path, params=params), "ERROR_GENERIC", contains="nope")
    response = await client.put("/inbox/messages/read-all", params={"userId": "u", "appId": "x"})
    assert_error(response, "ERROR_GENERIC", contains="Application not found")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"page": -1}, "Page must be between 0 and"),
        ({"page": 10**30}, "Page must be between 0 and"),
        ({"size": 0}, "Page size must be between 1 and 1000."),
        ({"size": 1001}, "Page size must be between 1 and 1000."),
        ({"size": -5}, "Page size must be between 1 and 1000."),
        ({"page": "first"}, "page must be"),
        ({"onlyUnread": "maybe"}, "onlyUnread must be a boolean."),
        ({"userId": ""}, "User ID must not be empty."),
        ({"userId": None}, "User ID must not be null."),
        ({"userId": "u" * 256}, "User ID is too long."),
        ({"userId": "a\x00"}, "NUL characters"),
    ],
)
async def test_bad_list_parameters_are_refused(
    client: httpx.AsyncClient, params: dict[str, Any], expected: str
) -> None:
    query = {"userId": "user-001", **params}
    response = await client.get(
        "/inbox/messages/list", params={k: v for k, v in query.items() if v is not None}
    )
    assert_error(response, "ERROR_REQUEST", contains=expected)


async def test_count_needs_user_and_application(client: httpx.AsyncClient) -> None:
    response = await client.get("/inbox/messages/count", params={"userId": "u"})
    assert_error(response, "ERROR_REQUEST", contains="App ID must not be null.")
    response = await client.get("/inbox/messages/count", params={"appId": APP})
    assert_error(response, "ERROR_REQUEST", contains="User ID must not be null.")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, "Message ID must not be null."),
        ({"messageId": "not-a-uuid"}, "Message ID must be a UUID."),
        ({"id": "12345"}, "Message ID must be a UUID."),
        ({"messageId": "a" * 65}, "messageId is too long."),
        ({"messageId": str(uuid.UUID(int=1)), "id": str(uuid.UUID(int=2))}, "once"),
    ],
)
async def test_bad_message_id_is_a_bad_request(
    client: httpx.AsyncClient, params: dict[str, str], expected: str
) -> None:
    response = await client.get("/inbox/messages/detail", params=params)
    assert_error(response, "ERROR_REQUEST", contains=expected)


async def test_unknown_message_is_not_found_in_every_form(client: httpx.AsyncClient) -> None:
    unknown = str(uuid.uuid4())
    for response in (
        await client.get("/inbox/messages/detail", params={"messageId": unknown}),
        await client.get("/inbox/messages/detail", params={"id": unknown}),
        await client.put("/inbox/messages/read", params={"userId": "u", "messageId": unknown}),
        await client.post("/inbox/messages/read", json=envelope(inboxId=unknown)),
    ):
        assert_error(response, "ERROR_MESSAGE_NOT_FOUND", contains=unknown)


async def test_read_forms_refuse_missing_fields(client: httpx.AsyncClient) -> None:
    response = await client.put("/inbox/messages/read", params={"messageId": str(uuid.uuid4())})
    assert_error(response, "ERROR_REQUEST", contains="User ID must not be null.")
    response = await client.post("/inbox/messages/read", json=envelope())
    assert_error(response, "ERROR_REQUEST", contains="Inbox ID must not be null.")
    response = await client.post("/inbox/messages/read", json=envelope(inboxId="zz"))
    assert_error(response, "ERROR_REQUEST", contains="Message ID must be a UUID.")
    response = await client.post("/inbox/messages/read-all", json=envelope(userId="u"))
    assert_error(response, "ERROR_REQUEST", contains="App ID must not be null.")
    response = await client.put("/inbox/messages/read-all", params={"appId": APP})
    assert_error(response, "ERROR_REQUEST", contains="User ID must not be null.")
