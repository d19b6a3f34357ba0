"""Hot routes: the few requests that carry the load, answered without FastAPI's routing layer.

FastAPI tries its routes in order, solves each route's dependencies and re-validates every
answer against its response model. Measured in-process on the development machine, that costs
FastAPI 0.165 about 200 µs per request before the handler runs (0.128 needed about half); a
relay push or an inbox read does far less work than that itself.

``HotRoutes`` is an ASGI layer in front of the FastAPI application and its middleware stack
(``clarion.app.ClarionApp`` calls it first). A request whose
method and path match a hot route goes to that route's handler, which takes the request only
in its regular form: it validates with the same pydantic models as the FastAPI route and calls
the same core function and the same renderer. Anything else (a body that does not validate, an
unusual content type, a repeated query parameter, a failed signature) makes the handler return
``None`` and the request falls through, with its body replayed, to the FastAPI route, which
answers it as always: every error body still comes from one place per dialect.
``tests/integration/test_hot_routes.py`` sends the same requests with and without this layer and
compares the answers. ``CLARION_HOT_ROUTES=false`` turns it off.

In front of the stack, this layer does for its own answers what the stack's middleware does:
it counts them in the HTTP metrics, and it takes only a body with a declared length within the
limit (anything else falls through to ``BodyLimit``). Its answers go to the server as they
are, not through every middleware's wrapper of ``send``: that had cost about a fifth of a relay
push's CPU (py-spy, 2026-12-01).

An answer leaves in one write to the socket. uvicorn writes the head of an answer when it gets
the ``http.response.start`` message and the body when it gets ``http.response.body``: two
``send`` system calls and two segments to the client, for answers of a few hundred bytes.
Under uvicorn (whose ``send`` is a method of the request's cycle, which holds the connection's
transport) the two messages are handed over while the cycle writes to a ``_HeldWrites``, and
what it wrote goes out in one write right after, before anything else can run on the event loop.
Synchronous sends at concurrency 32 for 12 s, one process, alternating runs on the 2-core
machine (2026-12-02): SQLite 2,968 / 2,991 / 3,222 requests/s against 2,847 / 2,712 / 2,347
before; PostgreSQL 2,676 / 2,182 against 2,187 / 1,949. Under another server, the messages go
as they are.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion import jsontext
from clarion.api import json_content_type
from clarion.api.limits import body_limit, content_length
from clarion.core.services import Services
from clarion.metrics import count_request


@dataclass(slots=True)
class HotRequest:
    """What a hot handler sees of its request."""

    scope: Scope
    services: Services
    params: dict[str, str]
    body: bytes = b""
    _query: dict[str, str] | None = field(default=None, repr=False)

    def header(self, name: bytes) -> str | None:
        """A header's value (``name`` in lower case), or None if absent."""
        for key, value in self.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return None

    def query(self) -> dict[str, str] | None:
        """The query parameters, or None when one is repeated (the full route decides then)."""
        if self._query is None:
            raw = self.scope.get("query_string", b"").decode("latin-1")
            pairs = parse_qsl(raw, keep_blank_values=True)
            found = dict(pairs)
            if len(found) != len(pairs):
                return None
            self._query = found
        return self._query

    def json(self) -> Any:
        """The JSON body, or None when it is not a JSON body as the full route reads one."""
        content_type = self.header(b"content-type")
        if not json_content_type(content_type):
            return None  # the full route reads only a JSON content type, and says so
        try:
            return jsontext.loads(self.body)
        except ValueError:
            return None


Handler = Callable[[HotRequest], Awaitable[Response | None]]


@dataclass(frozen=True, slots=True)
class HotRoute:
    """A (method, path template) answered by ``handler``; ``{name}`` segments are parameters."""

    method: str
    template: str
    handler: Handler
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.template.strip("/").split("/")))

    @property
    def path(self) -> str:
        """The template, which the metrics middleware labels requests by (as FastAPI's)."""
        return self.template

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for segment, part in zip(self.segments, parts, strict=True):
            if segment.startswith("{"):
                if not part:
                    return None
                params[segment[1:-1]] = part
            elif segment != part:
                return None
        return params


class HotRoutes:
    """The ASGI layer: hot routes first, everything else (and every fall-through) to
    ``app``. Routes are tried in order, so a literal template goes before a parameter one."""

    def __init__(
        self, app: ASGIApp, routes: Sequence[HotRoute], *, max_body_bytes: int | None = None
    ) -> None:
        self.app = app
        # None: the body's size is for a layer in front to check (as in the tests' stacks).
        self.max_body_bytes = max_body_bytes
        self._routes: dict[tuple[str, int], list[HotRoute]] = {}
        for route in routes:
            self._routes.setdefault((route.method, len(route.segments)), []).append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("root_path"):
            await self.app(scope, receive, send)  # behind a path prefix: FastAPI strips it
            return
        path: str = scope["path"]
        if not path.startswith("/") or path.startswith("//") or path.endswith("/"):
            # FastAPI redirects a trailing slash and finds nothing for an empty segment: so
            # must the answer be here.
            await self.app(scope, receive, send)
            return
        parts = path[1:].split("/")
        candidates = self._routes.get((scope["method"], len(parts)))
        if candidates:
            for route in candidates:
                params = route.match(parts)
                if params is not None:
                    await self._answer(route, params, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(
        self,
        route: HotRoute,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        started = time.perf_counter()
        with_body = route.method in ("POST", "PUT")
        if with_body and self.max_body_bytes is not None:
            declared = content_length(scope)
            if declared is None or declared > body_limit(scope["path"], self.max_body_bytes):
                await self.app(scope, receive, send)  # chunked, or too large: BodyLimit decides
                return
        body = await _read_body(receive) if with_body else None
        if body is None and with_body:
            await self.app(scope, receive, send)  # a disconnect: let the full stack see it
            return
        request = HotRequest(scope, scope["app"].state.services, params, body or b"")
        status = 500
        counted = True  # by this layer; what falls through is counted by the full stack
        try:
            response = await route.handler(request)
            if response is None:
                counted = False
                replayed = _replay(body, receive) if body is not None else receive
                await self.app(scope, replayed, send)
                return
            scope["route"] = route  # labelled by its template, the FastAPI route's
            status = response.status_code
            await send_in_one_write(send, status, response.raw_headers, response.body)
        finally:
            if counted:
                count_request(scope["method"], route.template, status, started)


async def send_in_one_write(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes | memoryview
) -> None:
    """A complete answer through ``send``: in one write to the socket under uvicorn."""
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not callable(getattr(transport, "write", None)):
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return
    held = _HeldWrites(transport)
    cycle.transport = held
    try:
        await send(start)
        await send({"type": "http.response.body", "body": body})
    finally:
        cycle.transport = transport
        held.release()


class _HeldWrites:
    """Stands in for a connection's transport while uvicorn writes one answer: keeps what it
    writes (and a close) for ``release``, which writes it all at once (and then closes)."""

    __slots__ = ("_close", "_parts", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._parts: list[bytes | memoryview] = []
        self._close = False

    def write(self, data: bytes | memoryview) -> None:
        self._parts.append(data)

    def close(self) -> None:
        self._close = True

    def is_closing(self) -> bool:
        return self._close or bool(self._transport.is_closing())

    def release(self) -> None:
        if self._parts:
            self._transport.write(b"".join(self._parts))
            self._parts.clear()
        if self._close:
            self._transport.close()


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the full stack the body this layer already read, then waits
    for the connection's next event as the original would."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
