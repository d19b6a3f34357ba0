"""A small fake PowerAuth Server on loopback: POST /rest/v3/activation/status."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class FakePowerAuth:
    activations: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (status, user)
    username: str | None = None
    password: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        async def status(request: Request) -> JSONResponse:
            if self.username is not None:
                expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
                if request.headers.get("authorization") != f"Basic {expected}":
                    return JSONResponse({"status": "ERROR"}, status_code=401)
            body = await request.json()
            self.calls.append(body)
            activation_id = body["requestObject"]["activationId"]
            if activation_id not in self.activations:
                error = {"code": "ERR_ACTIVATION_NOT_FOUND", "message": "Activation not found"}
                return JSONResponse({"status": "ERROR", "responseObject": error}, status_code=400)
            state, user = self.activations[activation_id]
            return JSONResponse(
                {
                    "status": "OK",
                    "responseObject": {
                        "activationId": activation_id,
                        "activationStatus": state,
                        "userId": user,
                        "applicationId": "1",
                    },
                }
            )

        return Starlette(routes=[Route("/rest/v3/activation/status", status, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running(fake: FakePowerAuth) -> Iterator[FakePowerAuth]:
    """Serve ``fake`` on an ephemeral loopback port in a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
