"""The one internal HTTP interface every provider sends through.

The HTTP client decides the throughput ceiling (see ``docs/architecture.md``), so it is chosen
by measurement and hidden behind this protocol; providers never import a client library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class TransportError(Exception):
    """The request got no HTTP answer (connection reset, GOAWAY before an answer, timeout)."""

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent  # True if the request may have reached the server


class Transport(Protocol):
    """A pooled, keep-alive HTTP client for one origin (HTTP/2 where the origin speaks it)."""

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, timeout: float | None = None
    ) -> HttpResponse: ...

    async def close(self) -> None: ...
