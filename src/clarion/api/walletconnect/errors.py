"""The WalletConnect answers and error mapping, in one place for the whole dialect.

Success is ``{"status": "OK"}``; failure is ``{"status": "FAILED", "errors": [{name,
description}], "fields": [{field, description, location}]}``, ``fields`` when a user-supplied
field caused it. Every route of the dialect uses ``WalletConnectRoute``, which turns validation
failures and ``ClarionError``s into that body, and anything unexpected into a 500 with a
generic description (the detail only in the log).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from clarion.api import JsonRequest, body_unreadable, json_content_type
from clarion.core.tenants import GENERIC_FIELD_ERROR, InvalidField
from clarion.errors import ClarionError, Conflict, InvalidRequest, NotFound, Unauthorized
from clarion.store.availability import (
    DATABASE_UNAVAILABLE,
    RETRY_AFTER_OUTAGE,
    database_unavailable,
    first_line,
)

log = logging.getLogger("clarion.api.walletconnect")

LOCATIONS = ("body", "query", "header", "path")
# Names of the union members in validation locations: not fields the client sent.
UNION_TAGS = {"seed", "raw"}
_MAX_FIELDS = 10


class RateLimited(ClarionError):
    """Too many requests from one client address."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("Too many requests: rate limit exceeded.")
        self.retry_after = retry_after


class ErrorItem(BaseModel):
    name: str
    description: str


class FieldItem(BaseModel):
    field: str
    description: str
    location: Literal["body", "query", "header", "path"] = "body"


class OkBody(BaseModel):
    status: Literal["OK"] = "OK"


class FailedBody(BaseModel):
    model_config = ConfigDict(title="WalletConnectFailure")
    status: Literal["FAILED"] = "FAILED"
    errors: list[ErrorItem] | None = None
    fields: list[FieldItem] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": FailedBody, "description": "Invalid request"},
    401: {"model": FailedBody, "description": "Signature or JWT missing or wrong"},
    404: {"model": FailedBody, "description": "Unknown tenant"},
    429: {"model": FailedBody, "description": "Rate limit exceeded"},
}


def ok(status: int = 200) -> JSONResponse:
    return JSONResponse({"status": "OK"}, status_code=status)


