"""The PowerAuth hot routes (inbox reads, the query form of "mark read", the service status)
answer exactly as the FastAPI routes do, and hand them every request they do not take.

As in ``test_hot_routes.py``: every query string is sent to two applications on the same
services, one with the hot routes and one without, and the answers (status, body bytes,
content type) compared; none may be a 5xx. Then ``HotRoutes`` around a recording application
shows that the regular requests are answered by the hot handlers themselves, and a PostgreSQL
test shows the inbox's pool survives its connections being killed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.responses import PlainTextResponse

from clarion.api.hot import HotRoutes
from clarion.api.powerauth.hot import ROUTES
from clarion.core.services import Services
from tests.conftest import app_for
from tests.support import envelope

APPS = ("mobile-app", "web-app")
MINE = "user-001"
OTHER = "user-002"
# Texts that JSON encoders are known to write differently if they differ at all.
TRICKY = 'quote " backslash \\ tab \t newline \n ctrl \x01 \x1f del \x7f \u2028 é ü 日本 😀 </b>'


@pytest.fixture
async def both(services: Services) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(hot, full): two applications on one set of services, with a few messages stored."""
    hot_app = app_for(services, services.settings.model_copy(update={"hot_routes": True}))
    full_app = app_for(services, services.settings.model_copy(update={"hot_routes": False}))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=hot_app), base_url="http://t") as hot,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=full_app), base_url="http://t") as full,
    ):
        for app_id in APPS:
            response = await full.post("/admin/app/create", json=envelope(appId=app_id))
            assert response.status_code == 200
        yield hot, full


async def post(client: httpx.AsyncClient, user_id: str, apps: list[str], **fields: str) -> str:
    body = {
        "userId": user_id,
        "type": "text",
        "subject": "Subject",
        "summary": "Summary",
        "body": "Body",
        "applications": apps,
        **fields,
    }
    response = await client.post("/inbox/messages", json=envelope(**body))
    assert response.status_code == 200, response.text
    message_id: str = response.json()["responseObject"]["id"]
    return message_id


@pytest.fixture
async def messages(both: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> dict[str, str]:
    """Placeholders of the query strings: message ids of MINE and OTHER, and an unknown one."""
    _, full = both
    mine = await post(full, MINE, ["mobile-app"], subject=TRICKY, body=TRICKY, summary=TRICKY)
    both_apps = await post(full, MINE, list(APPS), type="html", body="<p>hi</p>")
    for n in range(5):
        await post(full, MINE, ["web-app"], subject=f"s{n}")
    other = await post(full, OTHER, ["mobile-app"])
    read = await post(full, MINE, ["mobile-app"])
    response = await full.put("/inbox/messages/read", params={"userId": MINE, "messageId": read})
    assert response.status_code == 200
    return {
        "mine": mine,
        "both": both_apps,
        "other": other,
        "unknown": str(uuid.uuid4()),
        "long": "u" * 256,
        "max": "u" * 255,
    }


def answer(response: httpx.Response) -> tuple[int, str, str | None]:
    return response.status_code, response.text, response.headers.get("content-type")


async def compare(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
    method: str,
    path: str,
    queries: list[str],
    placeholders: dict[str, str],
) -> None:
    """Each query to both applications (hot first); every differing answer is reported."""
    hot, full = both
    differing = []
    for template in queries:
        query = template.format(**placeholders)
        url = f"{path}?{query}" if query else path
        answers = [answer(await client.request(method, url)) for client in (hot, full)]
        if answers[0] != answers[1] or answers[0][0] >= 500:
            differing.append((template, answers))
    assert differing == []


LIST_QUERIES = [
    "userId=user-001",
    "userId=user-001&page=0&size=20",
    "userId=user-001&page=1&size=2",
    "userId=user-001&page=007&size=0002",
    "userId=user-001&page=99&size=20",
    "userId=user-002",
    "userId=nobody",
    "userId=user-001&onlyUnread=true",
    "userId=user-001&onlyUnread=false",
    "userId=user-001&applications=mobile-app",
    "userId=user-001&applications=web-app,mobile-app&onlyUnread=true&size=3",
    "userId=user-001&applications=%20mobile-app%20,%20,,web-app",
    "userId=user-001&applications=",
    "userId=user-001&applications=,,%20",
    "userId=user-001&applications=mobile-app,nope",
    "userId=user-001&applications=mobile-app,mobile-app",
    "userId=user-001&applications=a%00b",
    "userId=user-001&applications=" + ",".join(f"app-{n}" for n in range(101)),
    "userId=user-001&applications=" + "a" * 25_601,
    "userId=user-001&unknown=1",
    "userId=%20",
    "userId=%20%20%09",
    "userId={max}",
    "userId={long}",
    "userId=",
    "userId",
    "",
    "page=0",
    "userId=a%00b",
    "userId=%ED%A0%80",
    "userId=%FF",
    "userId=user-001&page=-1",
    "userId=user-001&page=1000001",
    "userId=user-001&page=1000000&size=1000",
    "userId=user-001&page=" + "9" * 19,
    "userId=user-001&page=" + "9" * 40,
    "userId=user-001&page=abc",
    "userId=user-001&page=",
    "userId=user-001&page=1.0",
    "userId=user-001&page=+1",
    "userId=user-001&page=%201",
    "userId=user-001&page=1_0",
    "userId=user-001&page=%D9%A3",
    "userId=user-001&size=0",
    "userId=user-001&size=-5",
    "userId=user-001&size=1000",
    "userId=user-001&size=1001",
    "userId=user-001&size=99999999999",
    "userId=user-001&onlyUnread=yes",
    "userId=user-001&onlyUnread=1",
    "userId=user-001&onlyUnread=TRUE",
    "userId=user-001&onlyUnread=True",
    "userId=user-001&onlyUnread=",
    "userId=user-001&onlyUnread=maybe",
    "userId=user-001&userId=user-002",
    "userId=user-001&page=0&page=1",
    "userId=user-001&x=1&x=2",
]


async def test_list_answers_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], messages: dict[str, str]
) -> None:
    await compare(both, "GET", "/inbox/messages/list", LIST_QUERIES, messages)


