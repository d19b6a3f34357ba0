"""HTTP metrics and the /metrics endpoint (Prometheus text format, the default registry)."""

from __future__ import annotations

import functools
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.core.campaign_progress import DATABASE_REGISTRY

HTTP_REQUESTS = Counter(
    "clarion_http_requests_total",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "clarion_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)


# Methods are sent by clients: anything else is one label, so nobody can grow the series.
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


@functools.cache
def _children(method: str, template: str, status: int) -> tuple[Counter, Histogram]:
    """The metric children of one label set, looked up once (``labels()`` takes a lock).

    Bounded: templates are the app's routes (or "unmatched"), never raw paths.
    """
    return HTTP_REQUESTS.labels(method, template, str(status)), HTTP_LATENCY.labels(template)


# Paths served outside FastAPI's API routes (no route in the scope), counted under their own
# names instead of "unmatched"; any other path stays "unmatched", so the series stay bounded.
_OWN_PATHS = frozenset({"/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def _unrouted(scope: Scope) -> str:
    path = scope.get("path", "")
    return path if path in _OWN_PATHS else "unmatched"


class MetricsMiddleware:
    """Counts every answered request under its route template (never the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or _unrouted(scope)
            count_request(scope["method"], template, status, started)


def count_request(method: str, template: str, status: int, started: float) -> None:
    """Count one answered request under its route template; ``started``: its
    ``time.perf_counter()`` when it came in."""
    count, latency = _children(method if method in _METHODS else "OTHER", template, status)
    count.inc()
    latency.observe(time.perf_counter() - started)


async def metrics_endpoint(_request: Request) -> Response:
    body = generate_latest() + generate_latest(DATABASE_REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