def failed(
    status: int,
    *,
    errors: Sequence[tuple[str, str]] = (),
    fields: Sequence[tuple[str, str, str]] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The FAILED body: ``errors`` as (name, description), ``fields`` as (field, description,
    location); an empty list is left out."""
    body: dict[str, Any] = {"status": "FAILED"}
    if errors:
        body["errors"] = [{"name": n, "description": d} for n, d in errors]
    if fields:
        body["fields"] = [{"field": f, "description": d, "location": loc} for f, d, loc in fields]
    return JSONResponse(body, status_code=status, headers=headers)


_TYPES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "bool_type": "a boolean",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
}


def _field_error(err: dict[str, Any]) -> tuple[str, str, str]:
    loc = list(err.get("loc", ()))
    location = str(loc.pop(0)) if loc and loc[0] in LOCATIONS else "body"
    parts = [str(p) for p in loc if p not in UNION_TAGS]
    kind = str(err.get("type", ""))
    if kind in ("json_invalid", "json_type") or (not parts and location == "body"):
        if kind == "missing":
            return "body", "The request body is required.", "body"
        if kind in ("json_invalid", "json_type"):
            return "body", "The request body is not valid JSON.", "body"
        return "body", "The request body must be a JSON object.", "body"
    if location == "path" and parts == ["id"]:
        parts = ["client_id"]  # the route's {id} is a client id; "id" names a message's id
    name = ".".join(parts)[:100]
    ctx = err.get("ctx") or {}
    if kind == "missing" or (err.get("input") is None and kind in _TYPES):
        description = f"{name} is required."
    elif kind == "string_too_short":
        description = f"{name} must not be empty."
    elif kind == "string_too_long":
        description = f"{name} must be at most {ctx.get('max_length')} characters."
    elif kind == "string_pattern_mismatch":
        description = f"{name} must not contain NUL characters."
    elif kind == "string_unicode":
        description = f"{name} must be valid Unicode text (no unpaired surrogates)."
    elif kind in ("greater_than_equal", "less_than_equal"):
        description = f"{name} must be an unsigned 32-bit integer."
    elif kind in _TYPES:
        description = f"{name} must be {_TYPES[kind]}."
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        description = f"{name} has the wrong type."
    else:
        description = f"{name} is invalid."
    return name, description, location


def validation_failure(errors: Sequence[Any]) -> JSONResponse:
    fields = list(dict.fromkeys(_field_error(e) for e in errors[:_MAX_FIELDS]))
    if not fields:
        fields = [("body", "The request is invalid.", "body")]
    return failed(400, fields=fields)


def map_error(exc: Exception) -> JSONResponse:
    """The single mapping from clarion's errors to the dialect's FAILED bodies."""
    if isinstance(exc, RequestValidationError):
        return validation_failure(exc.errors())
    if isinstance(exc, InvalidField):
        # A named error (the spec's tenant, provider_not_available) goes in errors too; a
        # plain field error only in fields, as pydantic's validation errors are.
        named = [(exc.name, exc.message)] if exc.name != GENERIC_FIELD_ERROR else []
        return failed(400, errors=named, fields=[(exc.field, exc.message, exc.location)])
    if isinstance(exc, InvalidRequest):
        return failed(400, errors=[("request", exc.message)])
    if isinstance(exc, NotFound):
        return failed(404, errors=[("tenant", exc.message)])
    if isinstance(exc, Unauthorized):
        return failed(401, errors=[("authentication", exc.message)])
    if isinstance(exc, RateLimited):
        wait = str(max(1, math.ceil(exc.retry_after)))
        return failed(429, errors=[("rate_limit", exc.message)], headers={"Retry-After": wait})
    if isinstance(exc, Conflict):
        return failed(409, errors=[("conflict", exc.message)])
    if isinstance(exc, ClarionError):
        log.error("request failed: %s", exc.message)
        return failed(500, errors=[("internal", "The request could not be processed.")])
    if database_unavailable(exc):
        log.warning("request not served, the database is unavailable: %s", first_line(exc))
        return failed(
            503,
            errors=[("database_unavailable", DATABASE_UNAVAILABLE)],
            headers={"Retry-After": str(RETRY_AFTER_OUTAGE)},
        )
    log.exception("unexpected error while handling a WalletConnect request")
    return failed(500, errors=[("internal", "Internal server error. The detail is in the log.")])


class WalletConnectRoute(APIRoute):
    """A route whose every failure is answered in the WalletConnect FAILED format."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # guards imports this module: imported here, once the route is built.
        from clarion.api.walletconnect.guards import relay_signature

        signed = any(d.call is relay_signature for d in self.dependant.dependencies)

        async def guarded(request: Request) -> Response:
            request = JsonRequest(request.scope, request.receive)
            try:
                if signed:
                    # Before FastAPI parses the body: an unsigned push is a 401 whatever its
                    # body holds (the dependency then sees it was checked).
                    await relay_signature(request, request.app.state.services)
                return await handler(request)
            except HTTPException as exc:
                if body_unreadable(exc):
                    form = request.headers.get("content-type", "").startswith("multipart/")
                    what = "a valid multipart form" if form else "valid JSON"
                    return failed(
                        400, fields=[("body", f"The request body is not {what}.", "body")]
                    )
                return http_failure(exc.status_code, str(exc.detail))
            except RequestValidationError as exc:
                if _body_not_json(exc, request):
                    return failed(400, fields=[("body", NOT_JSON_CONTENT, "body")])
                return map_error(exc)
            except Exception as exc:  # every other failure gets the dialect's error body
                return map_error(exc)

        return guarded


NOT_JSON_CONTENT = "The request body must be JSON, sent with Content-Type: application/json."


def _body_not_json(exc: RequestValidationError, request: Request) -> bool:
    """The body was not read as JSON for want of a JSON content type (curl -d sends a form
    type): say so, rather than that it is not a JSON object."""
    if json_content_type(request.headers.get("content-type")):
        return False
    return any(list(err.get("loc", ()))[:1] == ["body"] for err in exc.errors())


def http_failure(status: int, detail: str) -> JSONResponse:
    """404 / 405 and other plain HTTP errors on the dialect's paths."""
    name = {404: "not_found", 405: "method_not_allowed"}.get(status, "http")
    return failed(status, errors=[(name, detail)])


_TOP = ("health", "clients", "tenants", "rate_limit_test")


def owns_path(path: str) -> bool:
    """True for the dialect's paths: /health, /clients..., /tenants..., /{tenant}/clients..."""
    parts = path.strip("/").split("/")
    return parts[0] in _TOP or (len(parts) > 1 and parts[1] == "clients")
