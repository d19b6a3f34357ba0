"""The default transport: pyreqwest (Rust reqwest/hyper), HTTP/2 over TLS with ALPN, pooled.

Chosen by measurement: on a 2-core box it sent about 18,000 APNs-shaped requests/s from one
process to a local HTTP/2 sink, against about 4,600/s for a hand-written h2 client and 3,150/s
for aioapns; ``bench/delivery.py`` repeats the comparison with aioapns (see ``bench/README.md``).

Every client runs on one process-wide multi-threaded Tokio runtime of ``runtime_threads()``
threads (``configure_runtime``; one by default). Measured with ``bench/delivery.py`` against
pyreqwest's default (a single-threaded runtime): 17 % more pushes/s at 12 % less CPU per push,
and the sink needed a third of the CPU per request, as the multi-threaded runtime's I/O driver
writes several streams' frames in one TLS record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta

from pyreqwest import exceptions as rq
from pyreqwest import runtime
from pyreqwest.client import Client, ClientBuilder

from clarion.providers.transport import HttpResponse, TransportError

# Errors raised before any byte of the request can have reached the server (ConnectError also
# covers streams refused by a GOAWAY). Not ConnectTimeoutError: reqwest reports a request that
# timed out on an established connection as one, so it may have been sent.
_NOT_SENT = (rq.ConnectError, rq.PoolTimeoutError, rq.BuilderError)

DEFAULT_RUNTIME_THREADS = 1
_runtime_threads: int | None = None  # set once, before the first client is built


MAX_RUNTIME_THREADS = 1


def configure_runtime(threads: int) -> None:
    """Size the runtime every client of this process runs on: ``threads`` Tokio worker threads
    (0: pyreqwest's single-threaded runtime). Fixed by the first client built; a different
    size asked for later raises ValueError.

    At most one thread: with two or more, CPython 3.11 aborted at exit ("PyGILState_Release:
    thread state must be current when releasing", while finalizing) in 2 of 40 runs of a
    process that had sent one request, and with three in 14 of 20; with one, in none of 300.
    One thread already runs TLS and HTTP/2 faster than the Python side feeds it."""
    global _runtime_threads
    if not 0 <= threads <= MAX_RUNTIME_THREADS:
        raise ValueError(f"runtime threads must be 0 or {MAX_RUNTIME_THREADS}")
    if _runtime_threads is not None:
        if threads != _runtime_threads:
            raise ValueError(
                f"the HTTP runtime already runs with {_runtime_threads} threads"
                f" (asked for {threads}): it is set once per process"
            )
        return
    if threads:
        runtime.runtime_worker_threads(threads)
    _runtime_threads = threads


def runtime_threads() -> int:
    """The runtime's threads (0: single-threaded), fixing the default if none was set."""
    if _runtime_threads is None:
        configure_runtime(DEFAULT_RUNTIME_THREADS)
    assert _runtime_threads is not None
    return _runtime_threads


class ReqwestTransport:
    """A pooled, keep-alive HTTP client; HTTP/2 wherever the origin offers it through ALPN."""

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        client_cert_pem: bytes | None = None,
        timeout: float = 10.0,
        max_connections: int | None = 1000,
        http2_prior_knowledge: bool = False,
    ) -> None:
        builder = (
            ClientBuilder()
            .http2(True)
            .timeout(timedelta(seconds=timeout))
            .connect_timeout(timedelta(seconds=min(timeout, 10.0)))
            .max_connections(max_connections)
            # Push services want long-lived connections: never let the pool drop one for idling,
            # ping it instead so a dead peer is noticed before the next push.
            .pool_idle_timeout(None)
            .http2_keep_alive_interval(timedelta(seconds=60))
            .http2_keep_alive_timeout(timedelta(seconds=20))
            .http2_keep_alive_while_idle(True)
            .follow_redirects(False)
            .gzip(False)
            .brotli(False)
            .zstd(False)
            .deflate(False)
            .user_agent("clarion")
            .runtime_multithreaded(runtime_threads() > 0)
        )
        if http2_prior_knowledge:
            builder = builder.http2_prior_knowledge()
        if ca_file is not None:
            with open(ca_file, "rb") as fh:
                builder = builder.add_root_certificate_pem(fh.read())
        if client_cert_pem is not None:
            builder = builder.identity_pem(client_cert_pem)
        self._client: Client = builder.build()
        self._default_timeout = timeout
        self._timeouts: dict[float, timedelta] = {}
        self._gates: dict[str, asyncio.Event] = {}
        self._open: set[str] = set()

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float | None = None,
    ) -> HttpResponse:
        """POST ``body``; an answer of any status is a response, no answer is a TransportError."""
        origin = _origin(url)
        while origin not in self._open:
            gate = self._gates.get(origin)
            if gate is None:
                return await self._post_alone(origin, url, headers, body, timeout)
            await gate.wait()
        try:
            return await self._post(url, headers, body, timeout)
        except TransportError:
            # The connection may be gone. Its successor gets one request first, as the first did.
            self._open.discard(origin)
            raise

    async def _post_alone(
        self,
        origin: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        seconds: float | None,
    ) -> HttpResponse:
        # Until a connection is up, the pool cannot know the origin speaks HTTP/2 (ALPN), and the
        # server's SETTINGS (APNs: one stream until a valid token) have not arrived: a burst would
        # dial a connection per request or overrun the stream limit. So one request goes first
        # and the others wait for its outcome (if it failed, they fail fast together rather
        # than one connect timeout after another).
        self._gates[origin] = gate = asyncio.Event()
        try:
            return await self._post(url, headers, body, seconds)
        finally:
            self._open.add(origin)
            del self._gates[origin]
            gate.set()

    async def _post(
        self, url: str, headers: Mapping[str, str], body: bytes, seconds: float | None
    ) -> HttpResponse:
        request = self._client.post(url).headers(headers).body_bytes(body)
        if seconds is not None and seconds != self._default_timeout:
            request = request.timeout(self._timedelta(seconds))
        try:
            response = await request.build().send()
            data = await response.bytes()
        except _NOT_SENT as exc:
            raise TransportError(f"no connection to {_origin(url)}: {_describe(exc)}") from exc
        except rq.RequestError as exc:
            raise TransportError(
                f"no answer from {_origin(url)}: {_describe(exc)}", sent=True
            ) from exc
        # The header map is case-insensitive and read-only for us: no copy per request.
        return HttpResponse(response.status, response.headers, bytes(data))

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._client.close()

    def _timedelta(self, seconds: float) -> timedelta:
        found = self._timeouts.get(seconds)
        if found is None:
            found = self._timeouts[seconds] = timedelta(seconds=seconds)
        return found


def _origin(url: str) -> str:
    # Error messages name only the origin: a path may hold a device token.
    end = url.find("/", url.find("//") + 2)
    return url if end < 0 else url[:end]


def _describe(exc: rq.DetailedPyreqwestError) -> str:
    causes = exc.details.get("causes") or []
    last = causes[-1]["message"] if causes else ""
    if not last or "://" in last:  # never a URL: its path may hold a device token
        return type(exc).__name__
    return f"{type(exc).__name__} ({last})"
