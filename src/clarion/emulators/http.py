"""The loopback HTTP/1.1 server and the fault switches shared by the FCM and HMS emulators."""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import random
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, cast

import httptools

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# A minimal, fast HTTP/1.1 server (httptools parser) with full control of the connection, so a
# fault can delay an answer or drop the connection without answering.


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=UTF-8"


# A handler answers, or returns None to close the connection without an answer.
Handler = Callable[[HttpRequest], Awaitable[HttpAnswer | None]]


def json_answer(status: int, value: Any, headers: Mapping[str, str] | None = None) -> HttpAnswer:
    body = json.dumps(value, separators=(",", ":")).encode()
    return HttpAnswer(status, body, headers or {})


class _Connection(asyncio.Protocol):
    def __init__(self, server: LoopbackHttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._last: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not always an asyncio.Transport instance: uvloop's
        # (clarion emulate runs on it) subclasses its own base.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(HttpAnswer(400, b"bad request", content_type="text/plain"), False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = HttpRequest(
            method=self._parser.get_method().decode("ascii"),
            path=self._url.decode("latin-1"),
            headers=self._headers,
            body=b"".join(self._body),
        )
        keep_alive = self._parser.should_keep_alive()
        task = asyncio.get_running_loop().create_task(self._answer(request, self._last, keep_alive))
        self._server.tasks.add(task)
        task.add_done_callback(self._server.tasks.discard)
        self._last = task

    async def _answer(
        self, request: HttpRequest, previous: asyncio.Task[None] | None, keep_alive: bool
    ) -> None:
        if previous is not None:  # answers go out in request order
            with contextlib.suppress(BaseException):
                await previous
        try:
            answer = await self._server.handler(request)
        except Exception:
            log.exception("emulator handler failed")
            answer = HttpAnswer(500, b"emulator error", content_type="text/plain")
        if self._transport is None or self._transport.is_closing():
            return
        if answer is None:
            self._transport.abort()
            return
        self._write(answer, keep_alive)

    def _write(self, answer: HttpAnswer, keep_alive: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        phrase = http.HTTPStatus(answer.status).phrase
        lines = [
            f"HTTP/1.1 {answer.status} {phrase}",
            f"content-type: {answer.content_type}",
            f"content-length: {len(answer.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in answer.headers.items())
        if not keep_alive:
            lines.append("connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._transport.write(head + answer.body)
        if not keep_alive:
            self._transport.close()


class LoopbackHttpServer:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 (port 0: an ephemeral port) for one handler."""

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.abort()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None


# ---------------------------------------------------------------------------------------------
# Fault injection, shared by the FCM and HMS emulators.


@dataclass
class Faults:
    """Switches a test flips to make the send endpoint misbehave. Counters count down per send."""

    # token -> the error it gets. FCM: an errorCode of FCM_ERRORS (UNREGISTERED, ...);
    # HMS: "INVALID" (an illegal token, reported per token) or a result code for the request.
    token_errors: dict[str, str] = field(default_factory=dict)
    rate_limit_ratio: float = 0.0  # fraction of sends refused as over quota
    rate_limit_status: int | None = None  # None: the provider's own (FCM 429, HMS 503)
    retry_after: int | None = 1  # Retry-After seconds on those refusals; None: no header
    error_burst: int = 0  # the next N sends answer ``error_burst_status``
    error_burst_status: int = 503
    delay: float = 0.0  # seconds before every send answer
    drop_next: int = 0  # the next N sends lose their connection without an answer
    drop_ratio: float = 0.0
    token_endpoint_status: int | None = None  # the token endpoint answers this error status
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def next_fault(self) -> str | None:
        """Which fault (``drop``, ``burst``, ``rate``) the next send suffers, if any."""
        if self.drop_next > 0:
            self.drop_next -= 1
            return "drop"
        if self.drop_ratio and self._random.random() < self.drop_ratio:
            return "drop"
        if self.error_burst > 0:
            self.error_burst -= 1
            return "burst"
        if self.rate_limit_ratio and self._random.random() < self.rate_limit_ratio:
            return "rate"
        return None


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def parse_form(body: bytes) -> dict[str, str]:
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


BAD_GATEWAY_HTML = (
    b"<!DOCTYPE html><html><head><title>Error 502 (Server Error)!!1</title></head>"
    b"<body><p><b>502.</b> That\xe2\x80\x99s an error.</p></body></html>"
)


class LoopbackEmulator:
    """What the HTTP emulators share: their server, ``async with``, and the base URL."""

    _server: LoopbackHttpServer

    async def __aenter__(self) -> Self:
        await self._server.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._server.stop()

    @property
    def url(self) -> str:
        """The base URL to give the provider (``base_url=``)."""
        return self._server.url
