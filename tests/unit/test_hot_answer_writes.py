"""A hot route's answer reaches uvicorn's connection in one write, through uvicorn's own
request cycles (httptools and h11), and as two ASGI messages under any other server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import pytest
from uvicorn.protocols.http import h11_impl, httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl

from clarion.api.hot import send_in_one_write

HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11")]
BODY = b'{"ok":true}'
LOG = logging.getLogger("test")


class Transport:
    """What uvicorn's cycle is given: records each write and the close, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def write(self, data: bytes) -> None:
        self.events.append(("write", bytes(data)))

    def close(self) -> None:
        self.events.append(("close", b""))

    def is_closing(self) -> bool:
        return any(kind == "close" for kind, _ in self.events)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/push/message/send",
        "query_string": b"",
        "http_version": "1.1",
        "headers": [],
        "client": ("127.0.0.1", 5000),
    }


def _httptools_cycle(transport: Transport, keep_alive: bool, done: list[str]) -> Any:
    return httptools_impl.RequestResponseCycle(
        scope=_scope(),  # type: ignore[arg-type]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=LOG,
        access_logger=LOG,
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: done.append("response"),
    )


def _h11_cycle(transport: Transport, keep_alive: bool, done: list[str]) -> Any:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST /push/message/send HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    conn.next_event()  # the request
    conn.next_event()  # its end
    cycle = h11_impl.RequestResponseCycle(
        scope=_scope(),  # type: ignore[arg-type]
        conn=conn,
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=LOG,
        access_logger=LOG,
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        on_response=lambda: done.append("response"),
    )
    cycle.keep_alive = keep_alive
    return cycle


@pytest.mark.parametrize("make", [_httptools_cycle, _h11_cycle], ids=["httptools", "h11"])
@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "close"])
async def test_uvicorn_writes_the_answer_once(make: Any, keep_alive: bool) -> None:
    transport = Transport()
    done: list[str] = []
    cycle = make(transport, keep_alive, done)
    await send_in_one_write(cycle.send, 200, HEADERS, BODY)
    writes = [data for kind, data in transport.events if kind == "write"]
    assert len(writes) == 1, transport.events
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-type: application/json" in head.lower()
    assert body == BODY
    # A connection that is not kept alive is closed after the answer is written, not before.
    assert [kind for kind, _ in transport.events] == ["write"] + ([] if keep_alive else ["close"])
    assert cycle.transport is transport  # the cycle has its connection back
    assert done == ["response"]


async def test_two_messages_under_another_server() -> None:
    received: list[dict[str, Any]] = []

    async def send(message: Any) -> None:  # a plain function: no cycle, no transport
        received.append(message)

    await send_in_one_write(send, 201, HEADERS, BODY)
    assert received == [
        {"type": "http.response.start", "status": 201, "headers": HEADERS},
        {"type": "http.response.body", "body": BODY},
    ]


async def test_the_cycle_gets_its_connection_back_when_the_server_refuses_a_message() -> None:
    transport = Transport()
    cycle = _httptools_cycle(transport, True, [])
    cycle.response_started = True  # as if an answer had begun: uvicorn refuses a second start
    with pytest.raises(RuntimeError):
        await send_in_one_write(cycle.send, 200, HEADERS, BODY)
    assert cycle.transport is transport
