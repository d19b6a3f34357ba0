"""The default transport on loopback: plain HTTP/1.1 (as FCM/HMS emulators speak) and errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from clarion.providers.transport import TransportError, create_transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head, body = await _read_request(reader)
                seen.append(head + body)
                answer = b'{"name":"projects/p/messages/1"}'
                writer.write(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    b"X-Thing: yes\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, url = await _serve(handler)
    yield url, seen
    server.close()
    await server.wait_closed()


async def test_plain_http_speaks_http1_and_returns_status_headers_and_body(
    echo_server: tuple[str, list[bytes]],
) -> None:
    url, seen = echo_server
    transport = create_transport()
    try:
        response = await transport.post(
            url + "/v1/projects/p/messages:send",
            {"authorization": "Bearer abc", "content-type": "application/json"},
            b'{"message":{}}',
        )
        again = await transport.post(url + "/v1/x", {}, b"{}")
    finally:
        await transport.close()
    assert response.status == 201
    assert response.headers["x-thing"] == "yes"
    assert response.headers["X-Thing"] == "yes"  # the map is case-insensitive
    assert response.body == b'{"name":"projects/p/messages/1"}'
    assert again.status == 201
    assert seen[0].startswith(b"POST /v1/projects/p/messages:send HTTP/1.1\r\n")
    assert seen[0].endswith(b'\r\n\r\n{"message":{}}')


async def test_refused_connection_is_a_transport_error_not_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = create_transport(timeout=2)
    try:
        with pytest.raises(TransportError) as caught:
            await transport.post(f"http://127.0.0.1:{port}/3/device/abcdef", {}, b"{}")
    finally:
        await transport.close()
    assert caught.value.sent is False
    assert "abcdef" not in str(caught.value)  # a path may hold a device token


async def test_connection_closed_before_an_answer_is_a_transport_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    server, url = await _serve(hang_up)
    transport = create_transport(timeout=2)
    try:
        with pytest.raises(TransportError) as caught:
            await transport.post(url + "/3/device/abcdef", {}, b"{}")
    finally:
        await transport.close()
        server.close()
    assert "abcdef" not in str(caught.value)


async def test_slow_answer_is_a_timeout_transport_error() -> None:
    async def dawdle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(0.4)
        writer.close()

    server, url = await _serve(dawdle)
    transport = create_transport(timeout=5)
    try:
        with pytest.raises(TransportError) as caught:
            await transport.post(url + "/x", {}, b"{}", timeout=0.1)
    finally:
        await transport.close()
        server.close()
        await asyncio.sleep(0.4)  # let the handler finish before the loop closes
    assert caught.value.sent is True
    assert "Timeout" in str(caught.value)
