"""create_app(settings): both dialects, /metrics and /docs on one FastAPI application."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from clarion import __version__
from clarion.api import powerauth, walletconnect
from clarion.api.hot import HotRoutes
from clarion.api.limits import BodyLimit
from clarion.api.powerauth.hot import ROUTES as PA_HOT_ROUTES
from clarion.api.walletconnect.hot import ROUTES as WC_HOT_ROUTES
from clarion.config import Settings, load_settings
from clarion.core.campaign_progress import export_progress, forget_database_gauges
from clarion.core.services import Services, open_services
from clarion.heap import settle
from clarion.logs import configure_logging
from clarion.metrics import MetricsMiddleware, metrics_endpoint
from clarion.store.availability import database_unavailable, first_line

log = logging.getLogger("clarion")

HOT_ROUTES = (*WC_HOT_ROUTES, *PA_HOT_ROUTES)


class ClarionApp(FastAPI):
    """FastAPI with the hot routes (``clarion.api.hot``) in front of its middleware stack."""

    hot: HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.hot
        if hot is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await hot(scope, receive, send)

    async def full_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request the hot routes do not answer: FastAPI and its middleware."""
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, *, services: Services | None = None, server_process: bool = False
) -> FastAPI:
    """The ASGI application. It opens its services on start-up unless they are given.

    ``server_process``: the app is the long-lived application of a server process, which
    settles its heap (``clarion.heap.settle``) once started. Tests leave it off: they start
    many apps in one process, and a frozen heap is never collected."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        svc: Services = services or await open_services(settings)
        app.state.services = svc
        worker = svc.worker() if owned and settings.run_worker else None
        worker_task = (
            asyncio.create_task(worker.run(grace=settings.worker_grace)) if worker else None
        )
        log.info(
            "clarion %s ready",
            __version__,
            extra={"database": svc.db.dialect, "worker": worker is not None},
        )
        if server_process:
            settle()
        try:
            yield
        finally:
            if worker is not None and worker_task is not None:
                worker.stop()
                await worker_task
            if owned:
                await svc.close()

    app = ClarionApp(
        title="clarion",
        version=__version__,
        summary="A self-hosted push server: the PowerAuth Push Server and WalletConnect push APIs.",
        lifespan=lifespan,
        # A trailing slash is an unknown path, answered in the dialect's error format: a 307
        # with an empty body is no answer for an API client (and came before the admin check).
        redirect_slashes=False,
    )
    if services is not None:
        app.state.services = services
    # WalletConnect first: its relay pushes are the hottest route, and no path of one dialect
    # matches a route of the other.
    app.include_router(walletconnect.router())
    app.include_router(powerauth.router())
    app.add_route("/metrics", _metrics, include_in_schema=False)
    if settings.hot_routes:  # in front of the middleware stack, counting its own answers
        app.hot = HotRoutes(app.full_stack, HOT_ROUTES, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


def app_from_environment() -> FastAPI:
    """The application of one of several `clarion serve --processes N` processes."""
    config = os.environ.get("CLARION_CONFIG_FILE")
    settings = load_settings(Path(config) if config else None)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    return create_app(settings, server_process=True)


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"status": "ERROR", "responseObject": {"code": code, "message": message}}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Unknown paths and wrong methods, outside any dialect route: the path picks the dialect."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal server error."
    if walletconnect.owns_path(request.url.path):
        response = walletconnect.http_failure(status, str(detail))
    else:
        response = JSONResponse(_error_body("ERROR_GENERIC", str(detail)), status_code=status)
    if status == 405:
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (RFC 9110 asks a 405 to say them), from the
    OpenAPI document: FastAPI makes a route per method, and the one that refused knows only
    its own."""
    app = request.app
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "allowed", None)
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            methods = sorted(m.upper() for m in operations if m.upper() in _HTTP_METHODS)
            table.append((re.compile(pattern), methods))
        app.state.allowed = table
    path = request.url.path
    return sorted({m for pattern, methods in table if pattern.fullmatch(path) for m in methods})


async def _validation_error(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse(_error_body("ERROR_REQUEST", "Invalid request."), status_code=400)


async def _metrics(request: Request) -> Response:
    """The Prometheus text, with campaign progress read from the database first."""
    try:
        await export_progress(request.app.state.services.db)
    except Exception as exc:  # the metrics of this process are still worth answering with
        forget_database_gauges()  # unknown now: not the last values, nor a "nothing waits"
        if database_unavailable(exc):
            log.warning("/metrics without the database's gauges: %s", first_line(exc))
        else:
            log.exception("reading campaign progress for /metrics failed")
    return await metrics_endpoint(request)