COUNT_QUERIES = [
    "userId=user-001&appId=mobile-app",
    "userId=user-001&appId=web-app",
    "userId=user-002&appId=mobile-app",
    "userId=nobody&appId=mobile-app",
    "userId=user-001&appId=nope",
    "userId=user-001&appId=%20mobile-app",
    "userId=user-001",
    "appId=mobile-app",
    "",
    "userId=&appId=mobile-app",
    "userId=%20&appId=mobile-app",
    "userId=user-001&appId=%20",
    "userId=user-001&appId=",
    "userId={long}&appId=mobile-app",
    "userId={max}&appId=mobile-app",
    "userId=user-001&appId=" + "a" * 256,
    "userId=user-001&appId=" + "a" * 255,
    "userId=a%00&appId=mobile-app",
    "userId=user-001&appId=mobile%00app",
    "userId=user-001&appId=mobile-app&appId=web-app",
    "userId=user-001&userId=user-001&appId=mobile-app",
]


async def test_odd_paths_are_answered_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], messages: dict[str, str]
) -> None:
    """A trailing slash (FastAPI redirects it) or an empty segment (FastAPI finds nothing) is
    not a hot route's path."""
    for path in ("/inbox/messages/list/", "//inbox/messages/list", "/inbox//messages/list"):
        await compare(both, "GET", path, ["userId=user-001"], messages)


async def test_a_blank_user_id_is_refused_in_the_query_forms(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], messages: dict[str, str]
) -> None:
    for client in both:
        for path, query in (
            ("/inbox/messages/list", {"userId": " "}),
            ("/inbox/messages/count", {"userId": " ", "appId": "mobile-app"}),
        ):
            response = await client.get(path, params=query)
            assert response.status_code == 400, response.text
            assert response.json()["responseObject"] == {
                "code": "ERROR_REQUEST",
                "message": "User ID must not be empty.",
            }


async def test_count_answers_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], messages: dict[str, str]
) -> None:
    await compare(both, "GET", "/inbox/messages/count", COUNT_QUERIES, messages)


DETAIL_QUERIES = [
    "messageId={mine}",
    "messageId={both}",
    "id={mine}",
    "messageId={mine}&id={mine}",
    "messageId={mine}&id={both}",
    "messageId={mine}&userId=user-001",
    "messageId={mine}&userId=user-002",
    "messageId={other}&userId=user-001",
    "messageId={other}",
    "messageId={unknown}",
    "messageId={unknown}&userId=user-001",
    "id={unknown}",
    "messageId=%20{mine}%20",
    "messageId={mine}&userId=",
    "messageId={mine}&userId={long}",
    "messageId={mine}&userId=a%00",
    "messageId=",
    "messageId=%20",
    "id=",
    "",
    "userId=user-001",
    "messageId=not-a-uuid",
    "id=12345",
    "messageId=" + "a" * 65,
    "messageId=" + "a" * 64,
    "id=" + "a" * 65,
    "messageId=a%00b",
    "messageId={mine}&messageId={mine}",
    "messageId={MINE_UPPER}",
]


async def test_detail_answers_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], messages: dict[str, str]
) -> None:
    placeholders = {**messages, "MINE_UPPER": messages["mine"].upper()}
    await compare(both, "GET", "/inbox/messages/detail", DETAIL_QUERIES, placeholders)


READ_QUERIES = [
    "userId=user-001&messageId={mine}",
    "userId=user-001&messageId={mine}",  # read again: a no-op, same answer
    "userId=user-001&messageId={both}",
    "userId=user-002&messageId={mine}",
    "userId=user-001&messageId={other}",
    "userId=user-001&messageId={unknown}",
    "userId=user-001&messageId=not-a-uuid",
    "userId=user-001&messageId=",
    "userId=user-001",
    "messageId={mine}",
    "",
    "userId=&messageId={mine}",
    "userId={long}&messageId={mine}",
    "userId=a%00&messageId={mine}",
    "userId=user-001&messageId=" + "a" * 65,
    "userId=user-001&messageId=a%00",
    "userId=user-001&messageId={mine}&messageId={mine}",
    "userId=user-001&userId=user-002&messageId={mine}",
]


