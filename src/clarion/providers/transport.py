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


# How a provider's outcome reason starts when no answer came (the rest names the origin and
# the error: for the ledger and the log, not for API callers).
TRANSPORT_PREFIX = "transport: "


class TransportError(Exception):
    """The request got no HTTP answer (connection reset, GOAWAY before an answer, timeout)."""

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent  # True if the request may have reached the server


class Transport(Protocol):
    """A pooled, keep-alive HTTP client for one origin (HTTP/2 where the origin speaks it)."""

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float | None = None,
    ) -> HttpResponse: ...

    async def close(self) -> None: ...


def configure_transport(threads: int) -> None:
    """Size the runtime every transport of this process runs on (see
    ``transport_reqwest.configure_runtime``); call before the first transport is built."""
    from clarion.providers.transport_reqwest import configure_runtime

    configure_runtime(threads)


def create_transport(
    *,
    ca_file: str | None = None,
    client_cert_pem: bytes | None = None,
    timeout: float = 10.0,
    max_connections: int = 1000,
    http2_only: bool = False,
) -> Transport:
    """The transport every provider should use: HTTP/2 over TLS (ALPN), HTTP/1.1 on plain http.

    ``ca_file`` adds a trusted root (an emulator's CA); ``client_cert_pem`` (certificate and key)
    enables TLS client authentication; ``max_connections`` caps requests in flight.
    ``http2_only`` (for origins known to speak HTTP/2, such as APNs) lets the pool share one
    connection even while it is being (re)built, instead of dialling one per waiting request;
    with it, plain ``http://`` URLs speak h2c.
    """
    # Imported here because that module imports this one.
    from clarion.providers.transport_reqwest import ReqwestTransport

    return ReqwestTransport(
        ca_file=ca_file,
        client_cert_pem=client_cert_pem,
        timeout=timeout,
        max_connections=max_connections,
        http2_prior_knowledge=http2_only,
    )
