"""The hot routes answer exactly as the FastAPI routes do, and hand them what they do not take.

Every case is sent to two applications on the same services, one with the hot routes and one
without (``hot_routes=False``: every request through FastAPI), and the answers compared. A
second set of tests drives ``HotRoutes`` around a recording application to show which requests
the hot handlers answer themselves and that a fall-through gets its body intact.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY
from starlette.responses import PlainTextResponse

from clarion.api.hot import HotRoute, HotRoutes
from clarion.app import HOT_ROUTES, create_app
from clarion.core.services import Services
from tests.conftest import app_for
from tests.wc_support import ed25519_hex, register_body, relay_headers

_ids = itertools.count()
RELAY = Ed25519PrivateKey.generate()


def fresh(body: dict[str, Any]) -> dict[str, Any]:
    """The body with a message id never sent before (``{n}`` in it is replaced)."""
    text = json.dumps(body).replace("{n}", str(next(_ids)))
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@pytest.fixture
async def both(services: Services) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(hot, full): two applications on one set of services."""
    hot_settings = services.settings.model_copy(update={"hot_routes": True})
    full_settings = services.settings.model_copy(update={"hot_routes": False})
    hot_app = app_for(services, hot_settings)
    full_app = app_for(services, full_settings)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=hot_app), base_url="http://t") as hot,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=full_app), base_url="http://t") as full,
    ):
        response = await full.post("/clients", json=register_body("wallet", "tok-1"))
        assert response.status_code == 200
        yield hot, full


def answer(response: httpx.Response) -> tuple[int, str, str | None, str | None]:
    return (
        response.status_code,
        response.text,
        response.headers.get("content-type"),
        response.headers.get("retry-after"),
    )