async def test_read_answers_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], messages: dict[str, str]
) -> None:
    await compare(both, "PUT", "/inbox/messages/read", READ_QUERIES, messages)


async def test_read_with_a_body_answers_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], messages: dict[str, str]
) -> None:
    """The query form ignores any body, JSON or not, in both paths."""
    hot, full = both
    url = f"/inbox/messages/read?userId={MINE}&messageId={messages['both']}"
    for content in (b"", b"{not json", b'{"requestObject": {"inboxId": "x"}}'):
        answers = [
            answer(await c.put(url, content=content, headers={"content-type": "text/plain"}))
            for c in (hot, full)
        ]
        assert answers[0] == answers[1]
        assert answers[0][0] == 200


async def test_status_answers_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    hot, full = both
    answers = []
    for client in (hot, full):
        response = await client.get("/push/service/status?x=1&x=2")
        body = response.json()
        assert body["responseObject"].pop("timestamp")  # the one field that differs by time
        answers.append((response.status_code, response.headers["content-type"], body))
        text = response.text
        assert text.startswith('{"status":"OK","responseObject":{"applicationName":"clarion",')
    assert answers[0] == answers[1]


# --- which requests the hot handlers answer themselves -------------------------------------


class FullStack:
    """Stands in for FastAPI: records what reached it and answers 418."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached.append(f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}")
        await PlainTextResponse("full", status_code=418)(scope, receive, send)


async def test_regular_requests_are_answered_by_the_hot_handlers(
    services: Services, both: tuple[httpx.AsyncClient, httpx.AsyncClient], messages: dict[str, str]
) -> None:
    full_stack = FullStack()
    layer: Any = HotRoutes(full_stack, ROUTES)
    state = type("State", (), {"services": services})()
    application = type("App", (), {"state": state})()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = application
        await layer(scope, receive, send)

    mine = messages["mine"]
    regular = [
        ("GET", f"/inbox/messages/list?userId={MINE}&page=0&size=20"),
        ("GET", f"/inbox/messages/list?userId={MINE}&applications=web-app&onlyUnread=true"),
        ("GET", f"/inbox/messages/list?userId={MINE}&size=0"),  # a business error: still hot
        ("GET", f"/inbox/messages/count?userId={MINE}&appId=mobile-app"),
        ("GET", f"/inbox/messages/count?userId={MINE}&appId=nope"),
        ("GET", f"/inbox/messages/detail?messageId={mine}"),
        ("GET", f"/inbox/messages/detail?messageId={uuid.uuid4()}"),
        ("PUT", f"/inbox/messages/read?userId={MINE}&messageId={mine}"),
        ("GET", "/push/service/status"),
    ]
    irregular = [
        ("GET", f"/inbox/messages/list?userId={MINE}&onlyUnread=yes"),
        ("GET", f"/inbox/messages/list?userId={MINE}&page=-1"),
        ("GET", f"/inbox/messages/count?userId={MINE}"),
        ("GET", f"/inbox/messages/detail?messageId={mine}&messageId={mine}"),
        ("PUT", f"/inbox/messages/read?userId=&messageId={mine}"),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for method, url in regular:
            response = await c.request(method, url)
            assert response.status_code in (200, 400), (url, response.text)
        assert full_stack.reached == []
        for method, url in irregular:
            assert (await c.request(method, url)).status_code == 418
    assert len(full_stack.reached) == len(irregular)


# --- the pool's disconnect handling (PostgreSQL) -------------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_inbox_survives_killed_connections(
    services: Services, both: tuple[httpx.AsyncClient, httpx.AsyncClient], messages: dict[str, str]
) -> None:
    """The inbox's reads and mark-reads run on the reader's asyncpg pool: connections killed
    while idle there are replaced, or the statement runs once more on a fresh one."""
    assert services.db.dialect == "postgresql"
    import asyncpg
    from sqlalchemy import func, select

    dsn = services.db.engine.url.set(drivername="postgresql")
    pid_query = select(func.pg_backend_pid().label("pid"), func.pg_sleep(0.05))

    async def kill_pooled() -> None:
        held = await asyncio.gather(*(services.db.read(pid_query) for _ in range(4)))
        killer = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid",
                list({rows[0].pid for rows in held}),
            )
        finally:
            await killer.close()

    await kill_pooled()  # used at once
    assert await services.inbox.count_unread(MINE, "mobile-app") == 2
    assert len(await services.inbox.messages(MINE, None, only_unread=False, page=0, size=5)) == 5
    await kill_pooled()
    await asyncio.sleep(0.1)  # after a moment
    unread = await services.inbox.messages(MINE, None, only_unread=True, page=0, size=5)
    await kill_pooled()
    marked = await services.inbox.read(unread[0].id, MINE)
    assert marked.read and marked.read_at is not None
    assert await services.inbox.read_all(MINE, "mobile-app") >= 0
    assert await services.inbox.count_unread(MINE, "mobile-app") == 0