async def post(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    """POST bytes as they are, or a JSON value with ``{n}`` made fresh."""
    if isinstance(body, bytes):
        headers = {"content-type": "application/json"}
        return await client.post(path, content=body, headers=headers)
    return await client.post(path, json=fresh(body) if body is not None else None)


CLEAR = base64.b64encode(json.dumps({"title": "T", "body": "B"}).encode()).decode()

# (path, body) where body is a JSON value, or bytes sent as they are.
PUSH_CASES: list[tuple[str, Any]] = [
    ("/clients/wallet", {"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "YWJj"}}),
    (
        "/clients/did:key:wallet",
        {"id": "m{n}", "payload": {"topic": "t", "flags": 0, "blob": CLEAR}},
    ),
    ("/clients/wallet", {"id": "m{n}", "payload": {"topic": "t", "flags": 0, "blob": "!!"}}),
    ("/clients/wallet", {"id": "m{n}", "payload": {"topic": "t", "tag": 4002, "message": "x"}}),
    ("/clients/wallet", {"topic": "t{n}", "tag": 4002, "message": "raw"}),
    ("/clients/nobody", {"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "YWJj"}}),
    (
        "/0000-0000-0000-0000/clients/wallet",
        {"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "eA"}},
    ),
    (
        "/no-such-tenant/clients/wallet",
        {"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "eA"}},
    ),
    ("/x/clients/wallet", {"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "eA"}}),
    ("/tenants/clients/apns", {"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "eA"}}),
    ("/clients/wallet", {"id": "m{n}", "payload": {"topic": "t", "flags": "1", "blob": "eA"}}),
    ("/clients/wallet", {"id": "m{n}", "payload": {"topic": "t", "flags": -1, "blob": "eA"}}),
    ("/clients/wallet", {"id": "", "payload": {"topic": "t", "flags": 1, "blob": "eA"}}),
    ("/clients/wallet", {"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "x" * 5000}}),
    ("/clients/wallet", {"id": "m\u0000{n}", "payload": {"topic": "t", "flags": 1, "blob": "eA"}}),
    ("/clients/wallet", {"payload": {"topic": "t", "flags": 1, "blob": "eA"}}),
    ("/clients/wallet", [1, 2]),
    ("/clients/wallet", None),
    ("/clients/wallet", b"{not json"),
    ("/clients/wallet", b""),
    ("/clients/" + "w" * 300, {"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "eA"}}),
]


@pytest.mark.parametrize(("path", "body"), PUSH_CASES)
async def test_pushes_answer_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], path: str, body: Any
) -> None:
    hot, full = both
    answers = []
    for client in (hot, full):
        answers.append(answer(await post(client, path, body)))
    assert answers[0] == answers[1]
    assert answers[0][0] < 500


async def test_a_message_id_is_one_message_across_both_paths(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], services: Services
) -> None:
    hot, full = both
    body = {"id": "shared", "payload": {"topic": "t", "flags": 1, "blob": "YWJj"}}
    assert (await hot.post("/clients/wallet", json=body)).status_code == 200
    assert (await full.post("/clients/wallet", json=body)).status_code == 200
    from tests.wc_support import noop_provider

    sent = [n for n, _ in noop_provider(services).received if n.blob == "YWJj"]
    assert len(sent) == 1


async def test_health_and_metrics_label(both: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    hot, full = both
    assert answer(await hot.get("/health")) == answer(await full.get("/health"))
    labels = {"method": "POST", "route": "/clients/{id}", "status": "200"}
    before = REGISTRY.get_sample_value("clarion_http_requests_total", labels) or 0.0
    push = fresh({"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "eA"}})
    assert (await hot.post("/clients/wallet", json=push)).status_code == 200
    # The hot answer is counted under the FastAPI route's template, never the raw path.
    assert REGISTRY.get_sample_value("clarion_http_requests_total", labels) == before + 1
    raw = {"method": "POST", "route": "/clients/wallet", "status": "200"}
    assert REGISTRY.get_sample_value("clarion_http_requests_total", raw) is None


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    if "signed" in request.node.name:
        return {"wc_validate_signatures": True, "wc_relay_public_key": ed25519_hex(RELAY)}
    return {}


@pytest.mark.parametrize("variant", ["good", "bad", "stale", "missing"])
async def test_signed_pushes_answer_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], variant: str
) -> None:
    hot, full = both
    answers = []
    for client in (hot, full):
        body = json.dumps(
            fresh({"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "eA"}})
        )
        raw = body.encode()
        if variant == "good":
            headers = relay_headers(RELAY, raw)
        elif variant == "bad":
            headers = relay_headers(Ed25519PrivateKey.generate(), raw)
        elif variant == "stale":
            headers = relay_headers(RELAY, raw, at=1_000_000)
        else:
            headers = {"content-type": "application/json"}
        answers.append(answer(await client.post("/clients/wallet", content=raw, headers=headers)))
    assert answers[0] == answers[1]
    assert answers[0][0] == (200 if variant == "good" else 401)


# --- the middleware alone -----------------------------------------------------------------


class Recording:
    """An ASGI application that records what reached it and echoes the body it received."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        message = await receive()
        await PlainTextResponse("full:" + message.get("body", b"").decode())(scope, receive, send)


async def echo_json(request: Any) -> Any:
    data = request.json()
    if not isinstance(data, dict):
        return None
    return PlainTextResponse(f"hot:{request.params.get('id')}:{sorted(data)}")


async def test_regular_requests_never_reach_the_full_stack() -> None:
    inner = Recording()
    layer = HotRoutes(inner, [HotRoute("POST", "/things/{id}", echo_json)])
    layer_app: Any = layer

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = type("A", (), {"state": type("S", (), {"services": None})()})()
        await layer_app(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        hot = await c.post("/things/7", json={"b": 1, "a": 2})
        fell = await c.post(
            "/things/7", content=b"[1]", headers={"content-type": "application/json"}
        )
        other = await c.post("/things/7/more", content=b"x")
        wrong_type = await c.post(
            "/things/7", content=b"{}", headers={"content-type": "text/plain"}
        )
    assert hot.text == "hot:7:['a', 'b']"
    assert fell.text == "full:[1]"  # the body this layer read is replayed to the full stack
    assert other.text == "full:x"
    assert wrong_type.text == "full:{}"
    assert inner.paths == ["/things/7", "/things/7/more", "/things/7"]


async def test_only_a_declared_body_within_the_paths_limit_is_taken_hot() -> None:
    inner = Recording()
    routes = [
        HotRoute("POST", "/things/{id}", echo_json),
        HotRoute("POST", "/clients/{id}", echo_json),  # a WalletConnect path: 1 MiB at most
    ]
    layer: Any = HotRoutes(inner, routes, max_body_bytes=2_000_000)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = type("A", (), {"state": type("S", (), {"services": None})()})()
        await layer(scope, receive, send)

    big = b'{"a": "' + b"x" * 1_500_000 + b'"}'

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"a": 1}'

    json_type = {"content-type": "application/json"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        under_its_limit = await c.post("/things/7", content=big, headers=json_type)
        over_the_dialects = await c.post("/clients/7", content=big, headers=json_type)
        without_length = await c.post("/things/8", content=chunked(), headers=json_type)
    assert under_its_limit.text == "hot:7:['a']"
    assert over_the_dialects.text.startswith("full:")  # for BodyLimit to refuse
    assert without_length.text == "full:" + '{"a": 1}'  # chunked: BodyLimit counts it
    assert inner.paths == ["/clients/7", "/things/8"]


def test_every_hot_route_has_a_fastapi_route_of_the_same_template(services: Services) -> None:
    paths = create_app(services.settings, services=services).openapi()["paths"]
    for route in HOT_ROUTES:
        assert route.method.lower() in paths.get(route.template, {}), route.template


# --- PowerAuth sends ------------------------------------------------------------------------


def _message(**changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"userId": "alice", "body": {"title": "Hi", "body": "There"}}
    message.update(changes)
    return message


SEND_CASES: list[tuple[str, Any]] = [
    ("/push/message/send", {"requestObject": {"appId": "mobile-app", "message": _message()}}),
    (
        "/push/message/send",
        {"requestObject": {"appId": "mobile-app", "mode": "ASYNCHRONOUS", "message": _message()}},
    ),
    (
        "/push/message/send",
        {"requestObject": {"appId": "mobile-app", "message": _message(userId="bob")}},
    ),
    ("/push/message/send", {"requestObject": {"appId": "no-such-app", "message": _message()}}),
    (
        "/push/message/send",
        {"requestObject": {"appId": "mobile-app", "message": _message(userId="")}},
    ),
    (
        "/push/message/send",
        {"requestObject": {"appId": "mobile-app", "mode": "SOMETIMES", "message": _message()}},
    ),
    (
        "/push/message/send",
        {"requestObject": {"appId": "mobile-app", "message": _message(body=None)}},
    ),
    ("/push/message/send", {"requestObject": {"appId": "mobile\u0000app", "message": _message()}}),
    (
        "/push/message/send",
        {"requestObject": {"appId": "mobile-app", "message": _message(body={"title": 5})}},
    ),
    ("/push/message/send", {"requestObject": None}),
    ("/push/message/send", {"appId": "mobile-app"}),
    ("/push/message/send", b"[]"),
    ("/push/message/send", b"{"),
    (
        "/push/message/batch/send",
        {"requestObject": {"appId": "mobile-app", "batch": [_message(), _message(userId="bob")]}},
    ),
    ("/push/message/batch/send", {"requestObject": {"appId": "mobile-app", "batch": []}}),
    ("/push/message/batch/send", {"requestObject": {"appId": "mobile-app", "batch": "x"}}),
    ("/push/message/batch/send", {"requestObject": {"appId": "nope", "batch": [_message()]}}),
]


@pytest.mark.parametrize(("path", "body"), SEND_CASES)
async def test_sends_answer_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], path: str, body: Any
) -> None:
    hot, full = both
    await full.post("/admin/app/create", json={"requestObject": {"appId": "mobile-app"}})
    device = {
        "appId": "mobile-app",
        "token": "a1" * 32,
        "platform": "ios",
        "activationId": "act-1",
        "userId": "alice",
        "activationStatus": "ACTIVE",
    }
    created = await full.post("/push/device/create", json={"requestObject": device})
    assert created.status_code == 200
    answers = []
    for client in (hot, full):
        answers.append(answer(await post(client, path, body)))
    assert answers[0] == answers[1]
    assert answers[0][0] < 500


def _device(**changes: Any) -> dict[str, Any]:
    device: dict[str, Any] = {
        "appId": "mobile-app",
        "token": "c3" * 32,
        "platform": "ios",
        "activationId": "act-{n}",
        "userId": "carol",
        "activationStatus": "ACTIVE",
    }
    device.update(changes)
    return {"requestObject": device}


DEVICE_CASES: list[Any] = [
    _device(),
    _device(platform="android", token="fcm-{n}"),
    _device(platform="huawei", token="hms-{n}", environment="production"),
    _device(platform="IOS", environment="development"),
    _device(userId=None),
    _device(appId="no-such-app"),
    _device(platform="windows"),
    _device(token=""),
    _device(token=None),
    _device(activationId=None),
    _device(activationStatus="SLEEPING"),
    _device(environment="moon"),
    _device(token="x" * 5000),
    _device(token="a\u0000b"),
    {"requestObject": "x"},
    {"requestObject": {}},
    b"null",
]


@pytest.mark.parametrize("body", DEVICE_CASES)
async def test_device_registrations_answer_as_the_full_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], body: Any
) -> None:
    hot, full = both
    await full.post("/admin/app/create", json={"requestObject": {"appId": "mobile-app"}})
    answers = []
    for client in (hot, full):
        answers.append(answer(await post(client, "/push/device/create", body)))
    assert answers[0] == answers[1]
    assert answers[0][0] < 500


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",  # what curl -d sends
        "application/json; charset=utf-8",
        "application/vnd.example+json",
    ],
)
async def test_a_push_is_read_by_its_content_type_on_both_paths(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], content_type: str | None
) -> None:
    """The hot route took a body without a content type that the full route refused."""
    answers = []
    for client in both:
        body = json.dumps(
            fresh({"id": "m{n}", "payload": {"topic": "t", "flags": 1, "blob": "eA"}})
        )
        headers = {"content-type": content_type} if content_type else {}
        request = client.build_request("POST", "/clients/wallet", content=body, headers=headers)
        assert request.headers.get("content-type") == content_type
        answers.append(answer(await client.send(request)))
    assert answers[0] == answers[1]
    if content_type is None or not content_type.endswith(("json", "charset=utf-8")):
        status, text, *_ = answers[0]
        assert status == 400
        assert json.loads(text)["fields"] == [
            {
                "field": "body",
                "description": "The request body must be JSON, sent with "
                "Content-Type: application/json.",
                "location": "body",
            }
        ]
    else:
        assert answers[0][0] == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json"])
@pytest.mark.parametrize("path", ["/push/message/send", "/push/device/create"])
async def test_powerauth_reads_a_body_by_its_content_type_on_both_paths(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], path: str, content_type: str | None
) -> None:
    """The hot routes took a valid body without a content type that the full routes refused."""
    full = both[1]
    await full.post("/admin/app/create", json={"requestObject": {"appId": "mobile-app"}})
    assert (await full.post("/push/device/create", json=_device(activationId="act-1"))).is_success
    message = {"requestObject": {"appId": "mobile-app", "message": _message()}}
    body = _device() if path == "/push/device/create" else message
    answers = []
    for client in both:
        headers = {"content-type": content_type} if content_type else {}
        request = client.build_request("POST", path, content=json.dumps(body), headers=headers)
        assert request.headers.get("content-type") == content_type
        answers.append(answer(await client.send(request)))
    assert answers[0] == answers[1]
    status, text, *_ = answers[0]
    if content_type is None or content_type == "text/plain":
        assert status == 400
        assert "Content-Type: application/json" in json.loads(text)["responseObject"]["message"]
    else:
        assert status == 200, text
